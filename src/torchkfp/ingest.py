"""Stage 1: run the query and write a Dataset artifact of Parquet shards
(format: :mod:`torchkfp.artifacts.dataset`).

Settings: the ``warehouse`` and ``data`` sections only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.config import DataConfig, WarehouseConfig
from torchkfp.errors import DataValidationError
from torchkfp.warehouse import Warehouse, load_sql, open_warehouse


@dataclass
class IngestResult:
    path: str
    rows: dict[str, int]
    fingerprint: str
    seconds: float


def query_params(d: DataConfig) -> dict[str, Any]:
    return {
        "start_date": dt.date.fromisoformat(d.start_date),
        "end_date": dt.date.fromisoformat(d.end_date),
        "validation_start": dt.date.fromisoformat(d.validation_start),
        "test_start": dt.date.fromisoformat(d.test_start),
    }


def fingerprint(sql: str, params: dict[str, Any], table: pa.Table) -> str:
    """sha256 of the query, its parameters and the exact result rows: it changes when the
    source data behind the query changes, so it can key caches downstream."""
    h = hashlib.sha256()
    h.update(sql.encode())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def ingest(
    wc: WarehouseConfig,
    data: DataConfig,
    out_dir: str | os.PathLike,
    warehouse: Warehouse | None = None,
) -> IngestResult:
    t0 = time.perf_counter()
    wh = warehouse or open_warehouse(wc)
    source = wc.source_dataset
    if wc.backend == "duckdb":
        source = source.split(".")[-1]
    sql = load_sql(wc.query_file, source)
    params = query_params(data)
    table = wh.query(sql, params)
    validate_table(table, data)
    fp = fingerprint(sql, params, table)

    out = artifacts.begin(out_dir)
    rows: dict[str, int] = {}
    split_col = table.column("split")
    for split in dataset_artifact.SPLITS:
        part = table.filter(pc.equal(split_col, split)).drop_columns(["split"])
        if part.num_rows == 0:
            raise DataValidationError(
                f"the {split} split is empty: no rows between the configured dates "
                f"(data.start_date={data.start_date}, validation_start="
                f"{data.validation_start}, test_start={data.test_start}, "
                f"end_date={data.end_date}); move the split dates inside the data's range"
            )
        rows[split] = dataset_artifact.write_split(out, split, part, data.rows_per_shard)
    meta = artifacts.commit(
        out,
        dataset_artifact.KIND,
        {
            "rows": rows,
            "num_rows": sum(rows.values()),
            "schema": {f.name: str(f.type) for f in table.schema if f.name != "split"},
            "fingerprint": fp,
            "source": wh.describe(),
            "query_file": wc.query_file,
            "params": {k: str(v) for k, v in params.items()},
            "label": data.label,
        },
    )
    return IngestResult(str(out), rows, meta["fingerprint"], time.perf_counter() - t0)


def validate_table(table: pa.Table, data: DataConfig) -> None:
    if table.num_rows == 0:
        raise DataValidationError(
            f"the query returned no rows for {data.start_date}..{data.end_date}; "
            "check data.start_date/end_date and the source tables"
        )
    needed = ["split", data.label, *data.numeric_features, *data.categorical_features]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataValidationError(
            f"the query result lacks column(s) {missing} named in the config; "
            f"it has {table.column_names}. Fix the query or data.*_features/label"
        )
