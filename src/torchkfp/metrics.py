"""Metrics per task kind in NumPy (no scikit-learn at run time): binary, multi-class,
regression; and which metrics the gate may use, with their direction."""

from __future__ import annotations

import numpy as np


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False/true positive rates at each distinct score, highest threshold first."""
    y = np.asarray(y, dtype=np.float64)
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    distinct = np.where(np.diff(p_sorted))[0]
    idx = np.r_[distinct, y_sorted.size - 1]
    tps = np.cumsum(y_sorted)[idx]
    fps = (idx + 1) - tps
    pos, neg = y.sum(), y.size - y.sum()
    tpr = np.r_[0.0, tps / pos] if pos else np.r_[0.0, np.zeros_like(tps)]
    fpr = np.r_[0.0, fps / neg] if neg else np.r_[0.0, np.zeros_like(fps)]
    thresholds = np.r_[np.inf, p_sorted[idx]]
    return fpr, tpr, thresholds


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, p)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it
    return float(trapezoid(tpr, fpr))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, int]:
    pred = p >= threshold
    y = y.astype(bool)
    return {
        "tp": int(np.sum(pred & y)),
        "fp": int(np.sum(pred & ~y)),
        "tn": int(np.sum(~pred & ~y)),
        "fn": int(np.sum(~pred & y)),
    }


def classification_report(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    c = confusion(y, p, threshold)
    n = max(1, len(y))
    precision = c["tp"] / (c["tp"] + c["fp"]) if (c["tp"] + c["fp"]) else 0.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if (c["tp"] + c["fn"]) else 0.0
    return {
        "roc_auc": roc_auc(y, p),
        "log_loss": log_loss(y, p),
        "accuracy": (c["tp"] + c["tn"]) / n,
        "precision": precision,
        "recall": recall,
        "positive_rate": float(np.mean(y)),
        "examples": int(len(y)),
    }


def downsample_roc(
    fpr: np.ndarray, tpr: np.ndarray, thr: np.ndarray, points: int = 101
) -> list[tuple[float, float, float]]:
    """At most ``points`` (fpr, tpr, threshold) rows, evenly spread over FPR, for logging."""
    keep = np.unique(np.searchsorted(fpr, np.linspace(0, 1, points)).clip(0, len(fpr) - 1))
    thr = np.where(np.isinf(thr), 1.0, thr)
    return [(float(fpr[i]), float(tpr[i]), float(thr[i])) for i in keep]


# ---- multi-class -----------------------------------------------------------------------------
def multiclass_confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """[k, k] counts: row = true class, column = predicted class."""
    return np.bincount(y.astype(np.int64) * k + pred.astype(np.int64), minlength=k * k).reshape(
        k, k
    )


def multiclass_report(y: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> dict[str, float]:
    """``y``: class indices [N]; ``probs``: [N, K] class probabilities."""
    n, k = probs.shape
    pred = probs.argmax(axis=1)
    cm = multiclass_confusion(y, pred, k)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0  # macro average over the classes present in the test set
    p_true = np.clip(probs[np.arange(n), y.astype(np.int64)], eps, 1.0)
    return {
        "accuracy": float((pred == y).mean()) if n else 0.0,
        "log_loss": float(-np.mean(np.log(p_true))) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "examples": int(n),
    }


# ---- regression ------------------------------------------------------------------------------
def regression_report(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    err = pred - y
    ss_tot = float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    return {
        "rmse": float(np.sqrt(np.mean(err**2))) if len(y) else 0.0,
        "mae": float(np.mean(np.abs(err))) if len(y) else 0.0,
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else 0.0,
        "examples": int(len(y)),
    }


# ---- what the gate may use -------------------------------------------------------------------
HIGHER_IS_BETTER = {"roc_auc", "accuracy", "precision", "recall", "macro_f1", "r2"}
LOWER_IS_BETTER = {"log_loss", "rmse", "mae"}
TASK_METRICS = {
    "binary": ("roc_auc", "log_loss", "accuracy", "precision", "recall"),
    "multiclass": ("accuracy", "log_loss", "macro_f1"),
    "regression": ("rmse", "mae", "r2"),
}
DEFAULT_METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
DEFAULT_MIN = {"binary": {"roc_auc": 0.6}, "multiclass": {}, "regression": {"r2": 0.0}}
DEFAULT_MAX = {"binary": {"log_loss": 1.0}, "multiclass": {}, "regression": {}}
