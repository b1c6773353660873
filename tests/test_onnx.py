"""The ONNX export (:mod:`torchkfp.onnx_export`), the model artifact that carries it, and the
predictor on ONNX Runtime: parity with PyTorch for every task kind, models that cannot be
exported, and the row-wise fast path of the predictor (the same answers as the pandas path).

Artifacts here are written by the real writer from small fitted transforms and freshly
initialized networks (exports take a second or two each); the trained model and the servers are
in tests/test_serving.py and tests/test_training.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from torchkfp import artifacts
from torchkfp.artifacts import model as model_artifact
from torchkfp.artifacts.model import ModelArtifact
from torchkfp.errors import ArtifactError
from torchkfp.labels import Target
from torchkfp.model import ModelSpec, build_model
from torchkfp.onnx_export import PARITY_TOLERANCE, export_checked, probabilities
from torchkfp.predictor import FAST_PATH_MAX_ROWS, Predictor
from torchkfp.transform import FittedTransform, fit

M = model_artifact
CLASSES = {"binary": [0, 1], "multiclass": ["a", "b", "c"], "regression": []}


def _train_frame(task: str, n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "hour": rng.integers(0, 24, n).astype(float),
            "dist": np.where(rng.random(n) < 0.1, np.nan, rng.lognormal(6, 1, n)),
            "carrier": rng.choice(["UA", "AA", "DL", "WN"], n),
            "month": rng.choice([1, 2, 3, 12], n),
        }
    )
    if task == "binary":
        df["y"] = rng.integers(0, 2, n)
    elif task == "multiclass":
        df["y"] = rng.choice(CLASSES["multiclass"], n)
    else:
        df["y"] = rng.normal(50, 20, n)
    return df


def _transform(task: str) -> FittedTransform:
    df = _train_frame(task)
    if task == "regression":
        target = Target("regression", "y", mean=float(df.y.mean()), std=float(df.y.std()))
    else:
        target = Target(task, "y", classes=CLASSES[task])
    return fit(
        df,
        target=target,
        numeric_features=["hour", "dist"],
        categorical_features=["carrier", "month"],
        min_category_count=1,
    )


def _spec(tf: FittedTransform, **kw: Any) -> ModelSpec:
    return ModelSpec(
        num_numeric=tf.num_numeric_inputs,
        cardinalities=tf.cardinalities,
        hidden_sizes=[16, 8],
        dropout=0.1,
        max_embedding_dim=4,
        task=tf.task,
        output_size=tf.target.output_size,
        **{"numeric_embedding": "periodic", "periodic_sigma": 1.0, **kw},
    )


def write_model(
    path: Path, task: str, *, onnx: bool = True, factory: str | None = None, seed: int = 0
) -> tuple[Path, dict[str, Any]]:
    """A model artifact as the trainer writes it: weights, then the export checked on rows
    transformed by the artifact's own transform (the "test split")."""
    tf = _transform(task)
    spec = _spec(tf, factory=factory)
    torch.manual_seed(seed)
    net = build_model(spec).eval()
    rows = tf.transform(_train_frame(task, 300, seed=1))
    meta: dict[str, Any] = {"note": "test"}
    model = None
    if onnx:
        result = export_checked(
            net,
            task,
            torch.from_numpy(rows["x_num"]),
            torch.from_numpy(rows["x_cat"]),
            split="test",
            label_std=tf.target.std,
        )
        model, meta[M.ONNX_KEY] = result.model, result.info
        if model is not None:
            meta[M.ONNX_KEY]["file"] = M.ONNX_FILE
    M.write(path, net.state_dict(), spec, tf, meta, model)
    return path, meta


@pytest.fixture(scope="module", params=["binary", "multiclass", "regression"])
def exported(request, tmp_path_factory) -> tuple[Path, str]:
    path, _ = write_model(tmp_path_factory.mktemp("onnx") / "model", request.param)
    return path, request.param


