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
from torchkfp.warehouse import BigQueryWarehouse

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


def test_bigquery_and_duckdb_ingest_the_same_rows(tmp_path, bq_client, small_config):
    cfg = small_config.override(
        {
            "data.start_date": str(DAYS[0]),
            "data.validation_start": "2013-01-04",
            "data.test_start": "2013-01-05",
            "data.end_date": str(DAYS[1]),
        }
    )
    bq_cfg = cfg.override(
        {
            "warehouse.backend": "bigquery",
            "warehouse.project": PROJECT,
            "warehouse.source_dataset": f"{PROJECT}.nycflights13",
        }
    )
    wh = BigQueryWarehouse(PROJECT, client=bq_client)
    bq = ingest(bq_cfg.warehouse, bq_cfg.data, tmp_path / "bq", warehouse=wh)
    local = ingest(cfg.warehouse, cfg.data, tmp_path / "duck")
    assert bq.rows == local.rows and sum(bq.rows.values()) > 3000
    for split in SPLITS:
        a = read_split(tmp_path / "bq", split).to_pandas()
        b = read_split(tmp_path / "duck", split).to_pandas()
        key = ["flight_date", "carrier", "flight", "origin"]
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


def test_bigquery_missing_parameter_is_caught_before_sending(bq_client):
    from torchkfp.config import ConfigError

    with pytest.raises(ConfigError, match="start_date"):
        BigQueryWarehouse(PROJECT, client=bq_client).query("SELECT @start_date AS d", {})
