"""Stage 1: run the query and write a Dataset artifact of Parquet shards.

Layout: ``<out>/<split>/part-NNNNN.parquet`` for split in train, validation, test, plus
``metadata.json`` (rows per split, schema, fingerprint) and the ``_SUCCESS`` marker.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from torchkfp import artifacts
from torchkfp.config import Config
from torchkfp.warehouse import Warehouse, load_sql, open_warehouse

SPLITS = ("train", "validation", "test")
KIND = "dataset"


class DataValidationError(ValueError):
    """The data cannot be used as it is (empty, missing columns, single-class label, ...)."""


@dataclass
class IngestResult:
    path: str
    rows: dict[str, int]
    fingerprint: str
    seconds: float


def query_params(cfg: Config) -> dict[str, Any]:
    d = cfg.data
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
    cfg: Config, out_dir: str | os.PathLike, warehouse: Warehouse | None = None
) -> IngestResult:
    t0 = time.perf_counter()
    wh = warehouse or open_warehouse(cfg.warehouse)
    dataset = cfg.warehouse.source_dataset
    if cfg.warehouse.backend == "duckdb":
        dataset = dataset.split(".")[-1]
    sql = load_sql(cfg.warehouse.query_file, dataset)
    params = query_params(cfg)
    table = wh.query(sql, params)
    validate_table(table, cfg)
    fp = fingerprint(sql, params, table)

    out = artifacts.begin(out_dir)
    rows: dict[str, int] = {}
    split_col = table.column("split")
    for split in SPLITS:
        part = table.filter(pc.equal(split_col, split)).drop_columns(["split"])
        rows[split] = part.num_rows
        if part.num_rows == 0:
            raise DataValidationError(
                f"the {split} split is empty: no rows between the configured dates "
                f"(data.start_date={cfg.data.start_date}, validation_start="
                f"{cfg.data.validation_start}, test_start={cfg.data.test_start}, "
                f"end_date={cfg.data.end_date}); move the split dates inside the data's range"
            )
        (out / split).mkdir()
        n = cfg.data.rows_per_shard
        for i, start in enumerate(range(0, part.num_rows, n)):
            pq.write_table(part.slice(start, n), out / split / f"part-{i:05d}.parquet")
    meta = artifacts.commit(
        out,
        KIND,
        {
            "rows": rows,
            "num_rows": sum(rows.values()),
            "schema": {f.name: str(f.type) for f in table.schema if f.name != "split"},
            "fingerprint": fp,
            "source": wh.describe(),
            "query_file": cfg.warehouse.query_file,
            "params": {k: str(v) for k, v in params.items()},
            "label": cfg.data.label,
        },
    )
    return IngestResult(str(out), rows, meta["fingerprint"], time.perf_counter() - t0)


def validate_table(table: pa.Table, cfg: Config) -> None:
    if table.num_rows == 0:
        raise DataValidationError(
            f"the query returned no rows for {cfg.data.start_date}..{cfg.data.end_date}; "
            "check data.start_date/end_date and the source tables"
        )
    needed = ["split", cfg.data.label, *cfg.data.numeric_features, *cfg.data.categorical_features]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataValidationError(
            f"the query result lacks column(s) {missing} named in the config; "
            f"it has {table.column_names}. Fix the query or data.*_features/label"
        )


def read_split(path: str | os.PathLike, split: str, columns: list[str] | None = None) -> pa.Table:
    artifacts.require(path, KIND)
    files = sorted((Path(path) / split).glob("part-*.parquet"))
    if not files:
        raise artifacts.ArtifactError(f"dataset {str(path)!r} has no {split} shards")
    return pa.concat_tables(pq.read_table(f, columns=columns) for f in files)
