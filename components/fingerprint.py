from typing import NamedTuple

from torchkfp.components._base import component


@component
def fingerprint(
    warehouse_config: dict,
    split_config: dict,
) -> NamedTuple("FingerprintOutputs", fingerprint=str, method=str, detail=str, seconds=float):
    """The source data's fingerprint (never cached: it is how the pipeline notices that the
    data changed). Ingest takes it as an input, so ingest's cache key, and every later cached
    step's, follows the data.

    warehouse_config: the config's ``warehouse`` section (backend, query, parameters).
    split_config: the config's ``split`` section (part of what ingest reads).

    method: ``duckdb-content`` (a hash of the query's rows, computed in DuckDB),
    ``bigquery-metadata`` (the source tables' last-modified time, rows and bytes) or
    ``bigquery-content`` (an aggregate query over the rows; detail says why).
    """
    from torchkfp.config import SplitConfig, WarehouseConfig
    from torchkfp.source_fingerprint import source_fingerprint

    r = source_fingerprint(
        WarehouseConfig.from_dict(warehouse_config), SplitConfig.from_dict(split_config)
    )
    return (r.fingerprint, r.method, r.detail, r.seconds)
