from typing import NamedTuple

from kfp.dsl import Dataset, Output
from torchkfp.components._base import component


@component
def ingest(
    warehouse_config: dict,
    data_config: dict,
    split_config: dict,
    source_fingerprint: str,
    dataset: Output[Dataset],
) -> NamedTuple("IngestOutputs", fingerprint=str, rows=int, seconds=float):
    """Run the BigQuery-dialect query and write Parquet shards per split.

    warehouse_config: the config's ``warehouse`` section (backend, project, query file).
    data_config: the config's ``data`` section (label, task, features).
    split_config: the config's ``split`` section (strategy and its settings).
    source_fingerprint: the fingerprint step's output: the source data's identity, so this
    step's cache key follows the data (cached on Vertex AI and in ``torchkfp run``).
    """
    import time

    t0 = time.perf_counter()
    from torchkfp import stage_cache
    from torchkfp.config import DataConfig, SplitConfig, WarehouseConfig

    run = stage_cache.ingest(
        WarehouseConfig.from_dict(warehouse_config),
        DataConfig.from_dict(data_config),
        SplitConfig.from_dict(split_config),
        dataset.path,
        source_fingerprint,
    )
    r = run.result
    dataset.metadata.update(
        {"rows": r.rows, "fingerprint": r.fingerprint, "seconds": r.seconds, **run.cache.metadata()}
    )
    return (r.fingerprint, sum(r.rows.values()), time.perf_counter() - t0)
