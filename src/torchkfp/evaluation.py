"""Stage 4: test-split metrics and the promotion gate (``evaluate_candidate``).

The candidate (and the current champion, if any) score the same raw test split through their
own bundled transforms. The metrics follow the task kind (binary: roc_auc, log_loss, accuracy,
precision, recall; multiclass: accuracy, log_loss, macro_f1 and a confusion matrix;
regression: rmse, mae, r2). The gate promotes when the candidate's metrics clear the
configured minimums and maximums and it beats the champion on the primary metric (in that
metric's direction) by more than ``evaluate.champion_margin``; a metric that is not a finite
number never passes. Finding the champion is the registry's job
(:func:`torchkfp.registry.open_registry`): this stage gets its folder.

Slices (``evaluate.slice_columns``): the test rows are grouped by each configured column's
values (NULL is a value of its own; per column the :data:`MAX_SLICE_VALUES` values with the most
rows), and ``metric`` is computed per slice for the candidate and the champion on the same rows.
On a slice with at least ``evaluate.slice_min_examples`` rows, a candidate worse than the
champion by more than ``evaluate.slice_tolerance`` (in the metric's direction) blocks the
promotion, with a reason naming the slice. Smaller slices are shown and never block; a slice on
which the metric is undefined (binary roc_auc with one class, r2 with one label value) is "not
comparable" and never blocks. The whole-test-set gate is unchanged.

Alongside the JSON report, :meth:`EvalResult.html` renders the HTML report
(:mod:`torchkfp.report`) from the predictions this stage already computed.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from torchkfp import metrics
from torchkfp import report as html_report
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.config import ConfigError, EvaluateConfig
from torchkfp.errors import ArtifactError
from torchkfp.predictor import Predictor

NO_CHAMPION = "no champion yet"
NO_USABLE_CHAMPION = "no usable champion (see notes); gating on the thresholds only"
MAX_SLICE_VALUES = 50
"""Per slice column, the values with the most test rows that are shown and gated (the others
are counted in ``slice_notes``), so a column with thousands of values stays readable."""


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
    slices: list[dict[str, Any]] = field(default_factory=list)
    """Per slice (``evaluate.slice_columns``): ``column``, ``value`` (None: NULL),
    ``examples``, ``candidate`` and ``champion`` (``metric`` on the slice's rows; None when
    there is no champion or the metric is undefined there), ``delta`` (candidate - champion),
    ``gated`` (enough rows to block), ``blocked`` (it blocked the promotion) and ``note``
    (why a slice is not gated or not comparable)."""
    slice_notes: list[str] = field(default_factory=list)
    """Per slice column with more than :data:`MAX_SLICE_VALUES` values: what was left out."""
    seconds: float = 0.0
    report_data: html_report.ReportData | None = field(default=None, repr=False, compare=False)
    """What the HTML report draws (the predictions on the test rows); not in the JSON."""

    def roc_columns(self) -> tuple[list[float], list[float], list[float]]:
        """(fpr, tpr, thresholds) as KFP's ClassificationMetrics.log_roc_curve takes them."""
        fpr, tpr, thr = (list(x) for x in zip(*self.roc, strict=True))
        return fpr, tpr, thr

    def confusion_matrix(self) -> tuple[list[str], list[list[int]]]:
        """(class names, rows) as ClassificationMetrics.log_confusion_matrix takes them."""
        return [str(c) for c in self.classes], self.confusion or []

    def save(self, path: str | os.PathLike) -> str:
        """Write the report JSON (parent folders created; written whole or not at all)."""
        return _write_atomic(path, json.dumps(self.to_dict(), indent=1, default=str))

    def blocked_slices(self) -> list[str]:
        """``column=value`` of every slice that blocked the promotion."""
        return [f"{s['column']}={value_text(s['value'])}" for s in self.slices if s["blocked"]]

    def html(self) -> str:
        """The HTML report (:func:`torchkfp.report.render`): plots, metrics beside the
        champion's, the gate's reasons, training curves and slices."""
        if self.report_data is None:
            raise ValueError(
                "this result holds no predictions to draw (made by evaluate_candidate)"
            )
        d = replace(
            self.report_data,
            promote=self.promote,
            reasons=list(self.reasons),
            slices=self.slices,
            slice_notes=list(self.slice_notes),
            details={**self.report_data.details, "champion model": self.champion or "none"},
        )
        return html_report.render(d)

    def save_html(self, path: str | os.PathLike) -> str:
        """Write the HTML report (parent folders created; written whole or not at all)."""
        return _write_atomic(path, self.html())

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
            "slices": self.slices,
            "slice_notes": self.slice_notes,
            "seconds": self.seconds,
        }


