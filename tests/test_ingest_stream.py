"""Ingest as a stream: batches checked, counted, fingerprinted and written as shards while the
rows are read (real DuckDB over Parquet files registered through warehouse.tables)."""

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_splits import config, events

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.errors import DataValidationError
from torchkfp.ingest import (
    SplitTally,
    fingerprint,
    ingest,
    query_params,
    source_query,
    split_query,
)
from torchkfp.warehouse import open_warehouse


def _write(tmp_path: Path, name: str, table: pa.Table) -> str:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return str(path)


def _run(cfg, out, **kw):
    return ingest(cfg.warehouse, cfg.data, cfg.split, out, **kw)


def _shards(out: Path, split: str) -> list[int]:
    return [pq.read_metadata(f).num_rows for f in sorted((out / split).glob("part-*.parquet"))]


def test_rows_stream_into_full_shards_in_the_order_read(tmp_path):
    n = 9000
    cfg = config(
        {"events": _write(tmp_path, "events", events(n))},
        **{"data.rows_per_shard": 1000, "split.strategy": "column", "split.column": "fold"},
    )
    small = _run(cfg, tmp_path / "small", batch_rows=700)  # batches cut across shards
    big = _run(cfg, tmp_path / "big")  # one batch
    assert small.rows == big.rows == {"train": 5400, "validation": 1800, "test": 1800}
    assert small.fingerprint == big.fingerprint  # however the rows were cut in batches
    for split, rows in small.rows.items():
        sizes = _shards(tmp_path / "small", split)
        assert sizes == [1000] * (rows // 1000) + ([rows % 1000] if rows % 1000 else [])
        assert sizes == _shards(tmp_path / "big", split)
        stored = dataset_artifact.read_split(tmp_path / "small", split)
        ids = stored.column("id").to_pylist()
        assert ids == sorted(ids)  # DuckDB returned the file's order, kept batch by batch
        assert stored.equals(dataset_artifact.read_split(tmp_path / "big", split))
        assert "fold" not in stored.column_names
    meta = artifacts.require(tmp_path / "small", dataset_artifact.KIND)
    assert meta["read"]["engine"] == "duckdb" and meta["num_rows"] == n


def test_same_rows_in_another_order_give_the_same_fingerprint_a_changed_value_another(tmp_path):
    rows = events(3000)
    shuffled = rows.take(np.random.default_rng(3).permutation(rows.num_rows))
    changed = rows.set_column(
        rows.schema.get_field_index("x"),
        "x",
        pa.array([*rows.column("x").to_pylist()[:-1], 0.5]),  # the last row's x: 3.0 -> 0.5
    )
    results = {}
    for name, table in {"rows": rows, "shuffled": shuffled, "changed": changed}.items():
        cfg = config({"events": _write(tmp_path, name, table)})  # the same query text
        results[name] = _run(cfg, tmp_path / name, batch_rows=512)
    a, b, c = results["rows"], results["shuffled"], results["changed"]
    assert a.fingerprint == b.fingerprint and a.rows == b.rows
    train_a = dataset_artifact.read_split(tmp_path / "rows", "train")
    train_b = dataset_artifact.read_split(tmp_path / "shuffled", "train")
    assert not train_a.equals(train_b)  # stored in the order read...
    assert train_a.equals(train_b.sort_by("id"))  # ...the same rows
    assert c.fingerprint != a.fingerprint and c.rows == a.rows
    # the stored fingerprint is the one computed at once over the query's result
    cfg = config({"events": _write(tmp_path, "rows", rows)})
    wh = open_warehouse(cfg.warehouse)
    sql, params = source_query(cfg.warehouse), query_params(cfg.warehouse)
    wrapped, split_params = split_query(sql, cfg.split, wh.result_schema(sql, params))
    table = wh.query(wrapped, {**params, **split_params})
    assert fingerprint(wrapped, {**params, **split_params}, table) == a.fingerprint


def test_a_bad_row_late_in_the_stream_fails_with_every_row_counted_and_no_folder(tmp_path):
    rows = events(6000)
    days = rows.column("day").to_pylist()
    days[5500] = days[5990] = None  # after several shards were written
    bad = rows.set_column(1, "day", pa.array(days, pa.date32()))
    cfg = config(
        {"events": _write(tmp_path, "events", bad)},
        **{
            "data.rows_per_shard": 1000,
            "split.strategy": "temporal",
            "split.column": "day",
            "split.validation_start": "2020-03-01",
            "split.test_start": "2020-03-20",
        },
    )
    with pytest.raises(
        DataValidationError, match=r"split.column='day' is NULL in 2 of 6000 rows; split"
    ):
        _run(cfg, tmp_path / "ds", batch_rows=500)
    assert not (tmp_path / "ds").exists()
    # the column strategy: a bad value, counted over all the rows
    folds = rows.column("fold").to_pylist()
    folds[4000] = "valid"
    odd = rows.set_column(5, "fold", pa.array(folds))
    cfg = config(
        {"events": _write(tmp_path, "odd", odd)},
        **{"data.rows_per_shard": 1000, "split.strategy": "column", "split.column": "fold"},
    )
    with pytest.raises(
        DataValidationError,
        match=r"rows per value: \{'train': 3599, 'test': 1200, 'validation': 1200, 'valid': 1\}",
    ):
        _run(cfg, tmp_path / "odd", batch_rows=500)
    assert not (tmp_path / "odd").exists()


def test_split_tally_counts_across_batches_and_names_empty_splits(small_config):
    data, split = small_config.data, small_config.split  # temporal on flight_date
    cols = [data.label, *data.numeric_features, *data.categorical_features]

    def batch(dates, splits):
        n = len(dates)
        return pa.table(
            {
                "flight_date": pa.array(dates, pa.date32()),
                "split": splits,
                **{c: [1] * n for c in cols},
            }
        )

    d = dt.date(2013, 1, 5)
    tally = SplitTally(data, split, batch([d], ["train"]).schema, {"start_date": "x"})
    parts = tally.add(batch([d, d], ["train", "train"]))
    assert parts == {"train": None}  # the whole batch
    parts = tally.add(batch([d + dt.timedelta(days=20)] * 3, ["validation", "train", "validation"]))
    assert parts["train"].tolist() == [1] and parts["validation"].tolist() == [0, 2]
    assert tally.rows == {"train": 3, "validation": 2, "test": 0} and tally.num_rows == 5
    with pytest.raises(
        DataValidationError,
        match=r"the test split is empty: .* but the data's flight_date runs from 2013-01-05 to "
        r"2013-01-25;",
    ):
        tally.finish()
    empty = SplitTally(data, split, batch([d], ["train"]).schema, {"start_date": "x"})
    with pytest.raises(DataValidationError, match=r"returned no rows .*'start_date': 'x'"):
        empty.finish()


def test_a_warehouse_with_only_query_still_ingests(tmp_path):
    """A warehouse of your own that has no ``stream`` (only ``query``): its table is cut in
    batches and goes the same way."""
    cfg = config({"events": _write(tmp_path, "events", events(3000))})

    class QueryOnly:
        def __init__(self):
            self.wh = open_warehouse(cfg.warehouse)

        def result_schema(self, sql, params):
            return self.wh.result_schema(sql, params)

        def query(self, sql, params):
            return self.wh.query(sql, params)

        def describe(self):
            return "query-only"

    a = _run(cfg, tmp_path / "a", warehouse=QueryOnly())
    b = _run(cfg, tmp_path / "b")
    assert (a.rows, a.fingerprint) == (b.rows, b.fingerprint)
    assert artifacts.require(tmp_path / "a", dataset_artifact.KIND)["source"] == "query-only"


def test_shard_writer_cuts_full_shards_and_raises_a_writer_error(tmp_path):
    import shutil

    schema = pa.schema([("x", pa.int64())])
    out = tmp_path / "ds"
    out.mkdir()
    w = dataset_artifact.ShardWriter(out, schema, rows_per_shard=1000, splits=("train", "test"))
    for start in range(0, 2500, 300):
        w.write("train", pa.table({"x": range(start, min(start + 300, 2500))}))
    w.write("test", pa.record_batch([pa.array([7, 8], pa.int64())], schema=schema))
    assert w.close() == {"train": 2500, "test": 2}
    assert _shards(out, "train") == [1000, 1000, 500] and _shards(out, "test") == [2]
    stored = pq.read_table(out / "train").column("x").to_pylist()
    assert sorted(stored) == list(range(2500))
    # a shard that cannot be written (its folder is gone): the next call raises it
    bad = tmp_path / "bad"
    bad.mkdir()
    w = dataset_artifact.ShardWriter(bad, schema, rows_per_shard=1000, splits=("train",))
    shutil.rmtree(bad / "train")
    with pytest.raises(OSError):
        for start in range(0, 10_000, 500):
            w.write("train", pa.table({"x": range(start, start + 500)}))
        w.close()
    w.abort()
