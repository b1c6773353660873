"""Metrics per task kind in NumPy (no scikit-learn at run time): binary, multi-class,
regression; and which metrics the gate may use, with their direction."""

from __future__ import annotations

import numpy as np


def ranked_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At each distinct score, highest first: (true positives among the rows scored at least
    that high, how many rows those are, the score). The ROC and precision-recall curves are
    both read off these. Memory: about 30 bytes a row at the peak (the sort order is dropped
    as soon as the rows are sorted), plus 24 bytes per distinct score."""
    p = np.asarray(p)
    n = p.size
    order = np.argsort(p, kind="stable")[::-1]  # highest first; ties stay together
    p_sorted = p[order]
    y_sorted = np.asarray(y)[order]
    del order
    last = np.flatnonzero(p_sorted[1:] != p_sorted[:-1])  # the last row of each score
    idx = np.append(last, n - 1) if n else last
    del last
    tps = np.cumsum(y_sorted, dtype=np.float64)
    del y_sorted
    tps = tps[idx]
    thresholds = p_sorted[idx]
    return tps, idx + 1, thresholds


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False/true positive rates at each distinct score, highest threshold first."""
    tps, counts, scores = ranked_counts(y, p)
    fps = counts - tps
    pos = tps[-1] if tps.size else 0.0
    neg = (counts[-1] if counts.size else 0) - pos
    tpr = np.r_[0.0, tps / pos] if pos else np.r_[0.0, np.zeros_like(tps)]
    fpr = np.r_[0.0, fps / neg] if neg else np.r_[0.0, np.zeros_like(fps)]
    thresholds = np.r_[np.inf, scores]
    return fpr, tpr, thresholds


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, p)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it
    return float(trapezoid(tpr, fpr))


LOSS_CHUNK = 1 << 20
"""Rows per step of :func:`log_loss` (its temporaries stay a few MB whatever the rows)."""


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    total = 0.0
    for start in range(0, len(p), LOSS_CHUNK):
        pc = np.clip(p[start : start + LOSS_CHUNK], eps, 1 - eps)
        yc = y[start : start + LOSS_CHUNK]
        total += float(np.sum(yc * np.log(pc) + (1 - yc) * np.log(1 - pc)))
    return -total / len(p) if len(p) else float("nan")


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
