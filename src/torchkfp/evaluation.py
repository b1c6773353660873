"""Stage 4: test-split metrics and the promotion gate (``evaluate_candidate``).

The candidate (and the current champion, if any) score the same raw test split through their
own bundled transforms. The metrics follow the task kind (binary: roc_auc, log_loss, accuracy,
precision, recall; multiclass: accuracy, log_loss, macro_f1 and a confusion matrix;
regression: rmse, mae, r2). The gate promotes when the candidate's metrics clear the
configured minimums and maximums and it beats the champion on the primary metric (in that
metric's direction) by more than ``evaluate.champion_margin``; a metric that is not a finite
number never passes. Finding the champion is the registry's job
(:func:`torchkfp.registry.open_registry`): this stage gets its folder.

A champion that cannot be used (the registry found its artifacts deleted or its alias dangling,
or its folder fails to load or to score this test set) is "no usable champion": the gate uses
the absolute thresholds alone and the reason is recorded in ``notes`` (and ``reasons``) of the
report. Failing instead would fail every later run in evaluate, and the only repair, promoting
a new version, sits behind this very gate.

Settings: the ``evaluate`` section only (the task kind comes from the model artifact).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from torchkfp import metrics
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.config import ConfigError, EvaluateConfig
from torchkfp.errors import ArtifactError
from torchkfp.predictor import Predictor

NO_CHAMPION = "no champion yet"
NO_USABLE_CHAMPION = "no usable champion (see notes); gating on the thresholds only"


@dataclass
class GateRules:
    """The gate for one task kind: the evaluate settings with the per-task defaults filled."""

    metric: str
    higher_is_better: bool
    minimums: dict[str, float]
    maximums: dict[str, float]
    margin: float

    @classmethod
    def for_task(cls, ec: EvaluateConfig, task: str) -> GateRules:
        allowed = metrics.TASK_METRICS[task]
        metric = ec.metric or metrics.DEFAULT_METRIC[task]
        mins = metrics.DEFAULT_MIN[task] if ec.min_metrics is None else dict(ec.min_metrics)
        maxs = metrics.DEFAULT_MAX[task] if ec.max_metrics is None else dict(ec.max_metrics)
        for where, names in (("metric", [metric]), ("min_metrics", mins), ("max_metrics", maxs)):
            bad = sorted(set(names) - set(allowed))
            if bad:
                raise ConfigError(
                    f"evaluate.{where}: {bad} not metric(s) of a {task} model; use {list(allowed)}"
                )
        return cls(metric, metric in metrics.HIGHER_IS_BETTER, mins, maxs, ec.champion_margin)


@dataclass
class EvalResult:
    task: str
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    promote: bool
    reasons: list[str] = field(default_factory=list)
    metric: str = ""
    """The primary metric the champion comparison used."""
    classes: list[Any] = field(default_factory=list)
    confusion: list[list[int]] | None = None
    """Classification: row = true class, column = predicted class, in ``classes`` order."""
    roc: list[tuple[float, float, float]] = field(default_factory=list)
    """Binary: (fpr, tpr, threshold) points."""
    champion: str | None = None
    """The champion model folder compared against (None: none)."""
    notes: list[str] = field(default_factory=list)
    """Why there is no usable champion (its artifacts gone, its alias dangling, it cannot
    score this test set), when that is the case."""
    seconds: float = 0.0

    def roc_columns(self) -> tuple[list[float], list[float], list[float]]:
        """(fpr, tpr, thresholds) as KFP's ClassificationMetrics.log_roc_curve takes them."""
        fpr, tpr, thr = (list(x) for x in zip(*self.roc, strict=True))
        return fpr, tpr, thr

    def confusion_matrix(self) -> tuple[list[str], list[list[int]]]:
        """(class names, rows) as ClassificationMetrics.log_confusion_matrix takes them."""
        return [str(c) for c in self.classes], self.confusion or []

    def save(self, path: str | os.PathLike) -> str:
        """Write the report JSON (parent folders created)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1))
        return str(p)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "metrics": self.metrics,
            "classes": self.classes,
            "confusion": self.confusion,
            "champion_metrics": self.champion_metrics,
            "promote": self.promote,
            "reasons": self.reasons,
            "notes": self.notes,
            "seconds": self.seconds,
        }


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def gate(
    rules: GateRules, cand: dict[str, float], champ: dict[str, float] | None
) -> tuple[bool, list[str]]:
    reasons: list[str] = []
    ok = True
    for name, low in rules.minimums.items():
        if not (_finite(cand[name]) and cand[name] >= low):
            ok = False
            reasons.append(f"{name} {cand[name]:.4f} < min {low}")
    for name, high in rules.maximums.items():
        if not (_finite(cand[name]) and cand[name] <= high):
            ok = False
            reasons.append(f"{name} {cand[name]:.4f} > max {high}")
    m, margin = rules.metric, rules.margin
    if not _finite(cand[m]):
        ok = False
        reasons.append(f"{m} is {cand[m]}: not a finite number")
    elif champ is not None and _finite(champ.get(m)):
        better = (
            cand[m] > champ[m] + margin if rules.higher_is_better else cand[m] < champ[m] - margin
        )
        word = "higher" if rules.higher_is_better else "lower"
        if better:
            reasons.append(f"beats champion {m} {champ[m]:.4f} by more than {margin} ({word})")
        else:
            ok = False
            reasons.append(
                f"{m} {cand[m]:.4f} does not beat champion {champ[m]:.4f} by more than "
                f"margin {margin} ({word} is better)"
            )
    else:
        reasons.append(NO_CHAMPION)
    if ok:
        reasons.insert(0, "promote")
    return ok, reasons


def score(p: Predictor, test: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """A model's metrics on the raw test rows (its own transform and classes), plus the
    curves and matrices that go with them."""
    tgt = p.target
    pred = p.predict(test)
    if p.task == "regression":
        return {"metrics": metrics.regression_report(tgt.values(test[tgt.label]), pred)}
    y = tgt.encode(test[tgt.label], "test")
    if p.task == "binary":
        fpr, tpr, th = metrics.roc_curve(y, pred)
        c = metrics.confusion(y, pred, threshold)
        return {
            "metrics": metrics.classification_report(y, pred, threshold),
            "confusion": [[c["tn"], c["fp"]], [c["fn"], c["tp"]]],
            "roc": metrics.downsample_roc(fpr, tpr, th),
        }
    cm = metrics.multiclass_confusion(y, pred.argmax(axis=1), len(tgt.classes))
    return {"metrics": metrics.multiclass_report(y, pred), "confusion": cm.tolist()}


def evaluate_candidate(
    ec: EvaluateConfig,
    model_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    champion_dir: str | os.PathLike | None = None,
    notes: list[str] | None = None,
) -> EvalResult:
    """The candidate's metrics and the gate's decision, against the model in ``champion_dir``
    if given. ``notes``: why the caller found no usable champion (recorded in the report)."""
    t0 = time.perf_counter()
    cand = Predictor(model_dir)
    rules = GateRules.for_task(ec, cand.task)
    test = dataset_artifact.read_split(dataset_dir, "test").to_pandas()
    scored = score(cand, test, ec.threshold)
    champ_metrics = None
    notes = list(notes or [])
    if champion_dir is not None:
        try:
            champ = Predictor(champion_dir)
        except ArtifactError as e:  # its files damaged or gone since the registry looked
            notes.append(f"champion at {champion_dir} cannot be loaded ({e})")
        else:
            try:
                if champ.task != cand.task:
                    raise ValueError(f"it is a {champ.task} model, the candidate {cand.task}")
                champ_metrics = score(champ, test, ec.threshold)["metrics"]
            except (KeyError, ValueError) as e:
                notes.append(f"champion at {champion_dir} cannot score this test set ({e})")
    promote, reasons = gate(rules, scored["metrics"], champ_metrics)
    if notes:
        reasons = [NO_USABLE_CHAMPION if r == NO_CHAMPION else r for r in reasons]
    return EvalResult(
        task=cand.task,
        metrics=scored["metrics"],
        champion_metrics=champ_metrics,
        promote=promote,
        reasons=reasons + notes,
        notes=notes,
        metric=rules.metric,
        classes=cand.classes,
        confusion=scored.get("confusion"),
        roc=scored.get("roc", []),
        champion=None if champion_dir is None else str(champion_dir),
        seconds=time.perf_counter() - t0,
    )


def evaluate_against_registry(
    ec: EvaluateConfig,
    registry: Any,
    model_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
) -> EvalResult:
    """:func:`evaluate_candidate` against the champion ``registry`` (a
    :class:`~torchkfp.registry.Registry`) names: a local folder, or gs:// read through the GCS
    FUSE mount inside Vertex AI (downloaded to a temporary folder elsewhere). What the
    registry noted while looking (an alias naming a missing version, a champion whose
    artifacts were deleted) is "no usable champion", with the reason in the report's notes."""
    import tempfile

    from torchkfp.registry import gcs as registry_gcs

    found = registry.champion()
    notes = list(getattr(registry, "notes", []))
    if found is None or not found.startswith("gs://"):
        return evaluate_candidate(ec, model_dir, dataset_dir, found, notes)
    fuse = registry_gcs.readable_path(found)
    if fuse:
        r = evaluate_candidate(ec, model_dir, dataset_dir, fuse, notes)
        r.champion = found
        return r
    with tempfile.TemporaryDirectory(prefix="torchkfp-champion-") as tmp:
        project = getattr(getattr(registry, "vertex", None), "project", None)
        try:
            local = registry_gcs.download_folder(registry_gcs.client(project), found, tmp)
        except ArtifactError as e:  # gone since the registry looked
            notes.append(f"champion at {found} cannot be downloaded ({e})")
            return evaluate_candidate(ec, model_dir, dataset_dir, None, notes)
        r = evaluate_candidate(ec, model_dir, dataset_dir, local, notes)
    r.champion = found
    return r
