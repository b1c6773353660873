"""Stage 1: run the query, add the split, and write a Dataset artifact of Parquet shards
(format: :mod:`torchkfp.artifacts.dataset`).

The query (``warehouse.query_file``, or ``SELECT *`` of ``warehouse.table``) returns one row
per example: the label, the features and the split's column. Ingest wraps it in BigQuery SQL
that adds the split (``split`` section), the same text on BigQuery and (transpiled) on DuckDB:

- ``temporal``: ``CAST(column AS DATE)`` before ``validation_start`` trains, before
  ``test_start`` validates, the rest tests (timestamps by their UTC date);
- ``hash``: ``MOD(FARM_FINGERPRINT(<key>), 10000)`` buckets: the lowest ``test_fraction`` of
  them test, the next ``validation_fraction`` validate, the rest train; the key is
  ``CAST(column AS STRING)``, or the whole row (each column ``CAST AS STRING``, NULL as '',
  joined with '|');
- ``column``: the query's own column holding 'train', 'validation' or 'test'.

The rows are then sorted by all their columns, so the artifact does not depend on the order
the engine returns them in. Settings: the ``warehouse``, ``data`` and ``split`` sections.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.config import ConfigError, DataConfig, SplitConfig, WarehouseConfig
from torchkfp.errors import DataValidationError
from torchkfp.warehouse import Warehouse, load_sql, open_warehouse, strip_sql, table_sql

SPLIT_COLUMN = "split"
"""The column ingest adds (temporal, hash strategies); the query must not return one."""
BUCKET_COLUMN = "torchkfp_bucket"
"""hash: the FARM_FINGERPRINT bucket, computed once in the wrapper and dropped there."""
BUCKETS = 10_000
"""hash: the fractions are applied to this many buckets (resolution 0.0001)."""
PARAM_PREFIX = "torchkfp_"
"""Query parameters ingest adds for the split start with this; the user's must not."""
ROW_SEPARATOR = "|"
"""hash on the whole row: the separator between the columns' string forms."""
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class IngestResult:
    path: str
    rows: dict[str, int]
    fingerprint: str
    seconds: float


def query_params(wc: WarehouseConfig) -> dict[str, Any]:
    """``warehouse.query_parameters`` as query parameter values: a ``YYYY-MM-DD`` string is a
    DATE, everything else goes as it is (STRING, INT64, FLOAT64, BOOL)."""
    params: dict[str, Any] = {}
    for name, value in wc.query_parameters.items():
        if not _COLUMN.fullmatch(name):
            raise ConfigError(
                f"warehouse.query_parameters: {name!r} is not a parameter name (letters, "
                "digits, _; not starting with a digit)"
            )
        if name.lower().startswith(PARAM_PREFIX):
            raise ConfigError(
                f"warehouse.query_parameters: {name!r} starts with {PARAM_PREFIX!r}, which is "
                "reserved for the parameters ingest adds for the split"
            )
        if isinstance(value, str) and _DATE.fullmatch(value):
            try:
                value = dt.date.fromisoformat(value)
            except ValueError:
                raise ConfigError(
                    f"warehouse.query_parameters.{name}={value!r} is not a valid date"
                ) from None
        params[name] = value
    return params


def source_query(wc: WarehouseConfig) -> str:
    """The user's query: ``warehouse.query_file`` (dataset filled in) or a whole table."""
    if wc.table:
        return table_sql(wc.table)
    source = wc.source_dataset
    if wc.backend == "duckdb":
        source = source.split(".")[-1]
    assert wc.query_file is not None
    return load_sql(wc.query_file, source)


def _quote(name: str) -> str:
    if "`" in name or "\\" in name or "\n" in name:
        raise DataValidationError(
            f"column {name!r} cannot be quoted as a BigQuery identifier; rename it in the query"
        )
    return f"`{name}`"


def split_column_name(split: SplitConfig) -> str:
    """The result column holding each row's split."""
    return str(split.column) if split.strategy == "column" else SPLIT_COLUMN


def _row_string(schema: pa.Schema) -> str:
    parts = [f"COALESCE(CAST({_quote(f.name)} AS STRING), '')" for f in schema]
    if len(parts) == 1:
        return parts[0]
    return "CONCAT(" + f", '{ROW_SEPARATOR}', ".join(parts) + ")"


