"""BigQueryWarehouse through the real google-cloud-bigquery client against bqemulator.

The same BigQuery-dialect query gives the same rows on the emulator as on the embedded DuckDB
path (sqlglot-transpiled), so local runs and cloud runs ingest the same dataset.
"""

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from torchkfp.artifacts.dataset import SPLITS, read_split
from torchkfp.ingest import ingest
from torchkfp.warehouse import BigQueryWarehouse, DuckDBWarehouse

pytestmark = pytest.mark.integration

PROJECT = "torchkfp-test"
DAYS = (dt.date(2013, 1, 1), dt.date(2013, 1, 6))  # a few days: streaming inserts are slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bq_emulator(tmp_path_factory):
    exe = shutil.which("bqemulator") or str(Path(sys.executable).with_name("bqemulator"))
    if not Path(exe).exists():
        pytest.skip("bqemulator is not installed (make test installs it)")
    import duckdb_extension_spatial

    home = tmp_path_factory.mktemp("bqhome")
    ext = Path(duckdb_extension_spatial.__file__).parent / "extensions"
    src = next(ext.rglob("spatial.duckdb_extension"))
    dest = home / ".duckdb" / "extensions" / src.parent.name / "linux_amd64"
    dest.mkdir(parents=True)
    shutil.copy(src, dest)
    rest, grpc = _port(), _port()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home)}
    proc = subprocess.Popen(
        [
            exe,
            "start",
            "--rest-host",
            "127.0.0.1",
            "--rest-port",
            str(rest),
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            str(grpc),
            "--project",
            PROJECT,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{rest}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("bqemulator did not become ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _bq_type(duck_type: str) -> str:
    t = duck_type.upper()
    if t in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT"):
        return "INT64"
    if t in ("DOUBLE", "FLOAT") or t.startswith("DECIMAL"):
        return "FLOAT64"
    if t.startswith("TIMESTAMP"):
        return "TIMESTAMP"
    if t == "DATE":
        return "DATE"
    return "STRING"


@pytest.fixture(scope="module")
def bq_client(bq_emulator, warehouse_path):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bq_emulator),
    )
    client.create_dataset("nycflights13")
    con = duckdb.connect(warehouse_path, read_only=True)
    where = {
        "flights": f"make_date(year, month, day) BETWEEN '{DAYS[0]}' AND '{DAYS[1]}'",
        "weather": f"make_date(year, month, day) BETWEEN '{DAYS[0]}' AND '{DAYS[1]}'",
        "planes": "tailnum IN (SELECT tailnum FROM nycflights13.flights"
        " WHERE month = 1 AND day <= 6)",
    }
    for table, cond in where.items():
        cols = con.execute(f"DESCRIBE nycflights13.{table}").fetchall()
        if table == "flights":
            cols = [c for c in cols if c[0] != "time_hour"]
        elif table == "weather":
            cols = [c for c in cols if c[0] != "time_hour"]
        schema = [bigquery.SchemaField(c[0], _bq_type(c[1])) for c in cols]
        ref = f"{PROJECT}.nycflights13.{table}"
        client.create_table(bigquery.Table(ref, schema=schema))
        names = ", ".join(c[0] for c in cols)
        rows = con.execute(f"SELECT {names} FROM nycflights13.{table} WHERE {cond}").fetch_df()
        records = rows.astype(object).where(rows.notna(), None).to_dict("records")
        for i in range(0, len(records), 2000):
            errors = client.insert_rows_json(ref, records[i : i + 2000])
            assert not errors, errors[:3]
    con.close()
    return client


def _configs(small_config, **overrides):
    cfg = small_config.override(
        {
            "warehouse.query_parameters": {"start_date": str(DAYS[0]), "end_date": str(DAYS[1])},
            "split.validation_start": "2013-01-04",
            "split.test_start": "2013-01-05",
            **overrides,
        }
    )
    bq_cfg = cfg.override(
        {
            "warehouse.backend": "bigquery",
            "warehouse.project": PROJECT,
            "warehouse.duckdb_path": None,
            "warehouse.source_dataset": f"{PROJECT}.nycflights13",
        }
    )
    return cfg, bq_cfg


def _same_splits(a_dir, b_dir, key):
    for split in SPLITS:
        a = read_split(a_dir, split).to_pandas()
        b = read_split(b_dir, split).to_pandas()
        a = a.sort_values(key).reset_index(drop=True)
        b = b.sort_values(key).reset_index(drop=True)
        assert list(a.columns) == list(b.columns)
        for col in a.columns:
            if a[col].dtype.kind == "f" or b[col].dtype.kind == "f":
                assert (
                    a[col].astype(float).fillna(-1e9).round(6).tolist()
                    == b[col].astype(float).fillna(-1e9).round(6).tolist()
                ), col
            else:
                assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), col


