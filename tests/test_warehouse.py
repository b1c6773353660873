"""torchkfp.warehouse: BigQuery-dialect SQL on the embedded DuckDB, the query file, parameters."""

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from torchkfp.config import ConfigError, WarehouseConfig
from torchkfp.ingest import query_params
from torchkfp.warehouse import DuckDBWarehouse, load_sql, open_warehouse


def test_bigquery_sql_runs_on_duckdb_with_bigquery_semantics(warehouse_path):
    wh = DuckDBWarehouse(warehouse_path)
    # FORMAT_DATE('%A') gives the same day names in both engines (EXTRACT(DAYOFWEEK) does not)
    t = wh.query(
        "SELECT FORMAT_DATE('%A', DATE(2013, 1, 1)) AS d, DIV(515, 100) AS h, MOD(515, 100) AS m,"
        " IF(20 >= 15, 1, 0) AS late, SAFE_CAST('x' AS INT64) AS bad",
        {},
    ).to_pylist()[0]
    assert t == {"d": "Tuesday", "h": 5, "m": 15, "late": 1, "bad": None}


def test_query_params_come_from_the_warehouse_section_with_dates_as_dates():
    wc = WarehouseConfig(
        query_parameters={"start_date": "2013-01-01", "n": 3, "f": 0.5, "b": True, "s": "JFK"}
    )
    assert query_params(wc) == {
        "start_date": dt.date(2013, 1, 1),
        "n": 3,
        "f": 0.5,
        "b": True,
        "s": "JFK",
    }
    with pytest.raises(ConfigError, match="'2013-02-30' is not a valid date"):
        query_params(WarehouseConfig(query_parameters={"d": "2013-02-30"}))
    with pytest.raises(
        ConfigError, match="'torchkfp_x' starts with 'torchkfp_', which is reserved"
    ):
        query_params(WarehouseConfig(query_parameters={"torchkfp_x": 1}))


def test_flights_query_returns_rows_without_a_split(warehouse_path):
    wh = DuckDBWarehouse(warehouse_path)
    sql = load_sql("flights_delay.sql", "nycflights13")
    params = query_params(
        WarehouseConfig(query_parameters={"start_date": "2013-01-01", "end_date": "2013-01-31"})
    )
    df = wh.query(sql, params).to_pandas()
    # January 2013 flights from NYC that arrived (arr_delay present), counted independently
    con = duckdb.connect(warehouse_path, read_only=True)
    expected = con.execute(
        "SELECT count(*) FROM nycflights13.flights WHERE month = 1 AND arr_delay IS NOT NULL"
    ).fetchone()[0]
    con.close()
    assert len(df) == expected
    assert "split" not in df.columns  # ingest adds the split (split section)
    assert df["flight_date"].min() == dt.date(2013, 1, 1)
    assert df["flight_date"].max() == dt.date(2013, 1, 31)
    assert set(df["is_late"].unique()) == {0, 1}
    assert df["day_of_week"].iloc[0] == "Tuesday"  # 2013-01-01
    assert not df.duplicated(["flight_date", "carrier", "flight", "origin", "dep_hour"]).any()


def test_query_parameter_missing_is_a_clear_error(warehouse_path):
    with pytest.raises(ConfigError, match=r"\['d'\] have no value"):
        DuckDBWarehouse(warehouse_path).query("SELECT @d AS x", {})


def test_query_file_packaged_or_on_disk_with_the_dataset_filled_in(tmp_path):
    packaged = load_sql("flights_delay.sql", "my-project.nycflights13")
    assert "`my-project.nycflights13.flights`" in packaged
    assert "${source_dataset}" not in packaged
    own = tmp_path / "q.sql"
    own.write_text("SELECT * FROM `${source_dataset}.flights` WHERE month = @m")
    assert load_sql(str(own), "ds") == "SELECT * FROM `ds.flights` WHERE month = @m"
    with pytest.raises(ConfigError, match=r"neither a file nor a packaged query.*flights_delay"):
        load_sql("nope.sql", "nycflights13")
    with pytest.raises(ConfigError, match="invalid dataset identifier"):
        load_sql(str(own), "ds`; DROP TABLE x; --")


