"""BigQueryWarehouse through the real google-cloud-bigquery client against bqemulator.

The default tables are loaded the way a user loads them (``torchkfp.seed``: typed Parquet load
jobs, a resumable upload), and the same BigQuery-dialect query gives the same rows on the
emulator as on the embedded DuckDB path (sqlglot-transpiled), so local runs and cloud runs
ingest the same dataset.

What bqemulator 1.4.0 does and does not do (measured): it accepts resumable uploads but refuses
the client's multipart upload (load_table_from_dataframe, load_table_from_file with a size);
a dry-run job answers totalBytesProcessed 0 and no referencedTables; it ignores
maximumBytesBilled. So the cost controls are checked on the requests the client sends.
"""

import datetime as dt
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from bq_env import running_bqemulator

from torchkfp import artifacts
from torchkfp.artifacts.dataset import SPLITS, read_split
from torchkfp.ingest import ingest
from torchkfp.seed import SCHEMAS, seed_bigquery
from torchkfp.warehouse import BigQueryWarehouse, DuckDBWarehouse

pytestmark = pytest.mark.integration

PROJECT = "torchkfp-test"
DAYS = (dt.date(2013, 1, 1), dt.date(2013, 1, 6))  # a few days: results come back page by page


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """bqemulator running (REST and the Storage Read API's gRPC): its REST url and its
    gRPC ``host:port``."""
    with running_bqemulator(tmp_path_factory.mktemp("bqhome"), PROJECT) as (url, grpc):
        yield url, grpc


@pytest.fixture(scope="module")
def bq_emulator(emulator):
    return emulator[0]


@pytest.fixture(scope="module")
def storage_host(emulator):
    """The Storage Read API's ``host:port`` (BIGQUERY_STORAGE_EMULATOR_HOST)."""
    return emulator[1]


def _read_client(host: str):
    import grpc
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport,
    )

    return BigQueryReadClient(
        transport=BigQueryReadGrpcTransport(channel=grpc.insecure_channel(host))
    )


STAGING = "staging"


@pytest.fixture(scope="module")
def bq_wh(bq_client, storage_host):
    """The warehouse the way ingest streams from it: query job, then its result table (staged
    in ``STAGING``: bqemulator cannot read anonymous result tables) read through the Storage
    Read API in 4 parallel streams."""
    bq_client.create_dataset(STAGING, exists_ok=True)
    return BigQueryWarehouse(
        PROJECT, client=bq_client, read_client=_read_client(storage_host), staging_dataset=STAGING
    )


def _client(url: str, http=None):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=url),
        _http=http,
    )


@pytest.fixture(scope="module")
def seeded(bq_emulator):
    """The default tables, loaded by ``torchkfp.seed`` (typed Parquet load jobs) into
    ``PROJECT.nycflights13``; the SeedResult and the seconds it took."""
    t0 = time.perf_counter()
    result = seed_bigquery(PROJECT, "nycflights13", client=_client(bq_emulator))
    return result, time.perf_counter() - t0


@pytest.fixture(scope="module")
def bq_client(bq_emulator, seeded):
    return _client(bq_emulator)


@pytest.fixture()
def recorded(bq_emulator):
    """A client whose HTTP requests (method, url, JSON body) are recorded as they go out."""
    import json

    from google.auth.credentials import AnonymousCredentials
    from google.auth.transport.requests import AuthorizedSession

    sent = []
    session = AuthorizedSession(AnonymousCredentials())

    def record(response, *args, **kwargs):
        req = response.request
        body = req.body.decode() if isinstance(req.body, bytes) else req.body
        try:
            body = json.loads(body) if body else None
        except ValueError:
            pass
        sent.append((req.method, req.url, body))

    session.hooks["response"].append(record)
    return _client(bq_emulator, http=session), sent


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


def test_bigquery_and_duckdb_ingest_the_same_rows(tmp_path, bq_wh, small_config):
    cfg, bq_cfg = _configs(small_config)
    bq = ingest(bq_cfg.warehouse, bq_cfg.data, bq_cfg.split, tmp_path / "bq", warehouse=bq_wh)
    local = ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "duck")
    assert bq.rows == local.rows and sum(bq.rows.values()) > 3000
    assert local.rows["validation"] > 0 and local.rows["test"] > 0
    _same_splits(tmp_path / "bq", tmp_path / "duck", ["flight_date", "carrier", "flight", "origin"])
    # read through the Storage Read API, in several streams
    meta = artifacts.require(tmp_path / "bq", "dataset")
    assert meta["read"]["read"] == "storage api" and meta["read"]["streams"] == 4


