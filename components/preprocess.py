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
    from torchkfp import stage_cache
    from torchkfp.config import DataConfig, PreprocessConfig

    run = stage_cache.preprocess(
        DataConfig.from_dict(data_config),
        PreprocessConfig.from_dict(preprocess_config),
        dataset.path,
        transform.path,
        features.path,
        data_fingerprint,
        stage_cache.input_key(dataset.metadata),
    )
    r = run.result
    features.metadata.update({"rows": r.rows, "label_stats": r.label_stats, **run.cache.metadata()})
    transform.metadata.update(run.cache.metadata())
    return (time.perf_counter() - t0,)
