"""KFP v2 components: thin wrappers, one per stage, each mapping artifact paths and its own
config sections (passed as dict parameters) onto one torchkfp library call."""

from torchkfp.components._base import BASE_IMAGE
from torchkfp.components.deploy import deploy
from torchkfp.components.evaluate import evaluate
from torchkfp.components.fingerprint import fingerprint
from torchkfp.components.ingest import ingest
from torchkfp.components.preprocess import preprocess
from torchkfp.components.train import train

__all__ = ["BASE_IMAGE", "deploy", "evaluate", "fingerprint", "ingest", "preprocess", "train"]
