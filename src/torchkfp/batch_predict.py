"""Batch prediction: score files or a table in chunks with a model artifact, streaming, and write
the input's key columns plus the predictions to Parquet, a DuckDB table or a BigQuery table.

Every chunk goes through the in-process :class:`~torchkfp.predictor.Predictor` (the artifact's
own fitted transform, then the network), so a batch prediction equals ``Predictor.predict`` on
the same rows. Memory is bounded by the chunk (``batch.chunk_rows``), not the input.

Where the rows come from and where they go (the text forms are in :mod:`torchkfp.config.batch`):

- Parquet files are read with ``pyarrow`` (``ParquetFile.iter_batches`` / ``pyarrow.dataset``),
  CSV files and DuckDB tables through DuckDB, BigQuery tables and queries through the
  warehouse's streaming reader (:meth:`torchkfp.warehouse.Warehouse.stream`); only the key and
  feature columns are read.
- Parquet output is written under a temporary name next to its destination and renamed into
  place at the end (a folder of shards gets ``_SUCCESS`` last); DuckDB and BigQuery output is
  first spooled to a local Parquet file, then written in one step: DuckDB ``CREATE OR REPLACE
  TABLE ... AS SELECT`` (or ``INSERT``) in one transaction, BigQuery one load job
  (``WRITE_EMPTY`` / ``WRITE_TRUNCATE`` / ``WRITE_APPEND``) sent as a resumable upload. So a
  failure at any point leaves no output, or the old output as it was.

What is checked before any output is written: the model loads, the input has every feature
column and key column, the prediction column names do not clash with a key column, and the
output does not exist (unless ``if_exists`` is ``replace`` or ``append``).

Output columns, following the serving response (:func:`torchkfp.serving.app.predictions`):
the key columns, then by task kind

- binary: ``label`` (the predicted class at the threshold) and ``probability`` (of the positive
  class, the second of the model's classes);
- multiclass: ``label`` and ``probability_<class>`` per class (the serving response's
  ``probabilities`` object, one column per class; characters other than letters, digits and
  ``_`` in a class name become ``_``);
- regression: ``value``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from torchkfp.artifacts.folder import MARKER, gcs_to_fuse
from torchkfp.config import ConfigError, DeployConfig, VertexConfig, WarehouseConfig
from torchkfp.config.batch import BatchConfig, Location, parse_location
from torchkfp.errors import ArtifactError, RegistryError

if TYPE_CHECKING:
    from torchkfp.predictor import Predictor

IfExists = Literal["fail", "replace", "append"]
SHARD_NAME = "part-{:05d}.parquet"
FUSE_ROOT = "/gcs/"
"""Where Vertex AI jobs mount Cloud Storage (``gs://b/x`` is ``/gcs/b/x``)."""
BATCH_SECTIONS: tuple[str, ...] = ("batch", "warehouse", "evaluate", "deploy", "vertex")
"""The config sections the batch-scoring step receives (each one pipeline parameter,
``<section>_config``): its own, the warehouse it reads or writes, the threshold's default
(``evaluate``), and the registry that resolves the alias (``deploy``, ``vertex``)."""


@dataclass
class BatchResult:
    """What a batch prediction did (printed as one JSON line by ``torchkfp batch-predict``)."""

    rows: int
    seconds: float
    rows_per_second: float
    input: str
    output: str
    model: str
    task: str
    key_columns: list[str]
    prediction_columns: list[str]
    chunks: int
    threshold: float | None = None
    """binary: the threshold ``label`` was decided at."""
    details: dict[str, Any] = field(default_factory=dict)
    """The output's own facts (BigQuery: the load job id; folder: the shard count)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the model ----------------------------------------------------------------------------
def locate_model(
    model: str | None, alias: str | None, deploy: DeployConfig, vertex: VertexConfig | None
) -> str:
    """The model artifact to score with: ``model`` (a folder or gs:// URI) if given, else the
    registry's version that ``alias`` (default: ``deploy.alias``) names."""
    if model:
        return model
    from torchkfp.registry import open_registry

    alias = alias or deploy.alias
    registry = open_registry(deploy, vertex)
    try:
        uri = registry.locate(alias)
    except RegistryError as e:
        raise RegistryError(f"cannot find the model with alias {alias!r}: {e}") from None
    if uri is None:
        raise RegistryError(
            f"no model has the alias {alias!r} in the {registry.describe()}: run `torchkfp run` "
            "first, or score with a model folder (--model PATH)"
        )
    return uri


def local_model_dir(uri: str) -> str:
    """A local folder holding the model artifact at ``uri``: a folder as it is, gs:// through
    the GCS FUSE mount (``/gcs/...``, every Vertex AI job has it) or else downloaded once."""
    if uri.startswith("gs://"):
        fuse = gcs_to_fuse(uri)
        if Path(fuse).is_dir():
            return fuse
        from torchkfp.serving.location import ServeError, localize_model

        try:
            return localize_model(uri)
        except ServeError as e:
            raise ArtifactError(str(e)) from None
    if "://" in uri:
        raise ConfigError(f"model {uri!r}: give a model artifact folder or a gs:// URI")
    if not Path(uri).is_dir():
        raise ConfigError(
            f"model folder {uri!r} does not exist: give the folder of a model artifact (it "
            "holds model.pt, transform.json and _SUCCESS), a gs:// URI, or --alias"
        )
    return uri


def load_predictor(uri: str) -> Predictor:
    from torchkfp.predictor import Predictor

    return Predictor(local_model_dir(uri))


# ---- predictions as columns ---------------------------------------------------------------
def _column_suffix(name: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", str(name))


class Scorer:
    """Turns a chunk of rows into the prediction columns of the model's task kind (see the
    module docstring), vectorized."""

    def __init__(self, predictor: Predictor, threshold: float = 0.5):
        if not 0 < threshold < 1:
            raise ConfigError(f"threshold={threshold} must be in (0, 1)")
        self.predictor = predictor
        self.task = predictor.task
        self.threshold = threshold
        self.features = list(predictor.feature_names)
        self.classes = pa.array(predictor.classes) if self.task != "regression" else None
        if self.task == "regression":
            self.fields = [pa.field("value", pa.float64())]
        elif self.task == "binary":
            self.fields = [
                pa.field("label", self.classes.type),
                pa.field("probability", pa.float64()),
            ]
        else:
            names = [f"probability_{_column_suffix(c)}" for c in predictor.classes]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ConfigError(
                    f"the model's classes {predictor.classes} give the same column name(s) "
                    f"{dup} (characters other than letters, digits and _ become _)"
                )
            self.fields = [pa.field("label", self.classes.type)] + [
                pa.field(n, pa.float64()) for n in names
            ]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def columns(self, rows: pa.Table) -> list[pa.Array]:
        """The prediction columns for ``rows`` (which hold at least the feature columns)."""
        import numpy as np

        out = self.predictor.predict(rows.select(self.features).to_pandas())
        if self.task == "regression":
            return [pa.array(out, pa.float64())]
        if self.task == "binary":
            idx = (out >= self.threshold).astype(np.int64)
            return [self.classes.take(pa.array(idx)), pa.array(out, pa.float64())]
        idx = out.argmax(axis=1).astype(np.int64)
        return [self.classes.take(pa.array(idx))] + [
            pa.array(out[:, j], pa.float64()) for j in range(out.shape[1])
        ]


# ---- sources ------------------------------------------------------------------------------
def iter_chunks(batches: Any, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """The non-empty batches of ``batches``, none longer than ``chunk_rows``."""
    for batch in batches:
        for start in range(0, batch.num_rows, chunk_rows):
            yield batch.slice(start, chunk_rows)


class Source:
    """Rows to score: their schema (before anything is read) and a stream of chunks."""

    description: str
    schema: pa.Schema

    def batches(
        self, columns: list[str], chunk_rows: int
    ) -> contextlib.AbstractContextManager[Iterator[pa.RecordBatch]]:
        """A context manager giving ``columns`` in batches of at most ``chunk_rows`` rows;
        leaving it closes the reader (the DuckDB connection, BigQuery's read streams)."""
        raise NotImplementedError


def _local_path(path: str) -> str:
    """A gs:// URI as its GCS FUSE path; local paths as they are (``~`` expanded)."""
    if path.startswith("gs://"):
        fuse = gcs_to_fuse(path)
        if not Path(fuse).parent.exists() and not glob.has_magic(fuse):
            raise ConfigError(
                f"{path!r} is read through the GCS FUSE mount ({fuse!r}), which is not there: "
                "run where /gcs is mounted (any Vertex AI job), or copy the files here"
            )
        return fuse
    return os.path.expanduser(path)


def _not_found(text: str, setting: str) -> ConfigError:
    hint = ""
    if re.fullmatch(r"[A-Za-z_][\w.]*", text) and not text.lower().endswith((".parquet", ".pq")):
        hint = f" (a table? write duckdb:{text} or bq:DATASET.{text.split('.')[-1]})"
    return ConfigError(f"{setting}={text!r}: no such file or folder{hint}")


class ParquetSource(Source):
    """A Parquet file (read with ``ParquetFile.iter_batches``), or a folder or glob of them
    (``pyarrow.dataset``; names starting with ``_`` or ``.`` are skipped)."""

    def __init__(self, path: str, setting: str = "--input"):
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        self.description = path
        local = _local_path(path)
        self._file = None
        self._dataset = None
        try:
            if glob.has_magic(local):
                files = sorted(f for f in glob.glob(local, recursive=True) if Path(f).is_file())
                if not files:
                    raise ConfigError(f"{setting}={path!r} matches no file")
                self._dataset = ds.dataset(files, format="parquet")
            elif Path(local).is_dir():
                self._dataset = ds.dataset(local, format="parquet")
                if not self._dataset.files:
                    raise ConfigError(
                        f"{setting}={path!r} is a folder without Parquet files (names starting "
                        "with _ or . are skipped)"
                    )
            elif Path(local).is_file():
                self._file = pq.ParquetFile(local)
            else:
                raise _not_found(path, setting)
        except (pa.ArrowException, OSError) as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise ConfigError(f"{setting}={path!r} cannot be read as Parquet ({first})") from None
        self.schema = self._file.schema_arrow if self._file is not None else self._dataset.schema

    @contextlib.contextmanager
    def batches(self, columns: list[str], chunk_rows: int) -> Iterator[Iterator[pa.RecordBatch]]:
        if self._file is not None:
            batches = self._file.iter_batches(batch_size=chunk_rows, columns=columns)
        else:  # little read-ahead: memory stays a few chunks
            batches = self._dataset.to_batches(
                columns=columns, batch_size=chunk_rows, batch_readahead=2, fragment_readahead=1
            )
        try:
            yield iter_chunks(batches, chunk_rows)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()


def _quote(name: str) -> str:
    if "`" in name or "\\" in name or "\n" in name:
        raise ConfigError(f"column {name!r}: names with a backtick, backslash or line break")
    return f"`{name}`"


class WarehouseSource(Source):
    """A table or a query of a warehouse (DuckDB or BigQuery), streamed; only the key and
    feature columns are selected. The schema is the warehouse's plan of the query (DuckDB:
    ``LIMIT 0``; BigQuery: a dry run, which reads nothing)."""

    def __init__(self, wh: Any, sql: str, params: dict[str, Any], description: str):
        self.wh, self.sql, self.params = wh, sql, params
        self.description = description
        self.schema = wh.result_schema(sql, params)

    @contextlib.contextmanager
    def batches(self, columns: list[str], chunk_rows: int) -> Iterator[Iterator[pa.RecordBatch]]:
        from torchkfp.warehouse import strip_sql

        cols = ", ".join(_quote(c) for c in columns)
        sql = f"SELECT {cols} FROM (\n{strip_sql(self.sql)}\n)"
        with self.wh.stream(sql, self.params, batch_rows=chunk_rows) as reader:
            yield iter_chunks(reader, chunk_rows)


def _bq_table_sql(name: str) -> str:
    return "SELECT * FROM " + "`" + name + "`"


def _duckdb_table_sql(name: str) -> str:
    return "SELECT * FROM " + ".".join(f"`{p}`" for p in name.split("."))


def _duckdb_warehouse(loc: Location, wc: WarehouseConfig, role: str) -> Any:
    from torchkfp.warehouse import DuckDBWarehouse

    if loc.database:
        path = os.path.expanduser(loc.database)
        if role == "input" and not Path(path).is_file():
            raise ConfigError(f"--{role} {loc.describe()!r}: DuckDB file {path!r} does not exist")
        return DuckDBWarehouse(path, tables={})
    if wc.duckdb_path is None and role == "output":
        raise ConfigError(
            f"--{role} {loc.describe()!r}: warehouse.duckdb_path is empty (an in-memory "
            "database); name the file: duckdb:FILE.duckdb:TABLE"
        )
    schema = wc.source_dataset.split(".")[-1]
    return DuckDBWarehouse(wc.duckdb_path, schema=schema, tables=wc.tables)


def _bigquery_warehouse(wc: WarehouseConfig, table: str | None = None) -> Any:
    from torchkfp.warehouse import BigQueryWarehouse

    project = wc.project or (table.split(".")[0] if table and table.count(".") == 2 else None)
    if project is None:
        raise ConfigError(
            f"bq:{table}: set warehouse.project (the project that runs the jobs) or write "
            "bq:PROJECT.DATASET.TABLE"
        )
    return BigQueryWarehouse(
        project,
        wc.location,
        labels=wc.labels,
        maximum_bytes_billed=wc.maximum_bytes_billed,
    )


def _full_bq_table(table: str, wc: WarehouseConfig) -> str:
    if table.count(".") == 2:
        return table
    if not wc.project:
        raise ConfigError(
            f"bq:{table} names no project: write bq:PROJECT.{table} or set warehouse.project"
        )
    return f"{wc.project}.{table}"


def open_source(loc: Location, wc: WarehouseConfig) -> Source:
    """The source ``loc`` names; ConfigError when it does not exist or cannot be planned."""
    from torchkfp.warehouse import DuckDBWarehouse, check_sql, open_warehouse

    if loc.kind == "parquet":
        return ParquetSource(loc.name)
    if loc.kind == "csv":
        local = _local_path(loc.name)
        if not (glob.glob(local) if glob.has_magic(local) else Path(local).is_file()):
            raise _not_found(loc.name, "--input")
        # DuckDB reads CSV as warehouse.tables does (types from the whole file, NA = missing)
        wh = DuckDBWarehouse(None, tables={"batch_input": local})
        return WarehouseSource(wh, "SELECT * FROM batch_input", {}, loc.name)
    if loc.kind == "duckdb":
        wh = _duckdb_warehouse(loc, wc, "input")
        return WarehouseSource(wh, _duckdb_table_sql(loc.name), {}, loc.describe())
    if loc.kind == "bigquery":
        table = _full_bq_table(loc.name, wc)
        wh = _bigquery_warehouse(wc, table)
        return WarehouseSource(wh, _bq_table_sql(table), {}, f"bq:{table}")
    from torchkfp.ingest import query_params

    check_sql(loc.name, "--input (a query)")
    wh = open_warehouse(wc)
    return WarehouseSource(wh, loc.name, query_params(wc), f"{wh.describe()} {loc.describe()}")


# ---- sinks --------------------------------------------------------------------------------
class Sink:
    """Where the predictions go. ``check`` runs before anything is read; ``open`` gives a
    writer whose output exists only after ``commit`` (``abort`` removes what it wrote)."""

    description: str
    if_exists: IfExists

    def check(self) -> None:
        raise NotImplementedError

    def open(self, schema: pa.Schema) -> Writer:
        raise NotImplementedError


class Writer:
    rows = 0

    def write(self, table: pa.Table) -> None:
        raise NotImplementedError

    def commit(self) -> dict[str, Any]:
        """Make the output visible; returns facts for the result's ``details``."""
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


def _exists_error(what: str, setting_hint: str) -> ConfigError:
    return ConfigError(
        f"the output {what} exists already: pass --overwrite to replace it{setting_hint} "
        "(batch.if_exists: replace), or choose another output"
    )


class _SpoolWriter(Writer):
    """Appends chunks to one Parquet file (one row group per chunk)."""

    def __init__(self, path: Path, schema: pa.Schema, **options: Any):
        import pyarrow.parquet as pq

        self.path = path
        self.schema = schema
        self._writer = pq.ParquetWriter(str(path), schema, compression="snappy", **options)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tmp_sibling(path: Path, what: str) -> Path:
    return path.with_name(f".{path.name}.{what}-{uuid.uuid4().hex[:8]}")


class ParquetFileSink(Sink):
    """One Parquet file, written as ``.<name>.tmp-*`` beside it and renamed into place."""

    def __init__(self, path: str, if_exists: IfExists):
        self.description = path
        self.if_exists = if_exists
        self.path = Path(_local_path(path))

    def check(self) -> None:
        if self.if_exists == "append":
            raise ConfigError("--append works for duckdb: and bq: tables, not Parquet files")
        if self.path.is_dir():
            raise ConfigError(
                f"the output {self.description!r} is a folder; name a .parquet file, or give "
                "a folder path without the .parquet ending to write shards"
            )
        if self.path.exists() and self.if_exists == "fail":
            raise _exists_error(repr(self.description), "")
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def open(self, schema: pa.Schema) -> Writer:
        sink = self

        class W(_SpoolWriter):
            def commit(self) -> dict[str, Any]:
                self.close()
                if sink.if_exists == "fail" and sink.path.exists():
                    raise _exists_error(repr(sink.description), " (it appeared while scoring)")
                os.replace(self.path, sink.path)
                return {"files": 1}

            def abort(self) -> None:
                with contextlib.suppress(Exception):
                    self.close()
                self.path.unlink(missing_ok=True)

        return W(_tmp_sibling(self.path, "tmp"), schema)


class ParquetFolderSink(Sink):
    """A folder of Parquet shards (``part-NNNNN.parquet``, ``rows_per_shard`` rows each, one
    empty shard for no rows) with ``_SUCCESS`` written last; built as ``.<name>.tmp-*`` beside
    it and renamed into place. Replacing moves the old folder aside first and deletes it only
    after the new one is in place; only a folder that batch prediction wrote (``_SUCCESS``, or
    nothing but shards) is ever replaced.

    On the GCS FUSE mount (``gs://`` paths, ``/gcs/...``) a folder cannot be renamed: the shards
    are still written beside it first, then the old ``_SUCCESS`` is removed, the old shards
    deleted, the new ones moved in one by one and ``_SUCCESS`` written last (``by_files``).
    So a failure while scoring leaves the old output as it was, and a folder without
    ``_SUCCESS`` is never a finished output (read it only when the marker is there)."""

    def __init__(self, path: str, if_exists: IfExists, rows_per_shard: int):
        self.description = path
        self.if_exists = if_exists
        self.path = Path(_local_path(path))
        self.rows_per_shard = rows_per_shard
        self.by_files = str(self.path).startswith(FUSE_ROOT)

    def check(self) -> None:
        p = self.path
        if self.if_exists == "append":
            raise ConfigError("--append works for duckdb: and bq: tables, not Parquet folders")
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise ConfigError(
                f"the output {self.description!r} exists and is not a folder; name a new "
                "folder, or a .parquet file to write one file"
            )
        if p.is_dir():
            names = {e.name for e in p.iterdir()}
            if not names:
                return
            if self.if_exists == "fail":
                raise _exists_error(f"folder {self.description!r}", "")
            ours = MARKER in names or all(re.fullmatch(r"part-\d+\.parquet", n) for n in names)
            if not ours:
                raise ConfigError(
                    f"the output folder {self.description!r} holds files batch prediction did "
                    "not write (no _SUCCESS); it is never replaced: choose another output"
                )
        p.parent.mkdir(parents=True, exist_ok=True)

    def open(self, schema: pa.Schema) -> Writer:
        return _FolderWriter(self, schema)


class _FolderWriter(Writer):
    def __init__(self, sink: ParquetFolderSink, schema: pa.Schema):
        self.sink = sink
        self.schema = schema
        self.tmp = _tmp_sibling(sink.path, "tmp")
        self.tmp.mkdir()
        self.rows = 0
        self.shards = 0
        self._current: _SpoolWriter | None = None

    def _next(self) -> _SpoolWriter:
        if self._current is None or self._current.rows >= self.sink.rows_per_shard:
            if self._current is not None:
                self._current.close()
            self._current = _SpoolWriter(self.tmp / SHARD_NAME.format(self.shards), self.schema)
            self.shards += 1
        return self._current

    def write(self, table: pa.Table) -> None:
        start = 0
        while start < table.num_rows:
            w = self._next()
            n = min(table.num_rows - start, self.sink.rows_per_shard - w.rows)
            w.write(table.slice(start, n))
            start += n
        self.rows += table.num_rows

    def commit(self) -> dict[str, Any]:
        if self._current is None:  # no rows: one empty shard keeps the schema
            self._next()
        self._current.close()
        dest = self.sink.path
        if dest.exists() and any(dest.iterdir()) and self.sink.if_exists == "fail":
            raise _exists_error(f"folder {self.sink.description!r}", " (it appeared)")
        if self.sink.by_files:
            return self._commit_by_files(dest)
        (self.tmp / MARKER).write_text("")
        old = None
        if dest.exists():
            if not any(dest.iterdir()):
                dest.rmdir()
            else:
                old = _tmp_sibling(dest, "old")
                os.replace(dest, old)
        try:
            os.replace(self.tmp, dest)
        except BaseException:
            if old is not None:
                os.replace(old, dest)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return {"files": self.shards}

    def _commit_by_files(self, dest: Path) -> dict[str, Any]:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / MARKER).unlink(missing_ok=True)  # from here on the old output is not "done"
        for f in dest.glob("part-*.parquet"):
            f.unlink()
        for f in sorted(self.tmp.glob("part-*.parquet")):
            os.replace(f, dest / f.name)
        (dest / MARKER).write_text("")
        shutil.rmtree(self.tmp, ignore_errors=True)
        return {"files": self.shards}

    def abort(self) -> None:
        if self._current is not None:
            with contextlib.suppress(Exception):
                self._current.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class _Spooled(Writer):
    """Spools chunks to a local temporary Parquet file; ``publish`` writes it out in one step."""

    def __init__(self, schema: pa.Schema, publish: Any, **options: Any):
        self.dir = Path(tempfile.mkdtemp(prefix="torchkfp-batch-"))
        self.spool = _SpoolWriter(self.dir / "predictions.parquet", schema, **options)
        self.publish = publish

    @property
    def rows(self) -> int:  # type: ignore[override]
        return self.spool.rows

    def write(self, table: pa.Table) -> None:
        self.spool.write(table)

    def commit(self) -> dict[str, Any]:
        self.spool.close()
        try:
            return self.publish(self.spool.path, self.spool.rows)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _duckdb_ident(name: str) -> str:
    return ".".join(f'"{p}"' for p in name.split("."))


class DuckDBSink(Sink):
    """A table of a DuckDB file, written in one transaction at the end: ``CREATE [OR REPLACE]
    TABLE ... AS SELECT`` (or ``INSERT INTO ... BY NAME`` to append) from the spooled Parquet
    file. A failure rolls back: the table stays as it was."""

    def __init__(self, loc: Location, wc: WarehouseConfig, if_exists: IfExists):
        if loc.name.count(".") > 1:
            raise ConfigError(
                f"--output {loc.describe()!r}: write duckdb:TABLE or duckdb:SCHEMA.TABLE"
            )
        self.loc = loc
        self.description = loc.describe()
        self.if_exists = if_exists
        self.wh = _duckdb_warehouse(loc, wc, "output")
        self.file = Path(self.wh.path)

    def _exists(self) -> bool:
        import duckdb

        if not self.file.exists():
            return False
        schema, _, table = self.loc.name.rpartition(".")
        con = duckdb.connect(str(self.file), read_only=True)
        try:
            row = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
                "AND table_schema = ? AND table_catalog = current_database()",
                [table, schema or "main"],
            ).fetchone()
        finally:
            con.close()
        return bool(row and row[0])

    def check(self) -> None:
        if self.loc.database is None:
            self.wh.ensure_seeded()  # the default warehouse file: never create it empty
        if self.if_exists == "fail" and self._exists():
            raise _exists_error(f"table {self.description!r}", "")

    def open(self, schema: pa.Schema) -> Writer:
        return _Spooled(schema, self._publish)

    def _publish(self, spool: Path, rows: int) -> dict[str, Any]:
        import duckdb

        target = _duckdb_ident(self.loc.name)
        source = "read_parquet('" + str(spool).replace("'", "''") + "')"
        self.file.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(self.file))
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                schema = self.loc.name.rpartition(".")[0]
                if schema:
                    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                before = 0
                if self.if_exists == "append" and self._table_exists(con):
                    before = con.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
                    con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {source}")
                else:
                    verb = (
                        "CREATE OR REPLACE TABLE"
                        if self.if_exists == "replace"
                        else ("CREATE TABLE")
                    )
                    con.execute(f"{verb} {target} AS SELECT * FROM {source}")
                total = con.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
                if total - before != rows:
                    raise RuntimeError(
                        f"{self.description}: {total - before} rows written, not {rows}"
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except duckdb.CatalogException as e:
            raise ConfigError(f"--output {self.description}: {e}") from None
        finally:
            con.close()
        return {"database": str(self.file), "table": self.loc.name}

    def _table_exists(self, con: Any) -> bool:
        schema, _, table = self.loc.name.rpartition(".")
        row = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
            "AND table_schema = ? AND table_catalog = current_database()",
            [table, schema or "main"],
        ).fetchone()
        return bool(row and row[0])


def bigquery_schema(schema: pa.Schema) -> list[Any]:
    """The BigQuery ``SchemaField`` list of an Arrow schema (every field NULLABLE; a list is
    REPEATED, a struct a RECORD). The load job names it so that the table is created with the
    Arrow types (not guessed from the file) and an append to an incompatible table fails."""
    from google.cloud import bigquery

    def field(name: str, t: pa.DataType, mode: str = "NULLABLE") -> Any:
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return field(name, t.value_type, "REPEATED")
        if pa.types.is_struct(t):
            subs = [field(t.field(i).name, t.field(i).type) for i in range(t.num_fields)]
            return bigquery.SchemaField(name, "RECORD", mode=mode, fields=subs)
        if pa.types.is_dictionary(t):
            return field(name, t.value_type, mode)
        return bigquery.SchemaField(name, _bq_type(name, t), mode=mode)

    return [field(f.name, f.type) for f in schema]


def _bq_type(name: str, t: pa.DataType) -> str:
    checks = [
        (pa.types.is_boolean, "BOOL"),
        (pa.types.is_integer, "INT64"),
        (pa.types.is_floating, "FLOAT64"),
        (pa.types.is_string, "STRING"),
        (pa.types.is_large_string, "STRING"),
        (pa.types.is_binary, "BYTES"),
        (pa.types.is_large_binary, "BYTES"),
        (pa.types.is_date, "DATE"),
        (pa.types.is_time, "TIME"),
    ]
    for check, bq_type in checks:
        if check(t):
            return bq_type
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz else "DATETIME"
    if pa.types.is_decimal(t):
        return "NUMERIC" if t.precision <= 38 and t.scale <= 9 else "BIGNUMERIC"
    raise ConfigError(f"column {name!r} has the Arrow type {t}, which BigQuery has no type for")


class BigQuerySink(Sink):
    """A BigQuery table, written by one load job from the spooled Parquet file (a resumable
    upload; ``WRITE_EMPTY`` / ``WRITE_TRUNCATE`` / ``WRITE_APPEND`` for ``if_exists`` fail /
    replace / append). A load job changes the table in one step, or not at all."""

    DISPOSITIONS = {"fail": "WRITE_EMPTY", "replace": "WRITE_TRUNCATE", "append": "WRITE_APPEND"}

    def __init__(self, loc: Location, wc: WarehouseConfig, if_exists: IfExists):
        self.table = _full_bq_table(loc.name, wc)
        self.description = f"bq:{self.table}"
        self.if_exists = if_exists
        self.wh = _bigquery_warehouse(wc, self.table)
        self.location = wc.location
        self.labels = dict(wc.labels)
        self.exists = True  # until check() looks

    def check(self) -> None:
        from google.api_core.exceptions import NotFound

        client = self.wh.client
        project, dataset, _ = self.table.split(".")
        try:
            client.get_dataset(f"{project}.{dataset}")
        except NotFound:
            raise ConfigError(
                f"--output {self.description}: dataset {project}.{dataset} does not exist; "
                f"create it first (bq mk --location={self.location} {project}:{dataset})"
            ) from None
        try:
            client.get_table(self.table)
        except NotFound:
            self.exists = False
            return
        self.exists = True
        if self.if_exists == "fail":
            raise _exists_error(
                f"table {self.description}", " (WRITE_TRUNCATE), or --append (WRITE_APPEND)"
            )

    def open(self, schema: pa.Schema) -> Writer:
        self.schema = bigquery_schema(schema)  # before scoring: a type BigQuery lacks fails now
        # BigQuery TIMESTAMP holds microseconds
        return _Spooled(
            schema, self._publish, coerce_timestamps="us", allow_truncated_timestamps=True
        )

    def _publish(self, spool: Path, rows: int) -> dict[str, Any]:
        from google.cloud import bigquery

        # a table that was not there: WRITE_EMPTY (the same for a new table, and a table
        # made meanwhile is not overwritten; bqemulator cannot WRITE_TRUNCATE a missing one)
        disposition = self.DISPOSITIONS[self.if_exists if self.exists else "fail"]
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=self.schema,
            write_disposition=disposition,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        if self.labels:
            config.labels = self.labels
        with open(spool, "rb") as f:
            # no size: the client sends a resumable upload (bqemulator refuses multipart)
            job = self.wh.client.load_table_from_file(
                f, self.table, job_config=config, location=self.location, rewind=True
            )
            job.result()
        loaded = job.output_rows
        # (appending, bqemulator reports the table's rows, not the job's: not checked then)
        if loaded is not None and int(loaded) != rows and disposition != "WRITE_APPEND":
            raise RuntimeError(
                f"the load job {job.job_id} wrote {loaded} rows to {self.table}, not {rows}"
            )
        return {"load_job": job.job_id, "disposition": disposition}


def open_sink(
    loc: Location, wc: WarehouseConfig, if_exists: IfExists, rows_per_shard: int = 1_000_000
) -> Sink:
    if loc.kind == "parquet_file":
        return ParquetFileSink(loc.name, if_exists)
    if loc.kind == "parquet_folder":
        return ParquetFolderSink(loc.name, if_exists, rows_per_shard)
    if loc.kind == "duckdb":
        return DuckDBSink(loc, wc, if_exists)
    if loc.kind == "bigquery":
        return BigQuerySink(loc, wc, if_exists)
    raise ConfigError(f"{loc.describe()!r} cannot be an output")


# ---- the run ------------------------------------------------------------------------------
def _names(names: list[str], most: int = 30) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return f"[{shown}{f', ... {len(names) - most} more' if len(names) > most else ''}]"


def plan_columns(
    scorer: Scorer, schema: pa.Schema, key_columns: list[str] | None, where: str
) -> tuple[list[str], pa.Schema]:
    """(key columns, output schema), or ConfigError naming the missing feature or key columns
    and any key column that clashes with a prediction column."""
    names = list(schema.names)
    missing = [f for f in scorer.features if f not in names]
    if missing:
        raise ConfigError(
            f"the input {where} lacks the model's feature column(s) {missing}: add them, or "
            f"select or rename them in a query (the input has {_names(names)})"
        )
    if key_columns is None:
        keys = [c for c in names if c not in set(scorer.features)]
    else:
        keys = list(key_columns)
        absent = [k for k in keys if k not in names]
        if absent:
            raise ConfigError(
                f"key column(s) {absent} are not in the input {where} (it has {_names(names)})"
            )
    clash = [k for k in keys if k in scorer.names]
    if clash:
        raise ConfigError(
            f"key column(s) {clash} have the name of a prediction column ({scorer.names}); "
            "leave them out of --key-columns, or rename them in a query"
        )
    fields = [schema.field(k) for k in keys] + scorer.fields
    return keys, pa.schema(fields)


def predict_to(
    predictor: Predictor,
    source: Source,
    sink: Sink,
    *,
    key_columns: list[str] | None = None,
    chunk_rows: int = 65536,
    threshold: float = 0.5,
    model: str = "",
) -> BatchResult:
    """Score every row of ``source`` and write key columns + predictions to ``sink``. All the
    checks (columns, the output's existence) come before anything is read or written; the
    output appears only when every row is scored and written."""
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows} must be >= 1")
    t0 = time.perf_counter()
    scorer = Scorer(predictor, threshold)
    keys, out_schema = plan_columns(scorer, source.schema, key_columns, repr(source.description))
    sink.check()
    read = list(dict.fromkeys(keys + scorer.features))
    writer = sink.open(out_schema)
    chunks = 0
    try:
        with source.batches(read, chunk_rows) as batches:
            for batch in batches:
                rows = pa.Table.from_batches([batch])
                cols = [rows.column(k) for k in keys] + scorer.columns(rows)
                out = pa.Table.from_arrays(cols, names=out_schema.names)
                if out.schema != out_schema:
                    out = out.cast(out_schema)
                writer.write(out)
                chunks += 1
        details = writer.commit()
    except BaseException:
        writer.abort()
        raise
    seconds = time.perf_counter() - t0
    return BatchResult(
        rows=writer.rows,
        seconds=round(seconds, 3),
        rows_per_second=round(writer.rows / seconds, 1) if seconds > 0 else 0.0,
        input=source.description,
        output=sink.description,
        model=model or str(predictor.path),
        task=scorer.task,
        key_columns=keys,
        prediction_columns=scorer.names,
        chunks=chunks,
        threshold=threshold if scorer.task == "binary" else None,
        details=details,
    )


