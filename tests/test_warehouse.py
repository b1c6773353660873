"""torchkfp.warehouse: BigQuery-dialect SQL on the embedded DuckDB, the query file, parameters."""

import datetime as dt

import duckdb
import pytest

from torchkfp.config import ConfigError, DataConfig
from torchkfp.ingest import query_params
from torchkfp.warehouse import DuckDBWarehouse, load_sql


def test_bigquery_sql_runs_on_duckdb_with_bigquery_semantics(warehouse_path):
    wh = DuckDBWarehouse(warehouse_path)
    # FORMAT_DATE('%A') gives the same day names in both engines (EXTRACT(DAYOFWEEK) does not)
    t = wh.query(
        "SELECT FORMAT_DATE('%A', DATE(2013, 1, 1)) AS d, DIV(515, 100) AS h, MOD(515, 100) AS m,"
        " IF(20 >= 15, 1, 0) AS late, SAFE_CAST('x' AS INT64) AS bad",
        {},
    ).to_pylist()[0]
    assert t == {"d": "Tuesday", "h": 5, "m": 15, "late": 1, "bad": None}


def test_query_params_are_the_data_dates():
    d = DataConfig(
        start_date="2013-01-01",
        validation_start="2013-01-22",
        test_start="2013-01-27",
        end_date="2013-01-31",
    )
    assert query_params(d) == {
        "start_date": dt.date(2013, 1, 1),
        "end_date": dt.date(2013, 1, 31),
        "validation_start": dt.date(2013, 1, 22),
        "test_start": dt.date(2013, 1, 27),
    }


def test_flights_query_rows_split_and_no_duplicates(warehouse_path):
    wh = DuckDBWarehouse(warehouse_path)
    sql = load_sql("flights_delay.sql", "nycflights13")
    params = query_params(
        DataConfig(
            start_date="2013-01-01",
            validation_start="2013-01-22",
            test_start="2013-01-27",
            end_date="2013-01-31",
        )
    )
    df = wh.query(sql, params).to_pandas()
    # January 2013 flights from NYC that arrived (arr_delay present), counted independently
    con = duckdb.connect(warehouse_path, read_only=True)
    expected = con.execute(
        "SELECT count(*) FROM nycflights13.flights WHERE month = 1 AND arr_delay IS NOT NULL"
    ).fetchone()[0]
    con.close()
    assert len(df) == expected
    assert set(df["split"]) == {"train", "validation", "test"}
    assert df.loc[df.split == "train", "flight_date"].max() < dt.date(2013, 1, 22)
    assert df.loc[df.split == "test", "flight_date"].min() >= dt.date(2013, 1, 27)
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