def instances(n: int, seed: int = 2) -> list[dict[str, Any]]:
    """Raw rows as callers send them: nulls, unknown categories, numbers as categories."""
    rng = np.random.default_rng(seed)
    pool = ["UA", "AA", "ZZ", None, "1"]
    months = [1, 2.0, "3", 12, 13, None, True]
    return [
        {
            "hour": None if rng.random() < 0.1 else float(rng.integers(0, 24)),
            "dist": None if rng.random() < 0.2 else float(rng.lognormal(6, 1)),
            "carrier": pool[rng.integers(len(pool))],
            "month": months[rng.integers(len(months))],
        }
        for _ in range(n)
    ]


# ---- the export and its record ----------------------------------------------------------------
def test_export_is_in_the_artifact_checked_and_checksummed(exported):
    path, task = exported
    meta = artifacts.require(path, M.KIND)
    info = meta[M.ONNX_KEY]
    assert info["exported"] is True and info["file"] == M.ONNX_FILE
    assert isinstance(info["opset"], int) and info["opset"] >= 17
    parity = info["parity"]
    assert parity["passed"] is True and parity["split"] == "test"
    assert parity["rows"] == parity["split_rows"] == 300
    assert 0 <= parity["max_abs_diff"] <= PARITY_TOLERANCE == parity["tolerance"]
    assert parity["compared"] == ("value (standardized)" if task == "regression" else "probability")
    if task == "regression":
        assert parity["max_abs_diff_label_units"] >= parity["max_abs_diff"]  # std 20 > 1
    assert info["seconds"] >= info["export_seconds"] > 0
    assert meta[M.CHECKSUMS][M.ONNX_FILE] == M.sha256_file(path / M.ONNX_FILE)
    art = ModelArtifact.load(path)
    assert art.has_onnx and art.onnx_model() == (path / M.ONNX_FILE).read_bytes()


def test_onnx_runtime_predicts_like_pytorch(exported):
    path, task = exported
    on_torch, on_onnx = Predictor(path), Predictor(path, "onnx", threads=1)
    assert on_onnx.runtime == "onnx" and on_onnx.model is None
    rows = instances(500)
    for batch in (rows, rows[:1], rows[:FAST_PATH_MAX_ROWS]):  # pandas and fast paths
        want, got = on_torch.predict(batch), on_onnx.predict(batch)
        assert got.shape == want.shape and got.dtype == np.float64
        if task == "regression":  # label units (std 20): the export's tolerance times the std
            tol = PARITY_TOLERANCE * on_torch.target.std
        else:
            tol = PARITY_TOLERANCE
        assert np.max(np.abs(got - want)) <= tol
    if task != "regression":
        assert 0 < want.min() < want.max() < 1  # not a constant model
    df = pd.DataFrame(rows)
    np.testing.assert_allclose(on_onnx.predict(df), on_torch.predict(df), rtol=0, atol=1e-3)


def test_probabilities_are_stable_at_extreme_logits():
    logits = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0], dtype=np.float32)
    p = probabilities(logits, "binary")
    assert np.isfinite(p).all() and p[0] == 0.0 and p[-1] == 1.0 and p[2] == 0.5
    torch_p = torch.sigmoid(torch.from_numpy(logits)).double().numpy()
    np.testing.assert_allclose(p, torch_p, atol=1e-7)
    soft = probabilities(np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32), "multiclass")
    np.testing.assert_allclose(soft, [[1.0, 0.0, 0.0]])


# ---- models that cannot be exported: training goes on, the reason is recorded ------------------
def test_a_network_that_cannot_be_traced_is_not_exported(tmp_path):
    path, meta = write_model(tmp_path / "m", "binary", factory="onnx_models:branching")
    info = meta[M.ONNX_KEY]
    assert info["exported"] is False and "file" not in info
    assert info["reason"].startswith("the network cannot be exported to ONNX (")
    assert "data-dependent" in info["reason"] and "\x1b[" not in info["reason"]
    assert not (path / M.ONNX_FILE).exists()
    assert Predictor(path).task == "binary"  # PyTorch serves it
    with pytest.raises(ArtifactError) as e:
        Predictor(path, "onnx")
    msg = str(e.value)
    assert "has no ONNX export (model.onnx) to run on ONNX Runtime" in msg
    assert "training did not export it: the network cannot be exported" in msg
    assert "--runtime torch" in msg and "\n" not in msg


