"""Unit tests of the library: SQL parity, transform, metrics, gate, trainer helpers, registry."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
import torch

from torchkfp import artifacts, metrics
from torchkfp.config import Config, EvaluateConfig
from torchkfp.evaluate import gate
from torchkfp.registry import LocalRegistry, RegistryError
from torchkfp.trainer import cluster_from_env, get_lr, shard_indices
from torchkfp.transform import FittedTransform, fit
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


def test_flights_query_rows_split_and_no_duplicates(warehouse_path):
    wh = DuckDBWarehouse(warehouse_path)
    sql = load_sql("flights_delay.sql", "nycflights13")
    params = {
        "start_date": dt.date(2013, 1, 1),
        "end_date": dt.date(2013, 1, 31),
        "validation_start": dt.date(2013, 1, 22),
        "test_start": dt.date(2013, 1, 27),
    }
    df = wh.query(sql, params).to_pandas()
    # January 2013 flights from NYC that arrived (arr_delay present), counted independently
    import duckdb

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
    from torchkfp.config import ConfigError

    with pytest.raises(ConfigError, match=r"\['d'\] have no value"):
        DuckDBWarehouse(warehouse_path).query("SELECT @d AS x", {})


def test_transform_fits_on_train_only_and_handles_missing_and_unknown():
    train = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0, np.nan], "c": ["a", "a", "b", None], "y": [0, 1, 0, 1]}
    )
    tf = fit(train, label="y", numeric_features=["x"], categorical_features=["c"],
             min_category_count=2)  # fmt: skip
    assert tf.numeric["x"].mean == pytest.approx(2.0)
    assert tf.numeric["x"].add_missing_flag
    assert tf.vocab["c"] == ["a"]  # "b" is rarer than min_category_count
    out = tf.transform(pd.DataFrame({"x": [2.0, None], "c": ["a", "zzz"]}))
    np.testing.assert_allclose(out["x_num"], [[0.0, 0.0], [0.0, 1.0]], atol=1e-6)
    assert out["x_cat"].tolist() == [[1], [0]]  # unknown -> bucket 0
    round_trip = FittedTransform.from_dict(json.loads(json.dumps(tf.to_dict())))
    assert round_trip == tf
    with pytest.raises(KeyError, match="missing feature column"):
        tf.transform(pd.DataFrame({"x": [1.0]}))


def test_metrics_match_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000).astype(float)
    p = np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1).round(2)  # ties on purpose
    assert metrics.roc_auc(y, p) == pytest.approx(sk.roc_auc_score(y, p), abs=1e-12)
    assert metrics.log_loss(y, p) == pytest.approx(sk.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))
    r = metrics.classification_report(y, p, 0.5)
    assert r["precision"] == pytest.approx(sk.precision_score(y, p >= 0.5))
    assert r["recall"] == pytest.approx(sk.recall_score(y, p >= 0.5))
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(y, p >= 0.5))


def test_gate_thresholds_and_champion_margin():
    ec = EvaluateConfig(min_roc_auc=0.6, champion_margin=0.01)
    good = {"roc_auc": 0.70, "log_loss": 0.5}
    assert gate(ec, good, None)[0]
    assert not gate(ec, {"roc_auc": 0.55, "log_loss": 0.5}, None)[0]
    assert not gate(ec, good, {"roc_auc": 0.695, "log_loss": 0.5})[0]  # not by the margin
    ok, reasons = gate(ec, good, {"roc_auc": 0.68, "log_loss": 0.5})
    assert ok and "beats champion" in reasons[1]


def test_lr_schedule_warms_up_then_decays():
    lrs = [get_lr(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] >= 0.1


def test_shards_are_disjoint_equal_sized_and_cover_all_rows():
    shards = [shard_indices(101, r, 4, seed=0, epoch=3) for r in range(4)]
    assert {len(s) for s in shards} == {26}
    assert set(torch.cat(shards).tolist()) == set(range(101))
    assert not torch.equal(shard_indices(101, 0, 4, 0, 0), shard_indices(101, 0, 4, 0, 1))


def test_cluster_spec_from_vertex():
    spec = {
        "cluster": {"workerpool0": ["chief:2222"], "workerpool1": ["w0:2222", "w1:2222"]},
        "task": {"type": "workerpool1", "index": 1},
    }
    c = cluster_from_env({"CLUSTER_SPEC": json.dumps(spec)})
    assert c == {"nnodes": 3, "node_rank": 2, "master_addr": "chief", "master_port": 2222}
    assert cluster_from_env({})["nnodes"] == 1


def test_artifacts_without_marker_are_refused(tmp_path):
    d = artifacts.begin(tmp_path / "a")
    (d / "data.bin").write_bytes(b"x")
    with pytest.raises(artifacts.ArtifactError, match="incomplete"):
        artifacts.require(d, "dataset")
    artifacts.commit(d, "dataset", {"rows": 1})
    assert artifacts.require(d, "dataset")["rows"] == 1
    with pytest.raises(artifacts.ArtifactError, match="expected 'model'"):
        artifacts.require(d, "model")


def test_local_registry_versions_and_aliases(tmp_path, trained_model):
    reg = LocalRegistry(tmp_path, "m")
    assert reg.resolve("champion") is None
    v1 = reg.register(trained_model)
    assert reg.set_alias("champion", v1) is None
    v2 = reg.register(trained_model)
    assert reg.set_alias("champion", v2) == v1
    assert reg.versions() == [1, 2] and reg.aliases() == {"champion": 2}
    assert artifacts.require(reg.resolve("champion"), "model")
    with pytest.raises(RegistryError):
        reg.set_alias("champion", 9)


def test_config_flows_unchanged_through_json():
    cfg = Config()
    assert Config.from_json(cfg.to_json()).train == cfg.train


def test_processes_per_node_without_cuda():
    from torchkfp.config import TrainConfig
    from torchkfp.trainer import processes_per_node

    if torch.cuda.is_available():
        pytest.skip("CPU rule")
    assert processes_per_node(TrainConfig(nproc_per_node=3)) == 3
    assert processes_per_node(TrainConfig(nproc_per_node=0)) == 1