def run_batch(
    batch: BatchConfig,
    warehouse: WarehouseConfig | None = None,
    deploy: DeployConfig | None = None,
    vertex: VertexConfig | None = None,
    default_threshold: float = 0.5,
) -> BatchResult:
    """Batch prediction as the ``batch`` section says (the CLI's and the pipeline step's one
    call): the model (``batch.model``, else the registry's ``batch.alias`` / ``deploy.alias``),
    ``batch.input`` -> ``batch.output``; ``warehouse`` for tables and queries, ``deploy`` and
    ``vertex`` for the registry, ``default_threshold`` (``evaluate.threshold``) unless
    ``batch.threshold`` is set."""
    warehouse = warehouse or WarehouseConfig()
    deploy = deploy or DeployConfig()
    batch.require_io()
    assert batch.input is not None and batch.output is not None
    src_loc = parse_location(batch.input, "input", "--input")
    out_loc = parse_location(batch.output, "output", "--output")
    sink = open_sink(out_loc, warehouse, batch.if_exists, batch.rows_per_shard)
    uri = locate_model(batch.model, batch.alias, deploy, vertex)
    predictor = load_predictor(uri)
    source = open_source(src_loc, warehouse)
    return predict_to(
        predictor,
        source,
        sink,
        key_columns=batch.key_columns,
        chunk_rows=batch.chunk_rows,
        threshold=batch.threshold if batch.threshold is not None else default_threshold,
        model=uri,
    )


