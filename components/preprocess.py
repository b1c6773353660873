from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Output
from torchkfp.components._base import component


@component
def preprocess(
    data_config: dict,
    preprocess_config: dict,
    data_fingerprint: str,
    dataset: Input[Dataset],
    transform: Output[Artifact],
    features: Output[Dataset],
) -> NamedTuple("PreprocessOutputs", seconds=float):
    """Fit the transform on the training split; write tensors for every split.

    data_config: the config's ``data`` section (label and feature columns).
    preprocess_config: the config's ``preprocess`` section (vocabulary limits).
    data_fingerprint: ingest's output, an explicit input so that the KFP cache key of this
    step, and of training, changes whenever the warehouse data changes.
    """
    import time

    t0 = time.perf_counter()
    from torchkfp.config import DataConfig, PreprocessConfig
    from torchkfp.preprocess import preprocess as run_preprocess

    r = run_preprocess(
        DataConfig.from_dict(data_config),
        PreprocessConfig.from_dict(preprocess_config),
        dataset.path,
        transform.path,
        features.path,
        data_fingerprint,
    )
    features.metadata.update({"rows": r.rows, "label_stats": r.label_stats})
    return (time.perf_counter() - t0,)