def split_query(sql: str, split: SplitConfig, schema: pa.Schema) -> tuple[str, dict[str, Any]]:
    """The user's query wrapped to add the ``split`` column (BigQuery dialect), and the
    parameters the wrapper adds."""
    source = f"(\n{strip_sql(sql)}\n) AS torchkfp_source"
    if split.strategy == "column":
        return f"SELECT * FROM {source}", {}
    if split.strategy == "temporal":
        col = f"CAST({_quote(str(split.column))} AS DATE)"
        expr = (
            f"CASE WHEN {col} IS NULL THEN NULL "
            f"WHEN {col} < @{PARAM_PREFIX}validation_start THEN 'train' "
            f"WHEN {col} < @{PARAM_PREFIX}test_start THEN 'validation' "
            "ELSE 'test' END"
        )
        params = {
            f"{PARAM_PREFIX}validation_start": dt.date.fromisoformat(str(split.validation_start)),
            f"{PARAM_PREFIX}test_start": dt.date.fromisoformat(str(split.test_start)),
        }
        return f"SELECT *, {expr} AS {SPLIT_COLUMN} FROM {source}", params
    # hash: MOD(MOD(x, n) + n, n) is in [0, n) for every INT64 (ABS(INT64 min) overflows)
    key = f"CAST({_quote(split.column)} AS STRING)" if split.column else _row_string(schema)
    bucket = f"MOD(MOD(FARM_FINGERPRINT({key}), {BUCKETS}) + {BUCKETS}, {BUCKETS})"
    test_cut = round(split.test_fraction * BUCKETS)
    expr = (
        f"CASE WHEN {BUCKET_COLUMN} IS NULL THEN NULL "
        f"WHEN {BUCKET_COLUMN} < @{PARAM_PREFIX}test_buckets THEN 'test' "
        f"WHEN {BUCKET_COLUMN} < @{PARAM_PREFIX}test_validation_buckets THEN 'validation' "
        "ELSE 'train' END"
    )
    params = {
        f"{PARAM_PREFIX}test_buckets": test_cut,
        f"{PARAM_PREFIX}test_validation_buckets": test_cut
        + round(split.validation_fraction * BUCKETS),
    }
    inner = f"(SELECT *, {bucket} AS {BUCKET_COLUMN} FROM {source}) AS torchkfp_hashed"
    return f"SELECT * EXCEPT ({BUCKET_COLUMN}), {expr} AS {SPLIT_COLUMN} FROM {inner}", params


def split_settings(split: SplitConfig) -> dict[str, Any]:
    """The split settings that decide the assignment (recorded in the dataset's metadata)."""
    out: dict[str, Any] = {"strategy": split.strategy, "column": split.column}
    if split.strategy == "temporal":
        out.update(validation_start=split.validation_start, test_start=split.test_start)
    elif split.strategy == "hash":
        out.update(
            validation_fraction=split.validation_fraction,
            test_fraction=split.test_fraction,
            buckets=BUCKETS,
            key="column" if split.column else "row",
        )
    return out


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


def sort_rows(table: pa.Table) -> pa.Table:
    """The rows sorted by every (non-nested) column, in column order: the same rows give the
    same artifact whatever order the engine returned them in."""
    keys = [
        (f.name, "ascending")
        for f in table.schema
        if not pa.types.is_nested(f.type) and not pa.types.is_null(f.type)
    ]
    if not keys or table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, sort_keys=keys))


def ingest(
    warehouse_cfg: WarehouseConfig,
    data_cfg: DataConfig,
    split_cfg: SplitConfig,
    out_dir: str | os.PathLike,
    warehouse: Warehouse | None = None,
) -> IngestResult:
    """Run the query with the split added, validate it, and write the Dataset artifact."""
    t0 = time.perf_counter()
    wc, data, split = warehouse_cfg, data_cfg, split_cfg
    wh = warehouse or open_warehouse(wc)
    sql = source_query(wc)
    params = query_params(wc)
    schema = wh.result_schema(sql, params)
    validate_schema(schema, data, split)  # before the (billed) query runs
    wrapped, split_params = split_query(sql, split, schema)
    all_params = {**params, **split_params}
    table = sort_rows(wh.query(wrapped, all_params))
    validate_table(table, data, split, wc.query_parameters)
    fp = fingerprint(wrapped, all_params, table)

    part_col = split_column_name(split)
    parts = {
        s: table.filter(pc.equal(table.column(part_col), s)).drop_columns([part_col])
        for s in dataset_artifact.SPLITS
    }
    for s, part in parts.items():
        if part.num_rows == 0:
            raise DataValidationError(empty_split_message(s, table, split))
    out = artifacts.begin(out_dir)
    rows = {
        s: dataset_artifact.write_split(out, s, p, data.rows_per_shard) for s, p in parts.items()
    }
    meta = artifacts.commit(
        out,
        dataset_artifact.KIND,
        {
            "rows": rows,
            "num_rows": sum(rows.values()),
            "schema": {f.name: str(f.type) for f in parts["train"].schema},
            "fingerprint": fp,
            "source": wh.describe(),
            "query_file": wc.query_file,
            "table": wc.table,
            "params": {k: str(v) for k, v in all_params.items()},
            "split": split_settings(split),
            "label": data.label,
        },
    )
    return IngestResult(str(out), rows, meta["fingerprint"], time.perf_counter() - t0)


