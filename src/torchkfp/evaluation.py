"""Stage 4: test-split metrics and the promotion gate (``evaluate_candidate``).

The candidate (and the current champion, if any) score the same raw test split through their
own bundled transforms. The gate promotes when the candidate clears the absolute thresholds and
beats the champion's ROC AUC by more than ``evaluate.champion_margin``. Finding the champion
is the registry's job (:func:`torchkfp.registry.open_registry`): this stage gets its folder.

Settings: the ``evaluate`` section only.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from torchkfp import metrics
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.config import EvaluateConfig
from torchkfp.predictor import Predictor


@dataclass
class EvalResult:
    metrics: dict[str, float]
    confusion: dict[str, int]
    roc: list[tuple[float, float, float]]
    champion_metrics: dict[str, float] | None
    promote: bool
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def roc_columns(self) -> tuple[list[float], list[float], list[float]]:
        """(fpr, tpr, thresholds) as KFP's ClassificationMetrics.log_roc_curve takes them."""
        fpr, tpr, thr = (list(x) for x in zip(*self.roc, strict=True))
        return fpr, tpr, thr

    def confusion_matrix(self) -> tuple[list[str], list[list[int]]]:
        """(labels, rows): row = true class, column = predicted class."""
        c = self.confusion
        return ["on_time", "late"], [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]

    def save(self, path: str | os.PathLike) -> str:
        """Write the report JSON (parent folders created)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1))
        return str(p)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "confusion": self.confusion,
            "champion_metrics": self.champion_metrics,
            "promote": self.promote,
            "reasons": self.reasons,
            "seconds": self.seconds,
        }


def gate(
    ec: EvaluateConfig, cand: dict[str, float], champ: dict[str, float] | None
) -> tuple[bool, list[str]]:
    reasons: list[str] = []
    ok = True
    if cand["roc_auc"] < ec.min_roc_auc:
        ok = False
        reasons.append(f"roc_auc {cand['roc_auc']:.4f} < min_roc_auc {ec.min_roc_auc}")
    if cand["log_loss"] > ec.max_log_loss:
        ok = False
        reasons.append(f"log_loss {cand['log_loss']:.4f} > max_log_loss {ec.max_log_loss}")
    if champ is not None:
        need = champ["roc_auc"] + ec.champion_margin
        if cand["roc_auc"] <= need:
            ok = False
            reasons.append(
                f"roc_auc {cand['roc_auc']:.4f} does not beat champion {champ['roc_auc']:.4f}"
                f" + margin {ec.champion_margin}"
            )
        else:
            reasons.append(f"beats champion roc_auc {champ['roc_auc']:.4f} + {ec.champion_margin}")
    else:
        reasons.append("no champion yet")
    if ok:
        reasons.insert(0, "promote")
    return ok, reasons


def evaluate_candidate(
    ec: EvaluateConfig,
    model_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    champion_dir: str | os.PathLike | None = None,
) -> EvalResult:
    t0 = time.perf_counter()
    cand = Predictor(model_dir)
    test = dataset_artifact.read_split(dataset_dir, "test").to_pandas()
    y = test[cand.transform.label].to_numpy(dtype=np.float64)
    p = cand.predict_proba(test)
    thr = ec.threshold
    report = metrics.classification_report(y, p, thr)
    fpr, tpr, th = metrics.roc_curve(y, p)
    champ_report = None
    notes: list[str] = []
    if champion_dir is not None:
        try:
            champ = Predictor(champion_dir)
            champ_report = metrics.classification_report(y, champ.predict_proba(test), thr)
        except (KeyError, ValueError) as e:
            notes.append(
                f"champion at {champion_dir} cannot score this test set ({e}); "
                "gating on thresholds only"
            )
    promote, reasons = gate(ec, report, champ_report)
    return EvalResult(
        metrics=report,
        confusion=metrics.confusion(y, p, thr),
        roc=metrics.downsample_roc(fpr, tpr, th),
        champion_metrics=champ_report,
        promote=promote,
        reasons=reasons + notes,
        seconds=time.perf_counter() - t0,
    )