def test_farm_fingerprint_gives_bigquerys_documented_values(warehouse_path):
    # https://cloud.google.com/bigquery/docs/reference/standard-sql/hash_functions
    for wh in (DuckDBWarehouse(warehouse_path), DuckDBWarehouse(None)):
        row = wh.query(
            "WITH example AS (SELECT 1 AS x, 'foo' AS y, true AS z"
            " UNION ALL SELECT 2, 'apple', false UNION ALL SELECT 3, '', true)"
            " SELECT FARM_FINGERPRINT(CONCAT(CAST(x AS STRING), y, CAST(z AS STRING))) AS f"
            " FROM example ORDER BY x",
            {},
        ).column("f")
        assert row.to_pylist() == [
            -1541654101129638711,
            2794438866806483259,
            -4880158226897771312,
        ]
        assert wh.query("SELECT FARM_FINGERPRINT(NULL) AS f", {}).to_pylist() == [{"f": None}]


def test_a_mistyped_duckdb_path_is_an_error_and_creates_nothing(tmp_path):
    path = tmp_path / ".data" / "warehouse.duckbd"
    with pytest.raises(ConfigError, match=r"warehouse.duckdb_path='.*warehouse.duckbd' does not"):
        DuckDBWarehouse(path).query("SELECT 1 AS x", {})
    assert not path.exists() and not path.parent.exists()


def test_only_the_default_duckdb_path_is_seeded(tmp_path, monkeypatch, warehouse_path):
    import shutil

    import torchkfp.warehouse as warehouse

    seeded = []

    def fake_seed(path, schema="nycflights13"):  # the real seed_duckdb is conftest's fixture
        seeded.append((str(path), schema))
        shutil.copy(warehouse_path, path)

    monkeypatch.setattr(warehouse, "seed_duckdb", fake_seed)
    path = tmp_path / ".data" / "warehouse.duckdb"
    path.parent.mkdir()
    wh = open_warehouse(WarehouseConfig(duckdb_path=str(path)))
    n = wh.query("SELECT count(*) AS n FROM nycflights13.airlines", {}).to_pylist()
    assert seeded == [(str(path), "nycflights13")] and n == [{"n": 16}]
    wh.query("SELECT 1 AS x", {})
    assert len(seeded) == 1  # seeded once, on first use


def test_no_duckdb_path_is_an_in_memory_database_with_your_tables(tmp_path):
    (tmp_path / "a.csv").write_text("k,v\n1,x\n2,\n")
    wc = WarehouseConfig(
        duckdb_path=None,
        query_file=None,
        table="a",
        tables={"a": str(tmp_path / "a.csv")},
    )
    wh = open_warehouse(wc)
    assert wh.describe() == "duckdb::memory: tables=['a']"
    assert wh.query("SELECT * FROM a ORDER BY k", {}).to_pylist() == [
        {"k": 1, "v": "x"},
        {"k": 2, "v": None},
    ]
    assert wh.result_schema("SELECT k FROM a", {}) == pa.schema([("k", pa.int64())])
    with pytest.raises(duckdb.CatalogException, match="flights"):
        wh.query("SELECT * FROM nycflights13.flights", {})


# ---- dry runs and seeding -------------------------------------------------------------------
def test_duckdb_dry_run_names_the_tables_and_plans_the_query(warehouse_path):
    from torchkfp.warehouse import DryRun

    wh = DuckDBWarehouse(warehouse_path)
    sql = load_sql("flights_delay.sql", "nycflights13")
    params = query_params(WarehouseConfig())
    plan = wh.dry_run(sql, params)
    assert plan == DryRun(
        None, ["nycflights13.flights", "nycflights13.planes", "nycflights13.weather"]
    )
    # CTE names are not tables; a broken query fails as it would for real
    assert wh.dry_run("WITH a AS (SELECT 1 AS x) SELECT * FROM a", {}).referenced_tables == []
    with pytest.raises(duckdb.CatalogException, match="no_such_table"):
        wh.dry_run("SELECT * FROM nycflights13.no_such_table", {})
    with pytest.raises(ConfigError, match="start_date"):
        wh.dry_run(sql, {})