def test_hash_split_on_a_key_is_the_same_in_both_engines(tmp_path, bq_wh, small_config):
    cfg, bq_cfg = _configs(small_config, **{"split.strategy": "hash", "split.column": "flight"})
    bq = ingest(bq_cfg.warehouse, bq_cfg.data, bq_cfg.split, tmp_path / "bq", warehouse=bq_wh)
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
    tmp_path, bq_wh, own_rows, small_config, key
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
    bq = ingest(bq_cfg.warehouse, bq_cfg.data, bq_cfg.split, tmp_path / "bq", warehouse=bq_wh)
    duck = ingest(local.warehouse, local.data, local.split, tmp_path / "duck")
    for split in SPLITS:
        ids = [
            sorted(read_split(tmp_path / d, split).column("id").to_pylist()) for d in ("bq", "duck")
        ]
        assert ids[0] == ids[1] and len(ids[0]) > 20, split
    assert bq.rows == duck.rows and sum(bq.rows.values()) == 400
    for split in SPLITS:  # the same rows and types (BigQuery's streams come in any order)
        got = [read_split(tmp_path / d, split).sort_by("id") for d in ("bq", "duck")]
        assert got[0].equals(got[1])


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


# ---- seeding: typed tables, NULLs, replace on re-seed --------------------------------------
def test_seed_loads_every_default_table_typed_with_nulls_as_null(bq_client, seeded, warehouse_path):
    result, seconds = seeded
    con = duckdb.connect(warehouse_path, read_only=True)
    try:
        for table, columns in SCHEMAS.items():
            got = bq_client.get_table(f"{PROJECT}.nycflights13.{table}")
            assert [(f.name, f.field_type) for f in got.schema] == columns, table
            duck_rows = con.execute(f"SELECT count(*) FROM nycflights13.{table}").fetchone()[0]
            assert result.rows[table] == got.num_rows == duck_rows, table
        # 'NA' became NULL, as in the DuckDB seed (a STRING 'NA' would fail these casts)
        for table, col in [
            ("flights", "arr_delay"),
            ("flights", "tailnum"),
            ("weather", "wind_gust"),
            ("planes", "speed"),
            ("airports", "tzone"),
        ]:
            sql = f"SELECT COUNTIF({col} IS NULL) AS n FROM nycflights13.{table}"
            [bq_nulls] = [r.n for r in bq_client.query(sql).result()]
            duck = con.execute(f"SELECT count(*) FROM nycflights13.{table} WHERE {col} IS NULL")
            assert bq_nulls == duck.fetchone()[0] > 0, (table, col)
    finally:
        con.close()
    assert seconds < 60  # ~2 s measured for all 368k rows


def test_reseeding_replaces_the_tables_and_creates_the_dataset(bq_emulator):
    client = _client(bq_emulator)
    first = seed_bigquery(PROJECT, "reseed", client=client, tables=("planes",), limit=50)
    assert client.get_dataset(f"{PROJECT}.reseed").location == "US"
    second = seed_bigquery(PROJECT, "reseed", client=client, tables=("planes",), limit=20)
    assert first.rows == {"planes": 50} and second.rows == {"planes": 20}
    assert client.get_table(f"{PROJECT}.reseed.planes").num_rows == 20  # replaced, not 70
    from torchkfp.config import ConfigError

    with pytest.raises(ConfigError, match="exists in location US, not --location=EU"):
        seed_bigquery(PROJECT, "reseed", location="EU", client=client, tables=("planes",))


