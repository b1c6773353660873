"""torchkfp.metrics: binary, multi-class and regression metrics in NumPy, checked against
scikit-learn."""

import numpy as np
import pytest

from torchkfp import metrics


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000).astype(float)
    p = np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1).round(2)  # ties on purpose
    return y, p


def test_metrics_match_scikit_learn(scores):
    sk = pytest.importorskip("sklearn.metrics")
    y, p = scores
    assert metrics.roc_auc(y, p) == pytest.approx(sk.roc_auc_score(y, p), abs=1e-12)
    assert metrics.log_loss(y, p) == pytest.approx(sk.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))
    r = metrics.classification_report(y, p, 0.5)
    assert r["precision"] == pytest.approx(sk.precision_score(y, p >= 0.5))
    assert r["recall"] == pytest.approx(sk.recall_score(y, p >= 0.5))
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(y, p >= 0.5))
    assert r["examples"] == 2000 and r["positive_rate"] == pytest.approx(y.mean())


def test_confusion_and_roc_curve_match_scikit_learn(scores):
    sk = pytest.importorskip("sklearn.metrics")
    y, p = scores
    c = metrics.confusion(y, p, 0.5)
    (tn, fp), (fn, tp) = sk.confusion_matrix(y, p >= 0.5)
    assert c == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    fpr, tpr, thr = metrics.roc_curve(y, p)
    sk_fpr, sk_tpr, sk_thr = sk.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])  # the first: +inf here, max + 1 or inf there


def test_downsampled_roc_is_bounded_monotone_and_finite(scores):
    y, p = scores
    roc = metrics.downsample_roc(*metrics.roc_curve(y, p), points=11)
    assert 2 <= len(roc) <= 11
    fpr, tpr, thr = (np.array(c) for c in zip(*roc, strict=True))
    assert fpr[0] == 0.0 and fpr[-1] == 1.0 and tpr[-1] == 1.0
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    assert np.isfinite(thr).all() and thr[0] == 1.0  # +inf is logged as 1.0


def test_multiclass_metrics_match_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 3000)
    logits = rng.normal(size=(3000, 4)) + np.eye(4)[y] * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    r = metrics.multiclass_report(y, probs)
    pred = probs.argmax(axis=1)
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert r["log_loss"] == pytest.approx(sk.log_loss(y, probs), rel=1e-6)
    assert r["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))
    cm = metrics.multiclass_confusion(y, pred, 4)
    assert (cm == sk.confusion_matrix(y, pred, labels=range(4))).all()


def test_regression_metrics_match_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    y = rng.normal(10, 5, 1000)
    pred = y + rng.normal(0, 2, 1000)
    r = metrics.regression_report(y, pred)
    assert r["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(y, pred)))
    assert r["mae"] == pytest.approx(sk.mean_absolute_error(y, pred))
    assert r["r2"] == pytest.approx(sk.r2_score(y, pred))
