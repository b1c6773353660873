"""torchkfp.preprocess: validate the dataset, fit the transform on train, write tensors."""

import pytest
import torch

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.artifacts import features as features_artifact
from torchkfp.artifacts import transform as transform_artifact
from torchkfp.errors import ArtifactError, DataValidationError
from torchkfp.ingest import ingest
from torchkfp.preprocess import preprocess


def test_a_label_that_cannot_serve_the_task_is_rejected_and_writes_nothing(tmp_path, small_config):
    # engines (1, 2, 4 or missing) as a binary label: missing values are named with the fix
    cfg = small_config.override({"data.label": "engines", "data.numeric_features": ["distance"]})
    ingest(cfg.warehouse, cfg.data, cfg.split, tmp_path / "ds")
    with pytest.raises(DataValidationError, match=r"label 'engines' has \d+ missing value"):
        preprocess(cfg.data, cfg.preprocess, tmp_path / "ds", tmp_path / "t", tmp_path / "f")
    assert not (tmp_path / "t" / artifacts.MARKER).exists()
    assert not (tmp_path / "f" / artifacts.MARKER).exists()


def test_preprocess_outputs_tensors_fitted_on_train(stage_outputs):
    f = features_artifact.read_split(stage_outputs["features"], "train")
    assert f["x_num"].dtype == torch.float32 and f["x_cat"].dtype == torch.int64
    assert f["x_num"].shape[0] == f["y"].shape[0] == f["x_cat"].shape[0]
    # standardized on train: mean ~0 / std ~1 on the train split for a complete column
    tf = transform_artifact.read(stage_outputs["transform"])
    i = tf.numeric_features.index("distance")
    assert abs(float(f["x_num"][:, i].mean())) < 1e-3
    assert abs(float(f["x_num"][:, i].std()) - 1) < 1e-2
    # every split is there, with the transform's shapes, and both artifacts name the data
    meta = artifacts.require(stage_outputs["features"], features_artifact.KIND)
    fp = artifacts.require(stage_outputs["dataset"], dataset_artifact.KIND)["fingerprint"]
    assert meta["data_fingerprint"] == fp
    assert (
        artifacts.require(stage_outputs["transform"], transform_artifact.KIND)["data_fingerprint"]
        == fp
    )
    assert meta["cardinalities"] == tf.cardinalities
    for split in dataset_artifact.SPLITS:
        s = features_artifact.read_split(stage_outputs["features"], split)
        assert s["x_num"].shape == (meta["rows"][split], tf.num_numeric_inputs)
        assert s["x_cat"].shape == (meta["rows"][split], len(tf.cardinalities))


def test_preprocess_refuses_a_dataset_from_another_ingestion(tmp_path, stage_outputs):
    cfg = stage_outputs["config"]
    with pytest.raises(ArtifactError, match="different ingestion run"):
        preprocess(
            cfg.data,
            cfg.preprocess,
            stage_outputs["dataset"],
            tmp_path / "t",
            tmp_path / "f",
            expected_fingerprint="0" * 64,
        )
    assert not (tmp_path / "t").exists() and not (tmp_path / "f").exists()


def test_preprocess_dataset_without_a_feature_column_names_it(tmp_path, stage_outputs):
    cfg = stage_outputs["config"].override(
        {"data.numeric_features": ["distance", "no_such_column"]}
    )
    with pytest.raises(DataValidationError, match=r"lacks column\(s\) \['no_such_column'\]"):
        preprocess(
            cfg.data, cfg.preprocess, stage_outputs["dataset"], tmp_path / "t", tmp_path / "f"
        )