def test_default_query_on_the_seeded_tables_matches_duckdb(bq_client, warehouse_path):
    from torchkfp.config import WarehouseConfig
    from torchkfp.ingest import query_params
    from torchkfp.warehouse import load_sql

    params = query_params(WarehouseConfig())  # the whole of 2013, as the default config
    bq = BigQueryWarehouse(PROJECT, client=bq_client)
    duck = DuckDBWarehouse(warehouse_path)
    bq_sql = load_sql("flights_delay.sql", f"{PROJECT}.nycflights13")
    duck_sql = load_sql("flights_delay.sql", "nycflights13")

    # the same columns and types (BigQuery's from a dry run); DuckDB types the literal ints of
    # IF(..., 1, 0) INT32 where BigQuery has only INT64
    def kinds(schema):
        return [(f.name, "int" if pa.types.is_integer(f.type) else str(f.type)) for f in schema]

    bq_schema = bq.result_schema(bq_sql, params)
    assert kinds(bq_schema) == kinds(duck.result_schema(duck_sql, params))
    assert bq_schema.field("flight_date").type == pa.date32()
    # the same number of rows over the year (counted in the engines: the rows themselves come
    # back from the emulator at ~5k rows/s)
    count = "SELECT COUNT(*) AS n, COUNTIF(temp IS NULL) AS no_weather FROM ({}) AS q"
    bq_n = bq.query(count.format(bq_sql), params).to_pylist()
    duck_n = duck.query(count.format(duck_sql), params).to_pylist()
    assert bq_n == duck_n and bq_n[0]["n"] > 300_000
    # and typed rows: a few days in full
    days = {"start_date": DAYS[0], "end_date": DAYS[1]}
    rows = bq.query(bq_sql, days)
    assert rows.num_rows == duck.query(duck_sql, days).num_rows > 3000
    assert rows.schema.field("flight_date").type == pa.date32()
    assert rows.schema.field("is_late").type == pa.int64()
    assert rows.schema.field("temp").type == pa.float64()


