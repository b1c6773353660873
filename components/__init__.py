"""KFP v2 components: thin wrappers, one per stage, each mapping artifact paths and the config
onto one torchkfp library call."""

from torchkfp.components._base import BASE_IMAGE
from torchkfp.components.deploy import deploy_local as DeployLocalOp
from torchkfp.components.deploy import deploy_vertex as DeployVertexOp
from torchkfp.components.evaluate import evaluate as EvaluateOp
from torchkfp.components.ingest import ingest as IngestOp
from torchkfp.components.preprocess import preprocess as PreprocessOp
from torchkfp.components.train import train as TrainOp

__all__ = [
    "BASE_IMAGE",
    "DeployLocalOp",
    "DeployVertexOp",
    "EvaluateOp",
    "IngestOp",
    "PreprocessOp",
    "TrainOp",
]