def check_for_vertex(batch: BatchConfig, warehouse: WarehouseConfig) -> None:
    """ConfigError unless a batch-scoring run on Vertex AI can reach everything ``batch``
    names: input and output set, and each a BigQuery table, a query on a BigQuery warehouse, or
    a gs:// (or /gcs/) path; the model a gs:// URI or the registry's alias (a local folder or
    DuckDB file on this machine is not there)."""
    batch.require_io()
    for name, role in (("input", "input"), ("output", "output")):
        loc = parse_location(getattr(batch, name), role, f"batch.{name}")
        where = f"batch.{name}={getattr(batch, name)!r}"
        if loc.kind == "duckdb":
            raise ConfigError(
                f"{where}: a DuckDB table is on this machine, not on Vertex AI; use a BigQuery "
                "table (bq:DATASET.TABLE) or gs:// files"
            )
        if loc.kind == "query" and warehouse.backend != "bigquery":
            raise ConfigError(
                f"{where}: a query runs on warehouse.backend={warehouse.backend!r}; on Vertex "
                "AI set warehouse.backend: bigquery (and warehouse.project)"
            )
        if loc.kind not in ("bigquery", "query") and not loc.name.startswith(("gs://", "/gcs/")):
            raise ConfigError(
                f"{where} is a local path; on Vertex AI give a gs:// path (read and written "
                "through the GCS FUSE mount) or a BigQuery table"
            )
    if batch.model and not batch.model.startswith(("gs://", "/gcs/")):
        raise ConfigError(
            f"batch.model={batch.model!r} is a local folder; on Vertex AI give a gs:// URI, or "
            "leave it empty to score with the registry's champion (batch.alias)"
        )


def pipeline_parameters(cfg: Any, batch: BatchConfig | None = None) -> dict[str, dict[str, Any]]:
    """The batch-scoring pipeline's parameters for a run with ``cfg``: ``batch_config`` (the
    ``batch`` section, or ``batch`` if given) and the other :data:`BATCH_SECTIONS`."""
    from torchkfp.config.batch import batch_section
    from torchkfp.stage_settings import parameter_name, section_parameter

    sections = {"batch": batch or batch_section(cfg)}
    for name in BATCH_SECTIONS[1:]:
        sections[name] = cfg.section(name)
    return {parameter_name(n): section_parameter(s) for n, s in sections.items()}