def _write_atomic(path: str | os.PathLike, text: str) -> str:
    """``text`` to ``path`` through a temporary file in the same folder, then a rename: a
    reader never sees half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return str(p)


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
    curves and matrices that go with them, and what they were computed from: ``pred`` (the
    predictions) and ``y`` (classification: class indices in the model's ``classes`` order;
    regression: the label in its units)."""
    tgt = p.target
    pred = p.predict(test)
    if p.task == "regression":
        y = tgt.values(test[tgt.label])
        return {"metrics": metrics.regression_report(y, pred), "pred": pred, "y": y}
    y = tgt.encode(test[tgt.label], "test")
    if p.task == "binary":
        fpr, tpr, th = metrics.roc_curve(y, pred)
        c = metrics.confusion(y, pred, threshold)
        return {
            "metrics": metrics.classification_report(y, pred, threshold),
            "confusion": [[c["tn"], c["fp"]], [c["fn"], c["tp"]]],
            "roc": metrics.downsample_roc(fpr, tpr, th),
            "pred": pred,
            "y": y,
        }
    cm = metrics.multiclass_confusion(y, pred.argmax(axis=1), len(tgt.classes))
    return {
        "metrics": metrics.multiclass_report(y, pred),
        "confusion": cm.tolist(),
        "pred": pred,
        "y": y,
    }


# ---- slices ------------------------------------------------------------------------------------
def check_slice_columns(names: list[str], columns: list[str]) -> list[str]:
    """The configured slice columns (each once, in order); ConfigError naming any that is not
    a column of the test split, with the columns it has."""
    wanted = list(dict.fromkeys(names))
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ConfigError(
            f"evaluate.slice_columns: {missing} not column(s) of the dataset's test split; "
            f"its columns are {list(columns)}: list some of them, or none"
        )
    return wanted


def _plain(v: Any) -> Any:
    """A slice value as JSON holds it: None for NULL/NaN, Python scalars, dates as ISO text."""
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):  # not a scalar
        return str(v)
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool | int | float | str):
        return v
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def value_text(v: Any) -> str:
    """A slice value as the report and the gate's reasons write it (None: ``NULL``)."""
    return "NULL" if v is None else str(v)


