from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Output
from torchkfp.components._base import component


@component
def preprocess(
    config_json: str,
    data_fingerprint: str,
    dataset: Input[Dataset],
    transform: Output[Artifact],
    features: Output[Dataset],
) -> NamedTuple("PreprocessOutputs", seconds=float):
    """Fit the transform on the training split; write tensors for every split.

    ``data_fingerprint`` (ingest's output) is an explicit input so that the KFP cache key of
    this step, and of training, changes whenever the warehouse data changes."""
    import time

    t0 = time.perf_counter()
    from torchkfp.config import Config
    from torchkfp.preprocess import preprocess as run

    cfg = Config.from_json(config_json)
    r = run(cfg, dataset.path, transform.path, features.path, data_fingerprint)
    features.metadata.update({"rows": r.rows, "positive_rate": r.positive_rate})
    return (time.perf_counter() - t0,)