def validate_schema(schema: pa.Schema, data: DataConfig, split: SplitConfig) -> None:
    """Before the query runs: the label, features and split column exist (with a usable type)
    and the name ingest adds is free."""
    names = schema.names
    needed = [data.label, *data.numeric_features, *data.categorical_features]
    missing = [c for c in needed if c not in names]
    if missing:
        raise DataValidationError(
            f"the query result lacks column(s) {missing} named in the config; "
            f"it has {names}. Fix the query or data.*_features/label"
        )
    if split.strategy != "column":
        taken = [c for c in (SPLIT_COLUMN, BUCKET_COLUMN) if c in names]
        if split.strategy != "hash":
            taken = [c for c in taken if c == SPLIT_COLUMN]
        if taken:
            raise DataValidationError(
                f"the query result has a column named {taken[0]!r}, the name ingest gives the "
                f"split it adds (split.strategy={split.strategy}): rename it in the query, or "
                f"set split.strategy=column and split.column={taken[0]} to use it as the split"
            )
    col = split.column
    if col:
        if not _COLUMN.fullmatch(col):
            raise ConfigError(f"split.column={col!r} is not a column name (letters, digits, _)")
        if col not in names:
            raise DataValidationError(
                f"split.column={col!r} (split.strategy={split.strategy}) is not a column of "
                f"the query result; it has {names}"
            )
        t = schema.field(col).type
        if split.strategy == "temporal" and not (pa.types.is_date(t) or pa.types.is_timestamp(t)):
            raise DataValidationError(
                f"split.column={col!r} is {t}; split.strategy=temporal needs a DATE, DATETIME "
                "or TIMESTAMP column (CAST or PARSE_DATE it in the query)"
            )
        if split.strategy == "hash" and pa.types.is_nested(t):
            raise DataValidationError(
                f"split.column={col!r} is {t}; split.strategy=hash needs a key column of "
                "integers or strings"
            )
        if split.strategy == "column" and col in needed:
            raise DataValidationError(
                f"split.column={col!r} holds the split (split.strategy=column) and is dropped "
                "from the dataset: it cannot also be the label or a feature"
            )
    elif split.strategy == "hash":
        nested = [f.name for f in schema if pa.types.is_nested(f.type)]
        if nested:
            raise DataValidationError(
                f"split.strategy=hash on the whole row casts every column to STRING, which "
                f"column(s) {nested} cannot be; set split.column to a key column"
            )


def _counts(column: pa.ChunkedArray) -> dict[Any, int]:
    vc = pc.value_counts(column)
    pairs = zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)
    return dict(sorted(pairs, key=lambda kv: (-kv[1], str(kv[0]))))


def validate_table(
    table: pa.Table,
    data: DataConfig,
    split: SplitConfig,
    query_parameters: dict[str, Any] | None = None,
) -> None:
    """After the query: rows exist, the columns are there, and every row has a valid split."""
    if table.num_rows == 0:
        raise DataValidationError(
            f"the query returned no rows (warehouse.query_parameters={query_parameters or {}}); "
            "check the parameters and the source tables"
        )
    part_col = split_column_name(split)
    needed = [part_col, data.label, *data.numeric_features, *data.categorical_features]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataValidationError(
            f"the query result lacks column(s) {missing} named in the config; "
            f"it has {table.column_names}. Fix the query or data.*_features/label"
        )
    values = table.column(part_col)
    if split.strategy == "column":
        counts = _counts(values)
        if not set(counts) <= set(dataset_artifact.SPLITS):
            raise DataValidationError(
                f"split.column={part_col!r} must hold only 'train', 'validation' or 'test' "
                f"(split.strategy=column); rows per value: {counts}"
            )
        return
    nulls = values.null_count
    if nulls:
        what = {"temporal": "a date", "hash": "a key"}[split.strategy]
        raise DataValidationError(
            f"split.column={split.column!r} is NULL in {nulls} of {table.num_rows} rows; "
            f"split.strategy={split.strategy} needs {what} in every row: filter those rows "
            "out or fill them in the query"
        )


def empty_split_message(name: str, table: pa.Table, split: SplitConfig) -> str:
    """Why split ``name`` is empty, naming the strategy and the settings that made it so."""
    head = f"the {name} split is empty: split.strategy={split.strategy}"
    col = split.column
    if split.strategy == "temporal":
        lo, hi = pc.min_max(table.column(str(col))).values()
        rule = {
            "train": f"train is {col} < split.validation_start={split.validation_start}",
            "validation": (
                f"validation is split.validation_start={split.validation_start} <= {col} < "
                f"split.test_start={split.test_start}"
            ),
            "test": f"test is {col} >= split.test_start={split.test_start}",
        }[name]
        return (
            f"{head} on split.column={col!r}: {rule}, but the data's {col} runs from "
            f"{lo.as_py()} to {hi.as_py()}; move split.validation_start/test_start inside "
            "that range (or widen warehouse.query_parameters)"
        )
    if split.strategy == "hash":
        fraction = {
            "train": 1 - split.validation_fraction - split.test_fraction,
            "validation": split.validation_fraction,
            "test": split.test_fraction,
        }[name]
        key = f"split.column={col!r} ({len(pc.unique(table.column(col)))} distinct keys)"
        return (
            f"{head} on {key if col else 'the whole row'} with split.validation_fraction="
            f"{split.validation_fraction:g}, split.test_fraction={split.test_fraction:g}: a "
            f"{name} share of {fraction:g} of {table.num_rows} rows got none; raise that "
            "fraction or use more rows (or keys)"
        )
    return (
        f"{head}: split.column={col!r} has no {name!r} rows; rows per value: "
        f"{_counts(table.column(str(col)))}"
    )