def test_bigquery_and_duckdb_ingest_the_same_rows(tmp_path, bq_client, small_config):
    cfg, bq_cfg = _configs(small_config)
    wh = BigQueryWarehouse(PROJECT, client=bq_client)
    bq = ingest(bq_cfg.warehouse, bq_cfg.data, bq_cfg.split, tmp_path / "bq", warehouse=wh)
    local = ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "duck")
    assert bq.rows == local.rows and sum(bq.rows.values()) > 3000
    assert local.rows["validation"] > 0 and local.rows["test"] > 0
    _same_splits(tmp_path / "bq", tmp_path / "duck", ["flight_date", "carrier", "flight", "origin"])


def test_hash_split_on_a_key_is_the_same_in_both_engines(tmp_path, bq_client, small_config):
    cfg, bq_cfg = _configs(small_config, **{"split.strategy": "hash", "split.column": "flight"})
    wh = BigQueryWarehouse(PROJECT, client=bq_client)
    bq = ingest(bq_cfg.warehouse, bq_cfg.data, bq_cfg.split, tmp_path / "bq", warehouse=wh)
    local = ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "duck")
    assert bq.rows == local.rows and min(bq.rows.values()) > 300
    _same_splits(tmp_path / "bq", tmp_path / "duck", ["flight_date", "carrier", "flight", "origin"])


@pytest.fixture(scope="module")
def own_rows(bq_client, tmp_path_factory):
    """The same small table of ints and strings (some NULL) in BigQuery and as a local
    Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from google.cloud import bigquery

    n = 400
    rows = {
        "id": list(range(n)),
        "name": [None if i % 9 == 0 else f"n{i % 17}" for i in range(n)],
        "qty": [None if i % 13 == 0 else i % 6 for i in range(n)],
        "y": [i % 2 for i in range(n)],
    }
    client = bq_client
    client.create_dataset("own")
    schema = [
        bigquery.SchemaField("id", "INT64"),
        bigquery.SchemaField("name", "STRING"),
        bigquery.SchemaField("qty", "INT64"),
        bigquery.SchemaField("y", "INT64"),
    ]
    client.create_table(bigquery.Table(f"{PROJECT}.own.rows", schema=schema))
    records = [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]
    assert not client.insert_rows_json(f"{PROJECT}.own.rows", records)
    path = tmp_path_factory.mktemp("own") / "rows.parquet"
    pq.write_table(pa.table(rows), path)
    return str(path)


@pytest.mark.parametrize("key", ["id", None])  # a key column; the whole row
def test_hash_split_of_your_own_table_is_the_same_in_both_engines(
    tmp_path, bq_client, own_rows, small_config, key
):
    common = {
        "warehouse.query_file": None,
        "warehouse.query_parameters": {},
        "data.label": "y",
        "data.numeric_features": ["qty"],
        "data.categorical_features": ["name"],
        "split.strategy": "hash",
        "split.column": key,
    }
    local = small_config.override(
        {
            **common,
            "warehouse.duckdb_path": None,
            "warehouse.table": "rows",
            "warehouse.tables": {"rows": own_rows},
        }
    )
    bq_cfg = small_config.override(
        {
            **common,
            "warehouse.backend": "bigquery",
            "warehouse.project": PROJECT,
            # the default project's dataset.table, or project.dataset.table
            "warehouse.table": "own.rows" if key else f"{PROJECT}.own.rows",
        }
    )
    wh = BigQueryWarehouse(PROJECT, client=bq_client)
    bq = ingest(bq_cfg.warehouse, bq_cfg.data, bq_cfg.split, tmp_path / "bq", warehouse=wh)
    duck = ingest(local.warehouse, local.data, local.split, tmp_path / "duck")
    for split in SPLITS:
        ids = [
            sorted(read_split(tmp_path / d, split).column("id").to_pylist()) for d in ("bq", "duck")
        ]
        assert ids[0] == ids[1] and len(ids[0]) > 20, split
    assert bq.rows == duck.rows and sum(bq.rows.values()) == 400
    for split in SPLITS:  # the same rows, types and order: the same stored table
        assert read_split(tmp_path / "bq", split).equals(read_split(tmp_path / "duck", split))


def test_farm_fingerprint_same_values_in_both_engines(bq_client, warehouse_path):
    sql = (
        "WITH example AS (SELECT 1 AS x, 'foo' AS y, true AS z"
        " UNION ALL SELECT 2, 'apple', false UNION ALL SELECT 3, '', true)"
        " SELECT x, FARM_FINGERPRINT(CONCAT(CAST(x AS STRING), y, CAST(z AS STRING))) AS f"
        " FROM example ORDER BY x"
    )
    documented = [-1541654101129638711, 2794438866806483259, -4880158226897771312]
    bq = BigQueryWarehouse(PROJECT, client=bq_client).query(sql, {})
    assert bq.column("f").to_pylist() == documented
    assert DuckDBWarehouse(warehouse_path).query(sql, {}).column("f").to_pylist() == documented


def test_bigquery_missing_parameter_is_caught_before_sending(bq_client):
    from torchkfp.config import ConfigError

    with pytest.raises(ConfigError, match="start_date"):
        BigQueryWarehouse(PROJECT, client=bq_client).query("SELECT @start_date AS d", {})
