"""Binary classification metrics in NumPy (no scikit-learn at run time)."""

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