@dataclass
class SliceGate:
    """The slice check of one evaluation: the gate metric on every slice of the test rows."""

    task: str
    metric: str
    higher_is_better: bool
    threshold: float
    min_examples: int
    tolerance: float
    max_values: int = MAX_SLICE_VALUES

    @classmethod
    def for_rules(cls, ec: EvaluateConfig, rules: GateRules, task: str) -> SliceGate:
        return cls(
            task,
            rules.metric,
            rules.higher_is_better,
            ec.threshold,
            ec.slice_min_examples,
            ec.slice_tolerance,
        )

    def value(self, y: np.ndarray, pred: np.ndarray) -> tuple[float | None, str | None]:
        """The metric on one slice's rows, or (None, why it is undefined there)."""
        m = self.metric
        if self.task == "binary":
            if m == "roc_auc" and (y.min() == y.max()):
                return None, f"one class only: {m} undefined"
            if m == "recall" and not y.any():
                return None, f"no positive rows: {m} undefined"
            if m == "precision" and not (pred >= self.threshold).any():
                return None, f"no rows predicted positive: {m} undefined"
            return float(metrics.classification_report(y, pred, self.threshold)[m]), None
        if self.task == "multiclass":
            return float(metrics.multiclass_report(y, pred)[m]), None
        if m == "r2" and (y.min() == y.max()):
            return None, f"one label value only: {m} undefined"
        return float(metrics.regression_report(y, pred)[m]), None

    def groups(self, values: pd.Series) -> tuple[list[tuple[Any, np.ndarray]], str | None]:
        """(value, row positions) of the column's largest slices, most rows first (NULL is a
        value of its own), and a note when values were left out."""
        try:
            codes, uniques = pd.factorize(values, use_na_sentinel=False)
        except TypeError as e:
            raise ConfigError(
                f"evaluate.slice_columns: column {values.name!r} holds values that cannot be "
                f"grouped ({e}); slice by a column of plain values"
            ) from None
        counts = np.bincount(codes, minlength=len(uniques))
        keys = [_plain(u) for u in uniques]
        order = sorted(range(len(uniques)), key=lambda k: (-counts[k], value_text(keys[k])))
        kept = order[: self.max_values]
        note = None
        if len(order) > len(kept):
            left = order[len(kept) :]
            note = (
                f"{values.name}: {len(order)} values; the {len(kept)} with the most test rows "
                f"are shown and gated, the other {len(left)} ({int(counts[left].sum())} rows) "
                "are not"
            )
        by_code = np.argsort(codes, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(uniques)))]
        return [(keys[k], by_code[bounds[k] : bounds[k + 1]]) for k in kept], note

    def table(
        self,
        test: pd.DataFrame,
        columns: list[str],
        cand: tuple[np.ndarray, np.ndarray],
        champ: tuple[np.ndarray, np.ndarray] | None,
    ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
        """(rows, notes, blocking reasons): per column and value, the metric of the candidate
        and the champion (``(y, pred)`` each, on all test rows in the same order)."""
        rows: list[dict[str, Any]] = []
        notes: list[str] = []
        reasons: list[str] = []
        word = "higher" if self.higher_is_better else "lower"
        for col in columns:
            groups, note = self.groups(test[col].rename(col))
            if note:
                notes.append(note)
            for value, idx in groups:
                n = int(idx.size)
                c, why = self.value(cand[0][idx], cand[1][idx])
                h = None
                if champ is not None and why is None:
                    h, why = self.value(champ[0][idx], champ[1][idx])
                    why = f"champion: {why}" if why else None
                gated = n >= self.min_examples
                row = {
                    "column": col,
                    "value": value,
                    "examples": n,
                    "candidate": c if why is None else None,
                    "champion": h if why is None else None,
                    "delta": None,
                    "gated": gated,
                    "blocked": False,
                    "note": f"not comparable: {why}" if why else None,
                }
                if not gated:
                    less = f"fewer than {self.min_examples} rows: shown, never blocks"
                    row["note"] = f"{row['note']}; {less}" if row["note"] else less
                if why is None and h is not None:
                    row["delta"] = c - h if math.isfinite(c) and math.isfinite(h) else None
                    if gated and math.isfinite(h):
                        worse = (h - c) if self.higher_is_better else (c - h)
                        if not math.isfinite(c) or worse > self.tolerance:
                            row["blocked"] = True
                            by = f"worse by {worse:.4f}" if math.isfinite(c) else "not finite"
                            reasons.append(
                                f"slice {col}={value_text(value)} ({n} test rows): {self.metric} "
                                f"{c:.4f} vs champion {h:.4f}, {by}, more than "
                                f"slice_tolerance {self.tolerance} ({word} is better)"
                            )
                rows.append(row)
        return rows, notes, reasons


def evaluate_candidate(
    ec: EvaluateConfig,
    model_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    champion_dir: str | os.PathLike | None = None,
    notes: list[str] | None = None,
) -> EvalResult:
    """The candidate's metrics and the gate's decision, against the model in ``champion_dir``
    if given. ``notes``: why the caller found no usable champion (recorded in the report).
    The result also holds what the HTML report draws (:meth:`EvalResult.html`)."""
    t0 = time.perf_counter()
    cand = Predictor(model_dir)
    rules = GateRules.for_task(ec, cand.task)
    test = dataset_artifact.read_split(dataset_dir, "test").to_pandas()
    slice_cols = check_slice_columns(ec.slice_columns, list(test.columns))
    scored = score(cand, test, ec.threshold)
    champ_scored = None
    champ_classes: list[Any] = []
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
                champ_scored = score(champ, test, ec.threshold)
                champ_classes = champ.classes
            except (KeyError, ValueError) as e:
                notes.append(f"champion at {champion_dir} cannot score this test set ({e})")
    champ_metrics = champ_scored["metrics"] if champ_scored else None
    promote, reasons = gate(rules, scored["metrics"], champ_metrics)
    if notes:
        reasons = [NO_USABLE_CHAMPION if r == NO_CHAMPION else r for r in reasons]
    slices, slice_notes, blocking = SliceGate.for_rules(ec, rules, cand.task).table(
        test,
        slice_cols,
        (scored["y"], scored["pred"]),
        (champ_scored["y"], champ_scored["pred"]) if champ_scored else None,
    )
    if blocking:
        if promote:
            reasons.remove("promote")
        promote = False
        reasons += blocking
    history = (cand.metadata.get("training") or {}).get("history") or []
    data = html_report.ReportData(
        task=cand.task,
        y=scored["y"],
        candidate=html_report.ModelScores("candidate", scored["pred"], scored["metrics"]),
        champion=None
        if champ_scored is None
        else html_report.ModelScores(
            "champion",
            # drawn beside the candidate only on the same classes (same y)
            champ_scored["pred"] if champ_classes == cand.classes else None,
            champ_scored["metrics"],
        ),
        classes=cand.classes,
        threshold=ec.threshold,
        metric=rules.metric,
        history=history if isinstance(history, list) else [],
        best_epoch=(cand.metadata.get("training") or {}).get("best_epoch"),
        slice_min_examples=ec.slice_min_examples,
        slice_tolerance=ec.slice_tolerance,
        details={"candidate model": str(model_dir), "dataset": str(dataset_dir)},
    )
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
        slices=slices,
        slice_notes=slice_notes,
        seconds=time.perf_counter() - t0,
        report_data=data,
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
