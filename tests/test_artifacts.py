"""torchkfp.artifacts: the complete-or-visibly-not folder protocol, and each format's writer and
reader (dataset, transform, features, model)."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.artifacts import features as features_artifact
from torchkfp.artifacts import model as model_artifact
from torchkfp.artifacts import transform as transform_artifact
from torchkfp.errors import ArtifactError
from torchkfp.labels import Target
from torchkfp.model import ModelSpec, TabularMLP
from torchkfp.predictor import Predictor
from torchkfp.transform import fit


# ---- the folder protocol ----------------------------------------------------------------
def test_artifacts_without_marker_are_refused(tmp_path):
    d = artifacts.begin(tmp_path / "a")
    (d / "data.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="incomplete"):
        artifacts.require(d, "dataset")
    artifacts.commit(d, "dataset", {"rows": 1})
    assert artifacts.require(d, "dataset")["rows"] == 1
    with pytest.raises(ArtifactError, match="expected 'model'"):
        artifacts.require(d, "model")
    with pytest.raises(ArtifactError, match="does not exist"):
        artifacts.require(tmp_path / "nowhere", "dataset")
    assert artifacts.ArtifactError is ArtifactError  # re-exported where the protocol lives


def test_begin_clears_an_earlier_partial_attempt(tmp_path):
    d = artifacts.begin(tmp_path / "a")
    (d / "stale.bin").write_bytes(b"x")
    artifacts.commit(d, "dataset", {})
    d = artifacts.begin(tmp_path / "a")
    assert list(d.iterdir()) == []  # old files and the old marker are gone
    (tmp_path / "file").write_text("")  # an empty file is replaced; one with content is not
    assert artifacts.begin(tmp_path / "file").is_dir()


def test_check_fingerprint(tmp_path):
    artifacts.check_fingerprint({"fingerprint": "a" * 64}, "a" * 64, tmp_path)
    artifacts.check_fingerprint({"data_fingerprint": "a" * 64}, "a" * 64, tmp_path)
    artifacts.check_fingerprint({"fingerprint": "a" * 64}, None, tmp_path)  # nothing expected
    with pytest.raises(ArtifactError, match="different ingestion run"):
        artifacts.check_fingerprint({"data_fingerprint": "a" * 64}, "b" * 64, tmp_path)


def test_gcs_fuse_paths():
    assert artifacts.gcs_to_fuse("gs://b/p/model") == "/gcs/b/p/model"
    assert artifacts.fuse_to_gcs("/gcs/b/p/model") == "gs://b/p/model"
    assert artifacts.gcs_to_fuse("/local/model") == "/local/model"
    assert artifacts.fuse_to_gcs("/local/model") == "/local/model"


# ---- each format ------------------------------------------------------------------------
def test_dataset_splits_round_trip_in_shards(tmp_path):
    out = artifacts.begin(tmp_path / "ds")
    table = pa.table({"x": list(range(2500)), "y": [i % 2 for i in range(2500)]})
    for split in dataset_artifact.SPLITS:
        assert dataset_artifact.write_split(out, split, table, rows_per_shard=1000) == 2500
    assert len(list((out / "train").glob("part-*.parquet"))) == 3
    with pytest.raises(ArtifactError, match="incomplete"):
        dataset_artifact.read_split(out, "train")
    artifacts.commit(out, dataset_artifact.KIND, {})
    assert dataset_artifact.read_split(out, "train").equals(table)
    assert dataset_artifact.read_split(out, "test", columns=["y"]).column_names == ["y"]
    with pytest.raises(ArtifactError, match="has no nope shards"):
        dataset_artifact.read_split(out, "nope")


def _transform():
    train = pd.DataFrame({"x": [1.0, 2.0, np.nan], "c": ["a", "a", "b"], "y": [0, 1, 0]})
    target = Target("binary", "y", classes=[0, 1])
    return fit(train, target=target, numeric_features=["x"], categorical_features=["c"])


def test_transform_round_trip(tmp_path):
    tf = _transform()
    out = transform_artifact.write(tmp_path / "t", tf, {"fitted_on": "train"})
    assert (out / transform_artifact.FILE).is_file()
    assert artifacts.require(out, transform_artifact.KIND)["fitted_on"] == "train"
    assert transform_artifact.read(out) == tf


def test_features_round_trip(tmp_path):
    out = artifacts.begin(tmp_path / "f")
    x_num = np.arange(6, dtype=np.float32).reshape(3, 2)
    x_cat = np.array([[0], [1], [2]], dtype=np.int64)
    y = np.array([0, 1, 0], dtype=np.float32)
    features_artifact.write_split(out, "train", x_num, x_cat, y)
    artifacts.commit(out, features_artifact.KIND, {"rows": {"train": 3}})
    got = features_artifact.read_split(out, "train")
    assert set(got) == {"x_num", "x_cat", "y"}
    assert got["x_num"].dtype == torch.float32 and got["x_cat"].dtype == torch.int64
    assert (out / "train" / "x_cat.npy").is_file()  # stored as int32, read back as int64
    assert features_artifact.open_split(out, "train").x_cat.dtype == np.int32
    torch.testing.assert_close(got["x_num"], torch.from_numpy(x_num))
    torch.testing.assert_close(got["x_cat"], torch.from_numpy(x_cat))
    torch.testing.assert_close(got["y"], torch.from_numpy(y))


def test_model_write_and_load(tmp_path):
    tf = _transform()
    spec = ModelSpec(
        num_numeric=tf.num_numeric_inputs,
        cardinalities=tf.cardinalities,
        hidden_sizes=[4],
        dropout=0.0,
        max_embedding_dim=2,
    )
    torch.manual_seed(0)
    net = TabularMLP(spec)
    meta = model_artifact.write(tmp_path / "m", net.state_dict(), spec, tf, {"note": "x"})
    sums = meta.pop(model_artifact.CHECKSUMS)  # each file's sha256, recorded at commit
    assert meta == {"kind": model_artifact.KIND, "note": "x"}
    assert sorted(sums) == sorted(model_artifact.CHECKED_FILES)
    assert sums[model_artifact.SPEC_FILE] == model_artifact.sha256_file(
        tmp_path / "m" / model_artifact.SPEC_FILE
    )
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {
        model_artifact.WEIGHTS_FILE,
        model_artifact.SPEC_FILE,
        model_artifact.TRANSFORM_FILE,
        model_artifact.FEATURE_SPEC_FILE,
        artifacts.METADATA,
        artifacts.MARKER,
    } == names
    feature_spec = json.loads((tmp_path / "m" / model_artifact.FEATURE_SPEC_FILE).read_text())
    assert feature_spec == tf.feature_spec()
    art = model_artifact.ModelArtifact.load(tmp_path / "m")
    assert art.spec == spec and art.transform == tf and art.metadata["note"] == "x"
    module = art.module()
    assert not module.training  # ready to predict
    for k, v in net.state_dict().items():
        assert torch.equal(module.state_dict()[k], v), k
    (tmp_path / "m" / artifacts.MARKER).unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        model_artifact.ModelArtifact.load(tmp_path / "m")


def test_a_model_written_before_ensembles_loads_as_one_member(tmp_path):
    """An artifact whose model_spec.json has no ``ensemble_size`` (written before the setting
    existed; its checksums recorded then) loads, checks and predicts as the plain MLP."""
    tf = _transform()
    spec = ModelSpec(tf.num_numeric_inputs, tf.cardinalities, [4], 0.0, 2, ensemble_size=1)
    torch.manual_seed(0)
    net = TabularMLP(spec)
    model_artifact.write(tmp_path / "m", net.state_dict(), spec, tf, {})
    spec_file = tmp_path / "m" / model_artifact.SPEC_FILE
    old = json.loads(spec_file.read_text())
    del old["ensemble_size"]
    spec_file.write_text(json.dumps(old, indent=1))
    meta_file = tmp_path / "m" / artifacts.METADATA
    meta = json.loads(meta_file.read_text())
    meta[model_artifact.CHECKSUMS][model_artifact.SPEC_FILE] = model_artifact.sha256_file(spec_file)
    meta_file.write_text(json.dumps(meta))
    assert model_artifact.spec_problems(old) == []
    art = model_artifact.ModelArtifact.load(tmp_path / "m")
    assert art.spec.ensemble_size == 1
    x_num = torch.randn(5, tf.num_numeric_inputs)
    x_cat = torch.zeros(5, len(tf.cardinalities), dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(art.module()(x_num, x_cat), net.eval()(x_num, x_cat))


def test_trained_model_artifact_loads_and_predicts_like_the_predictor(trained_model):
    art = model_artifact.ModelArtifact.load(trained_model)
    assert art.metadata["kind"] == model_artifact.KIND
    assert art.transform.label == "is_late"
    assert art.spec.cardinalities == art.transform.cardinalities
    rows = pd.DataFrame([{f: None for f in Predictor(trained_model).feature_names}] * 3)
    arrays = art.transform.transform(rows)
    with torch.inference_mode():
        logits = art.module()(torch.from_numpy(arrays["x_num"]), torch.from_numpy(arrays["x_cat"]))
    # the predictor runs the built-in network folded (FoldedPrediction): float32 rounding apart
    np.testing.assert_allclose(
        torch.sigmoid(logits).double().numpy(),
        Predictor(trained_model).predict_proba(rows),
        rtol=1e-6,
        atol=0,
    )
