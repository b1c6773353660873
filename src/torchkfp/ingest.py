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

The result streams in as Arrow record batches (:meth:`torchkfp.warehouse.Warehouse.stream`:
DuckDB's ``fetch_record_batch`` with a memory limit and spilling, BigQuery's Storage Read API
in parallel streams), and each batch is checked (the split's values), counted per split,
fingerprinted and handed to the shard writers (threads writing Parquet while the next batches
are read). Memory stays at a few batches and a few shards, whatever the number of rows.

Order: the rows are stored in the order the engine returns them (DuckDB: the query's own
``ORDER BY``, as the default query has; BigQuery: several streams interleaved, so no fixed
order). The fingerprint does not depend on that order (:mod:`torchkfp.content_hash`: a sum of
64-bit row hashes, with the column names and types, the wrapped query and its parameters): the
same rows give the same fingerprint, one changed value a different one.

Settings: the ``warehouse``, ``data`` and ``split`` sections.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.config import ConfigError, DataConfig, SplitConfig, WarehouseConfig
from torchkfp.content_hash import ContentHash
from torchkfp.errors import DataValidationError
from torchkfp.warehouse import (
    DEFAULT_BATCH_ROWS,
    BatchStream,
    Warehouse,
    load_sql,
    open_warehouse,
    strip_sql,
    table_sql,
)

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
DISTINCT_KEYS_LIMIT = 100_000
"""hash on a key: the distinct keys an empty split's message counts, at most (memory)."""
PREFETCH_BATCHES = 2
"""Batches read ahead of the one being processed."""
WRITER_THREADS = 2
"""Threads writing Parquet shards while the rows are read."""
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


def fingerprint_context(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """What the fingerprint covers besides the rows: the query and its parameters."""
    return {"sql": sql, "params": json.loads(json.dumps(params, sort_keys=True, default=str))}


def fingerprint(sql: str, params: dict[str, Any], table: pa.Table) -> str:
    """The content fingerprint of the query, its parameters and its result rows: the same
    rows in any order give the same one, a changed row another, so it can key caches
    downstream. Ingest computes it batch by batch while streaming; this is the same at once."""
    h = ContentHash(table.schema, fingerprint_context(sql, params))
    for batch in table.to_batches():
        h.update(batch)
    return h.hexdigest()


def split_parts(
    batch: pa.RecordBatch, parts: dict[str, np.ndarray | None]
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """``batch``'s rows of each split (from :meth:`SplitTally.add`): one gather of the rows
    grouped by split, then zero-copy slices (a batch of one split is passed as it is)."""
    if len(parts) == 1:
        [(name, idx)] = parts.items()
        yield name, batch if idx is None else batch.take(idx)
        return
    order = [idx for idx in parts.values() if idx is not None]
    grouped = batch.take(pa.array(np.concatenate(order)))
    start = 0
    for name, idx in parts.items():
        n = batch.num_rows if idx is None else len(idx)
        yield name, grouped.slice(start, n)
        start += n


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class _Prefetch:
    """Reads ``batches`` in a thread of its own, up to ``depth`` batches ahead, so the engine
    produces the next batches while this one is checked, hashed and split (the heavy parts
    of both release the GIL). A context manager: leaving it stops the thread."""

    def __init__(self, batches: Iterable[pa.RecordBatch], depth: int):
        self._source = batches
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for batch in self._source:
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as e:  # raised in the consuming thread
            self._put(_Failed(e))

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while True:
            item = self._queue.get()
            if item is _END:
                self._queue.put(_END)  # a second loop (drain) ends at once too
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def __enter__(self) -> _Prefetch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _open_stream(wh: Any, sql: str, params: dict[str, Any], batch_rows: int) -> BatchStream:
    """``wh.stream``; a warehouse with only ``query`` (a custom one) gets its table cut in
    batches (all in memory, as before streaming)."""
    stream = getattr(wh, "stream", None)
    if stream is not None:
        return stream(sql, params, batch_rows=batch_rows)
    table = wh.query(sql, params)
    return BatchStream(table.schema, iter(table.to_batches(batch_rows)))


def ingest(
    warehouse_cfg: WarehouseConfig,
    data_cfg: DataConfig,
    split_cfg: SplitConfig,
    out_dir: str | os.PathLike,
    warehouse: Warehouse | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> IngestResult:
    """Run the query with the split added, and stream its rows into the Dataset artifact:
    checked, counted and fingerprinted batch by batch, written as Parquet shards by writer
    threads while the next batches are read. On any failure the output folder is removed."""
    t0 = time.perf_counter()
    wc, data, split = warehouse_cfg, data_cfg, split_cfg
    wh = warehouse or open_warehouse(wc)
    sql = source_query(wc)
    params = query_params(wc)
    schema = wh.result_schema(sql, params)
    validate_schema(schema, data, split)  # before the (billed) query runs
    wrapped, split_params = split_query(sql, split, schema)
    all_params = {**params, **split_params}
    part_col = split_column_name(split)
    out = artifacts.begin(out_dir)  # before the query runs: a refused folder costs nothing
    writer = None
    try:
        with _open_stream(wh, wrapped, all_params, batch_rows) as rows_in:
            tally = SplitTally(data, split, rows_in.schema, wc.query_parameters)
            content = ContentHash(rows_in.schema, fingerprint_context(wrapped, all_params))
            keep = [i for i, name in enumerate(rows_in.schema.names) if name != part_col]
            shard_schema = pa.schema([rows_in.schema.field(i) for i in keep])
            writer = dataset_artifact.ShardWriter(
                out, shard_schema, data.rows_per_shard, threads=WRITER_THREADS
            )
            t_query = time.perf_counter()
            t_first = None
            with _Prefetch(rows_in, PREFETCH_BATCHES) as batches:
                for batch in batches:
                    t_first = t_first or time.perf_counter()
                    try:
                        parts = tally.add(batch)
                    except DataValidationError:
                        writer.abort()
                        tally.drain(batches)  # the counts in the message cover every row
                        raise tally.error() from None
                    content.update(batch)
                    for name, part in split_parts(batch.select(keep), parts):
                        writer.write(name, part)
            t_read = time.perf_counter()
            tally.finish()
            rows = writer.close()
            t_written = time.perf_counter()
            read_info = dict(rows_in.info)
        timings = {
            "plan": t_query - t0,  # the result's schema, the stream opened (BigQuery: the job)
            "first_batch": (t_first or t_read) - t_query,  # DuckDB: the query up to its sort
            "stream": t_read - (t_first or t_read),  # batches read, checked, hashed, split
            "last_shards": t_written - t_read,  # the shards still being written
        }
        meta = artifacts.commit(
            out,
            dataset_artifact.KIND,
            {
                "rows": rows,
                "num_rows": sum(rows.values()),
                "schema": {f.name: str(f.type) for f in shard_schema},
                "fingerprint": content.hexdigest(),
                "source": wh.describe(),
                "read": read_info,
                "timings": {k: round(v, 3) for k, v in timings.items()},
                "query_file": wc.query_file,
                "table": wc.table,
                "params": {k: str(v) for k, v in all_params.items()},
                "split": split_settings(split),
                "label": data.label,
            },
        )
    except BaseException:
        if writer is not None:
            writer.abort()
        shutil.rmtree(out, ignore_errors=True)
        raise
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


def _counts(column: pa.Array | pa.ChunkedArray) -> dict[Any, int]:
    vc = pc.value_counts(column)
    pairs = zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)
    return dict(pairs)


def _sorted_counts(counts: dict[Any, int]) -> dict[Any, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))


@dataclass
class SplitTally:
    """The split, checked and counted batch by batch as the rows stream in.

    :meth:`add` checks a batch's split values (``column``: only train/validation/test;
    ``temporal``/``hash``: no NULL) and returns a mask per split; it keeps what the final
    checks need (rows per split; the date range for ``temporal``; distinct keys, up to
    :data:`DISTINCT_KEYS_LIMIT`, for ``hash``; rows per value for ``column``). :meth:`finish`
    raises when there were no rows or a split is empty. A failed check's message counts
    every row (:meth:`drain` reads the rest of the stream, only counting)."""

    data: DataConfig
    split: SplitConfig
    schema: pa.Schema
    query_parameters: dict[str, Any] | None = None
    num_rows: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    nulls: int = 0
    values: dict[Any, int] = field(default_factory=dict)
    lo: Any = None
    hi: Any = None
    keys: set[Any] | None = field(default_factory=set)

    def __post_init__(self) -> None:
        self.part_col = split_column_name(self.split)
        names = self.schema.names
        needed = [
            self.part_col,
            self.data.label,
            *self.data.numeric_features,
            *self.data.categorical_features,
        ]
        missing = [c for c in needed if c not in names]
        if missing:
            raise DataValidationError(
                f"the query result lacks column(s) {missing} named in the config; "
                f"it has {names}. Fix the query or data.*_features/label"
            )
        self.rows = dict.fromkeys(dataset_artifact.SPLITS, 0)

    def add(self, batch: pa.RecordBatch | pa.Table) -> dict[str, np.ndarray | None]:
        """Check and count ``batch``; for each split that has rows in it, their indices (None:
        all the rows). DataValidationError on a bad split value."""
        values = batch.column(self.part_col)
        self.num_rows += batch.num_rows
        if self.split.strategy == "column":
            for value, n in _counts(values).items():
                self.values[value] = self.values.get(value, 0) + n
            if not set(self.values) <= set(dataset_artifact.SPLITS):
                raise self._bad_values()
        else:
            self.nulls += values.null_count
            if self.nulls:
                raise self._nulls()
            self._track(batch)
        parts: dict[str, np.ndarray | None] = {}
        for name in dataset_artifact.SPLITS:
            mask = pc.equal(values, name).to_numpy(zero_copy_only=False)
            n = int(np.count_nonzero(mask))
            if n == batch.num_rows:
                parts[name] = None
            elif n:
                parts[name] = np.flatnonzero(mask)
            self.rows[name] += n
        return parts

    def _track(self, batch: pa.RecordBatch | pa.Table) -> None:
        col = self.split.column
        if col not in batch.schema.names:  # checked before the query ran (validate_schema)
            return
        if self.split.strategy == "temporal":
            lo, hi = pc.min_max(batch.column(str(col))).values()
            lo, hi = lo.as_py(), hi.as_py()
            if lo is not None:
                self.lo = lo if self.lo is None else min(self.lo, lo)
                self.hi = hi if self.hi is None else max(self.hi, hi)
        elif self.split.strategy == "hash" and col and self.keys is not None:
            self.keys.update(pc.unique(batch.column(col)).to_pylist())
            if len(self.keys) > DISTINCT_KEYS_LIMIT:
                self.keys = None  # more than that: the message says so

    def drain(self, batches: Iterable[pa.RecordBatch]) -> None:
        """After a failed check: count the rest of the rows (nothing else), so the message
        covers all of them."""
        for batch in batches:
            values = batch.column(self.part_col)
            self.num_rows += batch.num_rows
            if self.split.strategy == "column":
                for value, n in _counts(values).items():
                    self.values[value] = self.values.get(value, 0) + n
            else:
                self.nulls += values.null_count

    def error(self) -> DataValidationError:
        """The failed check's error (after :meth:`drain`: with every row counted)."""
        return self._bad_values() if self.split.strategy == "column" else self._nulls()

    def _bad_values(self) -> DataValidationError:
        return DataValidationError(
            f"split.column={self.part_col!r} must hold only 'train', 'validation' or 'test' "
            f"(split.strategy=column); rows per value: {_sorted_counts(self.values)}"
        )

    def _nulls(self) -> DataValidationError:
        what = {"temporal": "a date", "hash": "a key"}[self.split.strategy]
        return DataValidationError(
            f"split.column={self.split.column!r} is NULL in {self.nulls} of {self.num_rows} "
            f"rows; split.strategy={self.split.strategy} needs {what} in every row: filter "
            "those rows out or fill them in the query"
        )

    def finish(self) -> None:
        """After the last batch: the query returned rows, and every split got some."""
        if self.num_rows == 0:
            raise DataValidationError(
                "the query returned no rows (warehouse.query_parameters="
                f"{self.query_parameters or {}}); check the parameters and the source tables"
            )
        for name in dataset_artifact.SPLITS:
            if self.rows[name] == 0:
                raise DataValidationError(self.empty_split_message(name))

    def empty_split_message(self, name: str) -> str:
        """Why split ``name`` is empty, naming the strategy and the settings that made it so."""
        split = self.split
        head = f"the {name} split is empty: split.strategy={split.strategy}"
        col = split.column
        if split.strategy == "temporal":
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
                f"{self.lo} to {self.hi}; move split.validation_start/test_start inside "
                "that range (or widen warehouse.query_parameters)"
            )
        if split.strategy == "hash":
            fraction = {
                "train": 1 - split.validation_fraction - split.test_fraction,
                "validation": split.validation_fraction,
                "test": split.test_fraction,
            }[name]
            keys = f"more than {DISTINCT_KEYS_LIMIT}" if self.keys is None else str(len(self.keys))
            key = f"split.column={col!r} ({keys} distinct keys)"
            return (
                f"{head} on {key if col else 'the whole row'} with split.validation_fraction="
                f"{split.validation_fraction:g}, split.test_fraction={split.test_fraction:g}: a "
                f"{name} share of {fraction:g} of {self.num_rows} rows got none; raise that "
                "fraction or use more rows (or keys)"
            )
        return (
            f"{head}: split.column={col!r} has no {name!r} rows; rows per value: "
            f"{_sorted_counts(self.values)}"
        )


def validate_table(
    table: pa.Table,
    data: DataConfig,
    split: SplitConfig,
    query_parameters: dict[str, Any] | None = None,
) -> None:
    """A whole result at once (the per-row checks ingest makes while streaming): rows exist,
    the columns are there, and every row has a valid split."""
    if table.num_rows == 0:
        raise DataValidationError(
            f"the query returned no rows (warehouse.query_parameters={query_parameters or {}}); "
            "check the parameters and the source tables"
        )
    tally = SplitTally(data, split, table.schema, query_parameters)
    batches = iter(table.to_batches())
    for batch in batches:
        try:
            tally.add(batch)
        except DataValidationError:
            tally.drain(batches)
            raise tally.error() from None