def test_cli_seeds_bigquery_through_the_emulator_host(bq_emulator, monkeypatch):
    import json

    from typer.testing import CliRunner

    from torchkfp.cli import app

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator)
    args = ["warehouse", "seed", "--backend", "bigquery", "--project", PROJECT]
    r = CliRunner().invoke(app, [*args, "--dataset", "cli_seed", "--limit", "100"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["backend"] == "bigquery" and out["target"] == f"{PROJECT}.cli_seed"
    assert out["rows"] == {
        "flights": 100,
        "weather": 100,
        "planes": 100,
        "airports": 100,
        "airlines": 16,
    }
    got = _client(bq_emulator).get_table(f"{PROJECT}.cli_seed.flights")
    assert got.num_rows == 100 and got.schema[-1].field_type == "TIMESTAMP"
    # bad input: exit 2, one line naming the option
    r = CliRunner().invoke(app, [*args, "--dataset", "no-dashes"])
    assert r.exit_code == 2 and "--dataset='no-dashes' is not a BigQuery dataset name" in r.stderr
    r = CliRunner().invoke(app, ["warehouse", "seed", "--backend", "bigquery"])
    assert r.exit_code == 2 and "needs --project" in r.stderr


# ---- cost controls: labels, maximum_bytes_billed, dry runs ---------------------------------
def _job_posts(sent):
    return [
        body
        for method, url, body in sent
        if method == "POST" and url.split("?")[0].endswith("/jobs")
    ]


def test_query_jobs_carry_the_labels_and_the_byte_cap(seeded, recorded):
    client, sent = recorded
    labels = {"team": "ml", "app": "torchkfp"}
    wh = BigQueryWarehouse(PROJECT, client=client, labels=labels, maximum_bytes_billed=10**9)
    sql = "SELECT carrier, COUNT(*) AS n FROM nycflights13.flights WHERE month = @m GROUP BY 1"
    table = wh.query(sql, {"m": 1})
    assert table.num_rows == 16
    schema = wh.result_schema(sql, {"m": 1})
    assert schema.names == ["carrier", "n"]
    plan = wh.dry_run(sql, {"m": 1})
    [real, schema_job, dry_job] = _job_posts(sent)
    # the real query: labels and the cap, as the client sent them
    assert real["configuration"]["labels"] == labels
    assert real["configuration"]["query"]["maximumBytesBilled"] == "1000000000"
    assert real["configuration"]["query"]["queryParameters"][0]["name"] == "m"
    # dry runs (the schema, the estimate): labelled, no cache, no cap (they bill nothing)
    for job in (schema_job, dry_job):
        assert job["configuration"]["dryRun"] is True
        assert job["configuration"]["labels"] == labels
        assert job["configuration"]["query"]["useQueryCache"] is False
        assert "maximumBytesBilled" not in job["configuration"]["query"]
    # bqemulator plans the query but estimates no bytes and names no tables
    assert plan.total_bytes_processed == 0 and plan.referenced_tables == []


def test_open_warehouse_takes_labels_and_cap_from_the_config(small_config):
    from torchkfp.warehouse import open_warehouse

    cfg = small_config.override(
        {
            "warehouse.backend": "bigquery",
            "warehouse.project": PROJECT,
            "warehouse.labels": {"team": "ml"},
            "warehouse.maximum_bytes_billed": 5_000_000,
        }
    )
    wh = open_warehouse(cfg.warehouse)
    job = wh.job_config("SELECT @x AS x", {"x": 1})
    assert job.labels == {"team": "ml"} and job.maximum_bytes_billed == 5_000_000
    dry = wh.job_config("SELECT @x AS x", {"x": 1}, dry_run=True)
    assert dry.dry_run and dry.labels == {"team": "ml"} and dry.maximum_bytes_billed is None
    plain = open_warehouse(
        small_config.override(
            {"warehouse.backend": "bigquery", "warehouse.project": PROJECT}
        ).warehouse
    )
    assert plain.job_config("SELECT 1", {}).labels == {}
    assert plain.job_config("SELECT 1", {}).maximum_bytes_billed is None


# ---- submit --dry-run: the ingest query's estimate ------------------------------------------
TRAIN_IMAGE = f"us-central1-docker.pkg.dev/{PROJECT}/torchkfp/torchkfp-train:0.1.0"
SERVE_IMAGE = f"us-central1-docker.pkg.dev/{PROJECT}/torchkfp/torchkfp-serve:0.1.0"


def _vertex_config(tmp_path, **overrides) -> str:
    import yaml

    from torchkfp.config import Config

    example = Path(__file__).resolve().parents[1] / "configs" / "vertex.example.yaml"
    cfg = Config.load(example, resolve_paths=False).override(
        {
            "warehouse.project": PROJECT,
            "warehouse.source_dataset": f"{PROJECT}.nycflights13",
            "vertex.project": PROJECT,
            "vertex.pipeline_root": "gs://tkfp-estimate/root",
            "vertex.service_account": f"torchkfp@{PROJECT}.iam.gserviceaccount.com",
            "vertex.training_image": TRAIN_IMAGE,
            "vertex.serving_image": SERVE_IMAGE,
            **overrides,
        }
    )
    path = tmp_path / "vertex.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def test_submit_dry_run_prints_the_ingest_query_estimate(
    seeded, bq_emulator, tmp_path, monkeypatch
):
    import json

    from typer.testing import CliRunner

    from torchkfp.cli import app

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator)
    conf = _vertex_config(
        tmp_path,
        **{"warehouse.maximum_bytes_billed": 10**10, "warehouse.labels": {"team": "ml"}},
    )
    r = CliRunner().invoke(app, ["submit", "-c", conf, "--dry-run"])
    assert r.exit_code == 0, r.output
    # bqemulator estimates 0 bytes; real BigQuery gives the bytes of the columns read
    assert (
        "query estimate (warehouse.query_file=flights_delay.sql on bigquery:torchkfp-test): "
        "0 bytes (0 B); warehouse.maximum_bytes_billed=10,000,000,000 (9.3 GiB)"
    ) in r.stderr
    request = json.loads(r.stdout)  # stdout stays the request
    params = request["body"]["runtimeConfig"]["parameterValues"]
    assert params["vertex_config"]["serving_image"] == SERVE_IMAGE
    assert params["warehouse_config"]["labels"] == {"team": "ml"}


def test_submit_dry_run_checks_the_query_against_the_config_first(
    seeded, bq_emulator, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from torchkfp.cli import app

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator)
    # a feature the query does not return: refused before the run, naming the column
    conf = _vertex_config(tmp_path, **{"data.numeric_features": ["temp", "no_such_column"]})
    r = CliRunner().invoke(app, ["submit", "-c", conf, "--dry-run"])
    assert r.exit_code == 2, r.output
    assert "the ingest query does not fit the config" in r.stderr
    assert "no_such_column" in r.stderr
    # a dataset that is not there: BigQuery's own error, exit 1, and how to skip the estimate
    conf = _vertex_config(tmp_path, **{"warehouse.source_dataset": f"{PROJECT}.missing"})
    r = CliRunner().invoke(app, ["submit", "-c", conf, "--dry-run"])
    assert r.exit_code == 1, r.output
    assert "the BigQuery dry run of the ingest query in project torchkfp-test" in r.stderr
    assert "--no-estimate" in r.stderr
    r = CliRunner().invoke(app, ["submit", "-c", conf, "--dry-run", "--no-estimate"])
    assert r.exit_code == 0 and "query estimate" not in r.stderr