def test_seed_schemas_are_the_types_duckdb_infers_and_na_is_null(warehouse_path):
    from torchkfp.seed import SCHEMAS, arrow_schema, read_table

    duck_types = {
        "BIGINT": "INT64",
        "DOUBLE": "FLOAT64",
        "VARCHAR": "STRING",
        "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
    }
    con = duckdb.connect(warehouse_path, read_only=True)
    try:
        for table, columns in SCHEMAS.items():
            described = con.execute(f"DESCRIBE nycflights13.{table}").fetchall()
            assert [(c[0], duck_types[c[1]]) for c in described] == columns, table
        planes = read_table("planes")
        assert planes.schema == arrow_schema("planes")
        duck = con.execute("SELECT count(*) FROM nycflights13.planes WHERE speed IS NULL")
        assert planes.column("speed").null_count == duck.fetchone()[0] > 3000
        assert "NA" not in planes.column("type").to_pylist()
        flights = read_table("flights", limit=10)
        assert flights.num_rows == 10
        assert flights.column("time_hour").type == pa.timestamp("us", tz="UTC")
        assert flights.column("time_hour")[0].as_py().isoformat() == "2013-01-01T10:00:00+00:00"
    finally:
        con.close()


def test_cli_seeds_duckdb_and_reseeding_replaces_the_file(tmp_path):
    import json

    from typer.testing import CliRunner

    from torchkfp.cli import app

    path = tmp_path / "wh" / "seeded.duckdb"
    args = ["warehouse", "seed", "--backend", "duckdb", "--path", str(path)]
    r = CliRunner().invoke(app, [*args, "--limit", "30"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["rows"] == {
        "flights": 30,
        "weather": 30,
        "planes": 30,
        "airports": 30,
        "airlines": 16,
    }
    r = CliRunner().invoke(app, [*args, "--limit", "5", "--dataset", "other"])
    assert r.exit_code == 0, r.output
    con = duckdb.connect(str(path), read_only=True)
    try:
        schemas = {
            row[0] for row in con.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()
        }
        assert "other" in schemas and "nycflights13" not in schemas  # a new file, not added to
        assert con.execute("SELECT count(*) FROM other.flights").fetchone()[0] == 5
    finally:
        con.close()
    # the seeded file is a warehouse the default query runs on
    wh = DuckDBWarehouse(path, schema="other")
    assert wh.query("SELECT count(*) AS n FROM other.weather", {}).to_pylist() == [{"n": 5}]
    r = CliRunner().invoke(
        app, ["warehouse", "seed", "--backend", "duckdb", "--path", str(tmp_path)]
    )
    assert r.exit_code == 2 and "is a folder" in r.stderr
    r = CliRunner().invoke(app, ["warehouse", "seed", "--backend", "sqlite"])
    assert r.exit_code == 2 and "use bigquery or duckdb" in r.stderr


# ---- streaming -------------------------------------------------------------------------------
def _spill_folders(root) -> list:
    return sorted(p.name for p in root.iterdir())


def test_duckdb_stream_yields_bounded_batches_and_the_same_rows_as_query(warehouse_path):
    wh = DuckDBWarehouse(warehouse_path)
    sql = load_sql("flights_delay.sql", "nycflights13")
    params = query_params(
        WarehouseConfig(query_parameters={"start_date": "2013-01-01", "end_date": "2013-01-10"})
    )
    with wh.stream(sql, params, batch_rows=1000) as rows:
        assert rows.info["engine"] == "duckdb"
        batches = list(rows)
    assert len(batches) > 5 and all(0 < b.num_rows <= 1000 for b in batches)
    streamed = pa.Table.from_batches(batches, schema=rows.schema)
    assert streamed.equals(wh.query(sql, params))  # the same rows, in the query's ORDER BY
    # no rows: no batches, and the schema all the same
    none = query_params(
        WarehouseConfig(query_parameters={"start_date": "2014-01-01", "end_date": "2014-01-10"})
    )
    with wh.stream(sql, none) as rows:
        assert list(rows) == [] and rows.schema == streamed.schema
    with pytest.raises(ConfigError, match=r"\['start_date'\] have no value"):
        wh.stream("SELECT @start_date AS d", {})
    with pytest.raises(ValueError, match="batch_rows=0 must be a positive number"):
        wh.stream(sql, params, batch_rows=0)


def test_duckdb_connections_have_the_memory_limit_and_a_spill_folder_of_their_own(tmp_path):
    wh = DuckDBWarehouse(None, memory_limit="64MB", temp_directory=tmp_path, threads=1)
    con = wh.connect()
    try:
        limit, spill, threads = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory'), "
            "current_setting('threads')"
        ).fetchone()
        assert limit in ("64.0 MB", "61.0 MiB") and threads == 1
        assert Path(spill).parent == tmp_path and Path(spill).is_dir()
    finally:
        con.close()
    assert _spill_folders(tmp_path) == []  # removed with the connection
    with pytest.raises(ConfigError, match=r"memory_limit='lots' is not a memory size"):
        DuckDBWarehouse(None, memory_limit="lots")


def test_duckdb_stream_spills_a_sort_bigger_than_its_memory_limit(tmp_path):
    # ~1.5M rows of (BIGINT, VARCHAR): about 40 MB to sort under a 24 MB limit
    wh = DuckDBWarehouse(None, memory_limit="24MB", temp_directory=tmp_path, threads=1)
    sql = (
        "SELECT x, CONCAT(CAST(x AS STRING), 'abcdefgh') AS s "
        "FROM UNNEST(GENERATE_ARRAY(1, 1500000)) AS x ORDER BY -x"
    )
    spilled = set()
    with wh.stream(sql, {}, batch_rows=100_000) as rows:
        n, first = 0, None
        for batch in rows:
            first = batch.column("x")[0].as_py() if first is None else first
            n += batch.num_rows
            spilled.update(p.name for p in tmp_path.glob("*/*"))
    assert n == 1_500_000 and first == 1_500_000
    assert any(name.startswith("duckdb_temp") for name in spilled), spilled
    assert _spill_folders(tmp_path) == []


def test_closing_a_stream_early_frees_its_connection(tmp_path, warehouse_path):
    wh = DuckDBWarehouse(warehouse_path, temp_directory=tmp_path)
    sql = "SELECT * FROM nycflights13.flights"
    rows = wh.stream(sql, {}, batch_rows=100)
    assert next(rows).num_rows == 100
    assert len(_spill_folders(tmp_path)) == 1
    rows.close()
    assert _spill_folders(tmp_path) == [] and list(rows) == []
    with wh.stream(sql, {}, batch_rows=100) as rows:
        next(rows)
    assert _spill_folders(tmp_path) == []
    # read to the end: closed too
    assert sum(b.num_rows for b in wh.stream("SELECT 1 AS x", {})) == 1
    assert _spill_folders(tmp_path) == []


def test_open_warehouse_gives_duckdb_its_streaming_defaults(warehouse_path):
    from torchkfp.warehouse import DEFAULT_DUCKDB_MEMORY_LIMIT

    wh = open_warehouse(WarehouseConfig(duckdb_path=warehouse_path))
    assert wh.memory_limit == DEFAULT_DUCKDB_MEMORY_LIMIT == "1GB"
    assert wh.temp_directory is None and wh.threads is None