def test_an_export_that_differs_from_pytorch_is_dropped(tmp_path):
    path, meta = write_model(tmp_path / "m", "binary", factory="onnx_models:export_differs")
    info = meta[M.ONNX_KEY]
    assert info["exported"] is False and info["parity"]["passed"] is False
    assert info["parity"]["max_abs_diff"] > 1e-3
    assert info["reason"].startswith("parity check failed: ONNX Runtime differs from PyTorch")
    assert not (path / M.ONNX_FILE).exists()
    with pytest.raises(ArtifactError, match="parity check failed"):
        Predictor(path, "onnx")


def test_a_model_written_before_exports_has_none(tmp_path):
    path, _ = write_model(tmp_path / "m", "binary", onnx=False)
    assert M.ONNX_KEY not in artifacts.require(path, M.KIND)
    assert not ModelArtifact.load(path).has_onnx
    with pytest.raises(ArtifactError, match="written before torchkfp exported ONNX"):
        Predictor(path, "onnx")


def test_unknown_runtime(exported):
    with pytest.raises(ValueError, match="runtime='tensorflow': use one of torch, onnx"):
        Predictor(exported[0], "tensorflow")


def test_writer_refuses_an_export_the_metadata_does_not_record(tmp_path, exported):
    art = ModelArtifact.load(exported[0])
    for meta, model in (({}, b"onnx"), ({M.ONNX_KEY: {"exported": True}}, None)):
        with pytest.raises(ArtifactError, match="must record exported=true exactly when"):
            M.write(tmp_path / "m", art.state_dict(), art.spec, art.transform, meta, model)
        assert not (tmp_path / "m").exists()


# ---- the predictor's row-wise fast path --------------------------------------------------------
def test_fast_path_answers_exactly_like_the_dataframe_path(exported):
    path, _ = exported
    p = Predictor(path)
    rows = instances(200, seed=5)
    for size in (1, 3, 5, FAST_PATH_MAX_ROWS):
        for start in range(0, 200, 37):
            batch = rows[start : start + size]
            # the same arrays and the same batch: the same bits
            np.testing.assert_array_equal(p.predict(batch), p.predict(pd.DataFrame(batch)))
    cols = {k: [r[k] for r in rows[:20]] for k in p.feature_names}
    for k in p.transform.numeric:
        cols[k] = [np.nan if x is None else x for x in cols[k]]
    np.testing.assert_array_equal(
        p.predict_columns(cols, 20, fast=True), p.predict_columns(cols, 20, fast=False)
    )


def test_fast_path_falls_back_where_pandas_would_differ(exported):
    """Values a DataFrame would convert (a NumPy float32 category, an integer beyond 2**53
    beside a null, a string number) or a row without a feature take the pandas path, so a
    list answers as its DataFrame does whatever its length."""
    path, _ = exported
    p = Predictor(path)
    base = instances(1, seed=9)[0]
    odd = [
        [{**base, "month": np.float32(0.1)}, {**base, "month": None}],
        [{**base, "month": 2**60 + 1}, {**base, "month": None}],
        [{**base, "hour": "7"}, base],
        [{k: v for k, v in base.items() if k != "dist"}, base],
        [{**base, "hour": np.int64(3)}, {**base, "hour": None}],
    ]
    for batch in odd:
        assert p._plain_columns(batch) is None
        np.testing.assert_array_equal(p.predict(batch), p.predict(pd.DataFrame.from_records(batch)))
    assert p._plain_columns([base, {**base, "month": 2**53}]) is not None
    k = p.target.output_size
    assert p.predict([]).shape == ((0, k) if p.task == "multiclass" else (0,))


def test_onnx_model_file_refused_when_tampered(tmp_path, exported):
    import shutil

    path = Path(shutil.copytree(exported[0], tmp_path / "m"))
    data = bytearray((path / M.ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / M.ONNX_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.onnx does not match the sha256 recorded"):
        ModelArtifact.load(path)
    meta = json.loads((path / artifacts.METADATA).read_text())
    assert meta[M.ONNX_KEY]["exported"] is True