def test_an_estimate_over_the_byte_cap_is_refused():
    from torchkfp.vertex.estimate import QueryEstimate, QueryOverBudget, check_budget

    over = QueryEstimate(
        3 * 10**12, 10**9, ["p.d.flights"], "bigquery:p", "warehouse.query_file=q.sql"
    )
    with pytest.raises(QueryOverBudget) as e:
        check_budget(over)
    assert "would process 3,000,000,000,000 bytes (2.7 TiB), over " in str(e.value)
    assert "warehouse.maximum_bytes_billed=1,000,000,000 (953.7 MiB)" in str(e.value)
    assert "raise warehouse.maximum_bytes_billed" in str(e.value)
    assert check_budget(QueryEstimate(10**9, 10**9)).over_budget is False  # at the cap: fine
    assert check_budget(QueryEstimate(None, 1)).over_budget is False  # no estimate (DuckDB)
    assert check_budget(QueryEstimate(10**12, None)).over_budget is False  # no cap


# ---- streaming: the Storage Read API in parallel streams, REST as the fallback -------------
def _sorted_rows(table, key=("flight_date", "carrier", "flight", "origin", "dep_hour")):
    return table.sort_by([(k, "ascending") for k in key]).to_pylist()


def _days_query():
    from torchkfp.warehouse import load_sql

    days = {"start_date": DAYS[0], "end_date": DAYS[1]}
    return (
        load_sql("flights_delay.sql", f"{PROJECT}.nycflights13"),
        load_sql("flights_delay.sql", "nycflights13"),
        days,
    )


def test_storage_read_streams_give_the_same_rows_as_duckdb(bq_wh, bq_client, warehouse_path):
    bq_sql, duck_sql, days = _days_query()
    with bq_wh.stream(bq_sql, days, batch_rows=500) as rows:
        assert rows.info == {
            "engine": "bigquery",
            "read": "storage api",
            "streams": 4,
            "staged": True,
        }
        batches = list(rows)
    assert all(0 < b.num_rows <= 500 for b in batches)
    bq = pa.Table.from_batches(batches, schema=rows.schema)
    duck = DuckDBWarehouse(warehouse_path).stream(duck_sql, days).read_all()
    assert bq.num_rows == duck.num_rows > 3000
    assert bq.schema.names == duck.schema.names
    assert not any(f.metadata for f in bq.schema)  # the emulator's field metadata is dropped
    assert _sorted_rows(bq) == _sorted_rows(duck)
    # the staged result table is gone once read
    assert [t.table_id for t in bq_client.list_tables(f"{PROJECT}.{STAGING}")] == []


def test_storage_read_of_no_rows_keeps_the_schema_and_early_close_cleans_up(bq_wh, bq_client):
    bq_sql, _, _ = _days_query()
    empty = {"start_date": dt.date(2014, 1, 1), "end_date": dt.date(2014, 1, 2)}
    with bq_wh.stream(bq_sql, empty) as rows:
        assert list(rows) == []
        assert rows.schema.names[:3] == ["flight_date", "carrier", "flight"]
        assert rows.schema.field("flight_date").type == pa.date32()
    rows = bq_wh.stream(bq_sql, {"start_date": DAYS[0], "end_date": DAYS[1]}, batch_rows=100)
    first = next(rows)
    assert first.num_rows == 100
    rows.close()  # stops the reader threads and drops the staged table
    assert [t.table_id for t in bq_client.list_tables(f"{PROJECT}.{STAGING}")] == []


def test_streamed_query_job_carries_the_labels_and_the_byte_cap(seeded, recorded, storage_host):
    client, sent = recorded
    client.create_dataset(STAGING, exists_ok=True)
    wh = BigQueryWarehouse(
        PROJECT,
        client=client,
        labels={"team": "ml"},
        maximum_bytes_billed=10**9,
        read_client=_read_client(storage_host),
        staging_dataset=STAGING,
    )
    sql = "SELECT carrier, COUNT(*) AS n FROM nycflights13.flights WHERE month = @m GROUP BY 1"
    assert wh.stream(sql, {"m": 1}).read_all().num_rows == 16
    [job] = _job_posts(sent)
    assert job["configuration"]["labels"] == {"team": "ml"}
    assert job["configuration"]["query"]["maximumBytesBilled"] == "1000000000"
    text = job["configuration"]["query"]["query"]
    assert text.startswith(f"CREATE TABLE `{PROJECT}.{STAGING}.torchkfp_")
    assert "expiration_timestamp" in text and text.endswith(sql)


class _NoStorageApi:
    """A gRPC server answering the Storage Read API's CreateReadSession the way BigQuery does
    in a project where the API is not enabled (PERMISSION_DENIED)."""

    MESSAGE = (
        "BigQuery Storage API has not been used in project 123 before or it is disabled. "
        "Enable it by visiting https://console.developers.google.com/apis/api/"
        "bigquerystorage.googleapis.com/overview?project=123"
    )

    def __enter__(self):
        from concurrent import futures

        import grpc

        def deny(request, context):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, self.MESSAGE)

        handler = grpc.method_handlers_generic_handler(
            "google.cloud.bigquery.storage.v1.BigQueryRead",
            {"CreateReadSession": grpc.unary_unary_rpc_method_handler(deny)},
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        return f"127.0.0.1:{port}"

    def __exit__(self, *exc):
        self.server.stop(grace=None)


def test_without_the_storage_api_the_result_is_read_over_rest(bq_client, warehouse_path, caplog):
    import logging

    bq_sql, duck_sql, days = _days_query()
    duck = DuckDBWarehouse(warehouse_path).query(duck_sql, days)
    with _NoStorageApi() as host, caplog.at_level(logging.WARNING, "torchkfp.warehouse"):
        wh = BigQueryWarehouse(
            PROJECT, client=bq_client, read_client=_read_client(host), staging_dataset=STAGING
        )
        with wh.stream(bq_sql, days, batch_rows=1000) as rows:
            assert rows.info["read"] == "rest" and "PermissionDenied" not in rows.info["why"]
            assert "has not been used in project 123" in rows.info["why"]
            rest = pa.Table.from_batches(list(rows), schema=rows.schema)
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.getMessage().startswith(
        "reading the BigQuery result over REST pages (slower): the BigQuery Storage Read API "
        "is not usable: 403 BigQuery Storage API has not been used in project 123"
    )
    assert _sorted_rows(rest) == _sorted_rows(duck)
    assert [t.table_id for t in bq_client.list_tables(f"{PROJECT}.{STAGING}")] == []
    # asked for REST: the job's own (anonymous) result table, page by page
    wh = BigQueryWarehouse(PROJECT, client=bq_client, storage_read=False)
    with wh.stream(bq_sql, days) as rows:
        assert rows.info["read"] == "rest" and rows.info["staged"] is False
        assert _sorted_rows(rows.read_all()) == _sorted_rows(duck)


def test_ingest_from_the_config_with_the_emulator_hosts(
    tmp_path, bq_emulator, storage_host, seeded, small_config, monkeypatch
):
    """The environment a user sets for an emulator: open_warehouse finds both hosts, stages
    results in the default staging dataset (created) and reads them in parallel streams."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator)
    monkeypatch.setenv("BIGQUERY_STORAGE_EMULATOR_HOST", storage_host)
    cfg, bq_cfg = _configs(small_config)
    bq = ingest(bq_cfg.warehouse, bq_cfg.data, bq_cfg.split, tmp_path / "bq")
    local = ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "duck")
    assert bq.rows == local.rows
    meta = artifacts.require(tmp_path / "bq", "dataset")
    assert meta["read"] == {
        "engine": "bigquery",
        "read": "storage api",
        "streams": 4,
        "staged": True,
    }
    _same_splits(tmp_path / "bq", tmp_path / "duck", ["flight_date", "carrier", "flight", "origin"])
    # without the Storage Read API's host: REST, saying why
    monkeypatch.delenv("BIGQUERY_STORAGE_EMULATOR_HOST")
    ingest(bq_cfg.warehouse, bq_cfg.data, bq_cfg.split, tmp_path / "rest")
    meta = artifacts.require(tmp_path / "rest", "dataset")
    assert (
        meta["read"]["read"] == "rest" and "BIGQUERY_STORAGE_EMULATOR_HOST" in meta["read"]["why"]
    )
    assert meta["fingerprint"] == bq.fingerprint  # the same rows, read another way
