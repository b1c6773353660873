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

The test split is streamed (:func:`stream_scores`): shard by shard, only the columns the
candidate, the champion and the slices read, scored in chunks of the predictor's own chunk
size, so the predictions, metrics, slices and gate are those of scoring the split read whole,
to the bit. What is kept per test row: the targets and predictions of each model and an int32
code per slice column, so memory grows by a few numbers a row, not by the rows.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from torchkfp import metrics
from torchkfp import report as html_report
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.config import ConfigError, EvaluateConfig
from torchkfp.errors import ArtifactError, DataValidationError
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


def score(
    p: Predictor, test: pd.DataFrame, threshold: float, split: str = "test"
) -> dict[str, Any]:
    """A model's metrics on raw rows held in memory (its own transform and classes), plus the
    curves and matrices that go with them, and what they were computed from: ``pred`` (the
    predictions) and ``y`` (classification: class indices in the model's ``classes`` order;
    regression: the label in its units). :func:`stream_scores` is the same over a split read
    chunk by chunk."""
    pred = p.predict(test)
    return scores_from(p, targets(p, test, split), pred, threshold)


def targets(p: Predictor, rows: pd.DataFrame, split: str = "test") -> np.ndarray:
    """What the metrics compare ``p``'s predictions with: classification, the class indices
    (:meth:`~torchkfp.labels.Target.encode`); regression, the label in its units."""
    tgt = p.target
    if p.task == "regression":
        return tgt.values(rows[tgt.label])
    return tgt.encode(rows[tgt.label], split)


def scores_from(p: Predictor, y: np.ndarray, pred: np.ndarray, threshold: float) -> dict[str, Any]:
    """:func:`score`'s result from the targets and the predictions of all the rows."""
    if p.task == "regression":
        return {"metrics": metrics.regression_report(y, pred), "pred": pred, "y": y}
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
    cm = metrics.multiclass_confusion(y, pred.argmax(axis=1), len(p.target.classes))
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


def _ungroupable(name: Any, e: Exception) -> ConfigError:
    return ConfigError(
        f"evaluate.slice_columns: column {name!r} holds values that cannot be "
        f"grouped ({e}); slice by a column of plain values"
    )


def _is_null(v: Any) -> bool:
    try:
        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):  # not a scalar
        return False


class RowArray:
    """Per-row values filled chunk by chunk into one array sized for the split's rows
    (``rows``; grown should more rows come), so a long stream leaves one block of memory,
    not a chunk's worth of small arrays to join."""

    def __init__(self, rows: int = 0):
        self.rows = rows
        self.array: np.ndarray | None = None
        self.n = 0

    def add(self, part: np.ndarray) -> None:
        part = np.asarray(part)
        end = self.n + len(part)
        if self.array is None:
            self.array = np.empty((max(self.rows, len(part)), *part.shape[1:]), part.dtype)
        elif end > len(self.array):
            grown = np.empty((max(2 * len(self.array), end), *part.shape[1:]), self.array.dtype)
            grown[: self.n] = self.array[: self.n]
            self.array = grown
        self.array[self.n : end] = part
        self.n = end

    def result(self, empty: np.ndarray) -> np.ndarray:
        """The values added (``empty`` when none were)."""
        return empty if self.array is None else self.array[: self.n]


@dataclass
class SliceCodes:
    """One slice column of the test rows, compact: per row an int32 ``codes`` entry indexing
    ``values`` (each as the report writes it, see :func:`_plain`; None: NULL), in the order
    the values first appear."""

    name: str
    codes: np.ndarray
    values: list[Any]


class SliceCollector:
    """Builds a column's :class:`SliceCodes` chunk by chunk (:meth:`add`), grouping the
    values as ``pd.factorize`` groups the whole column: every missing value is one NULL
    value, and an integer column with a NULL anywhere has float values (as pandas converts
    it whole), whatever the chunk. Memory: an int32 per row and the distinct values."""

    def __init__(self, name: str, rows: int = 0):
        """``rows``: how many rows will come, if known (the codes are stored in one array)."""
        self.name = name
        self._index: dict[Any, int] = {}
        self._raw: list[Any] = []
        self._null: int | None = None
        self._integer = False
        self._codes = RowArray(rows)

    def add(self, values: pd.Series, arrow_type: pa.DataType | None = None) -> None:
        """The column's next rows (``arrow_type``: the column's type in the dataset)."""
        if arrow_type is not None and pa.types.is_integer(arrow_type):
            self._integer = True
        try:
            codes, uniques = pd.factorize(values, use_na_sentinel=False)
            lut = np.empty(len(uniques), dtype=np.int32)
            for i, u in enumerate(uniques):
                if _is_null(u):
                    if self._null is None:
                        self._null = len(self._raw)
                        self._raw.append(None)
                    lut[i] = self._null
                    continue
                g = self._index.get(u)
                if g is None:
                    g = self._index[u] = len(self._raw)
                    self._raw.append(u)
                lut[i] = g
        except TypeError as e:  # unhashable values (lists, dicts)
            raise _ungroupable(self.name, e) from None
        self._codes.add(lut[codes])

    def result(self) -> SliceCodes:
        as_float = self._integer and self._null is not None
        plain = [None if v is None else _plain(float(v) if as_float else v) for v in self._raw]
        # values that became equal (integers beyond 2**53 made floats) are one value
        merged: dict[Any, int] = {}
        remap = np.array([merged.setdefault(v, len(merged)) for v in plain], dtype=np.int32)
        codes = self._codes.result(np.zeros(0, np.int32))
        self._codes = RowArray()
        if len(merged) < len(plain):
            codes = remap[codes]
        return SliceCodes(self.name, codes, list(merged))


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

    def groups(
        self, values: pd.Series | SliceCodes
    ) -> tuple[list[tuple[Any, np.ndarray]], str | None]:
        """(value, row positions) of the column's largest slices, most rows first (NULL is a
        value of its own), and a note when values were left out. ``values``: the column's
        values, or their :class:`SliceCodes` (collected while streaming)."""
        if isinstance(values, SliceCodes):
            return self._ranked(values.name, values.codes, values.values)
        try:
            codes, uniques = pd.factorize(values, use_na_sentinel=False)
        except TypeError as e:
            raise _ungroupable(values.name, e) from None
        return self._ranked(values.name, codes, [_plain(u) for u in uniques])

    def _ranked(
        self, name: Any, codes: np.ndarray, keys: list[Any]
    ) -> tuple[list[tuple[Any, np.ndarray]], str | None]:
        counts = np.bincount(codes, minlength=len(keys))
        order = sorted(range(len(keys)), key=lambda k: (-counts[k], value_text(keys[k])))
        kept = order[: self.max_values]
        note = None
        if len(order) > len(kept):
            left = order[len(kept) :]
            note = (
                f"{name}: {len(order)} values; the {len(kept)} with the most test rows "
                f"are shown and gated, the other {len(left)} ({int(counts[left].sum())} rows) "
                "are not"
            )
        by_code = np.argsort(codes, kind="stable")
        bounds = np.r_[0, np.cumsum(counts)]
        return [(keys[k], by_code[bounds[k] : bounds[k + 1]]) for k in kept], note

    def table(
        self,
        test: pd.DataFrame | Mapping[str, SliceCodes],
        columns: list[str],
        cand: tuple[np.ndarray, np.ndarray],
        champ: tuple[np.ndarray, np.ndarray] | None,
    ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
        """(rows, notes, blocking reasons): per column and value, the metric of the candidate
        and the champion (``(y, pred)`` each, on all test rows in the same order). ``test``:
        the test rows, or their slice columns as :class:`SliceCodes`."""
        rows: list[dict[str, Any]] = []
        notes: list[str] = []
        reasons: list[str] = []
        word = "higher" if self.higher_is_better else "lower"
        for col in columns:
            values = test[col]
            groups, note = self.groups(
                values if isinstance(values, SliceCodes) else values.rename(col)
            )
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


# ---- streaming a split -------------------------------------------------------------------------
READ_ROWS = 65_536
"""Rows read from a shard at a time (:func:`torchkfp.artifacts.dataset.iter_split`)."""


def _chunks(batches: Any, rows: int) -> Any:
    """``batches`` regrouped into tables of exactly ``rows`` rows (the last: the rest),
    whatever the shards' and batches' sizes."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - held, batch.num_rows)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows:
                yield pa.Table.from_batches(pending)
                pending, held = [], 0
    if held:
        yield pa.Table.from_batches(pending)


class _ModelStream:
    """One model's predictions and targets over a split scored chunk by chunk. A chunk it
    cannot score ends its scoring; a classification label problem (missing values, classes
    it never saw) is still counted over the rest of the split, so the error names what the
    whole split holds, as scoring it at once does (:meth:`~torchkfp.labels.Target.encode`'s
    own message)."""

    def __init__(self, p: Predictor, split: str, raises: bool, rows: int = 0):
        self.p, self.split, self.raises = p, split, raises
        self.preds = RowArray(rows)
        self.ys = RowArray(rows)
        self.error: Exception | None = None
        self._labels_bad = False
        self._missing = 0
        self._unseen: dict[str, Any] = {}

    def _fail(self, e: Exception) -> None:
        self.error = e
        self.preds, self.ys = RowArray(), RowArray()

    def add(self, rows: pd.DataFrame) -> None:
        if self.error is not None:
            if self._labels_bad:
                self._count_label_problems(rows)
            return
        try:
            pred = self.p.predict(rows)
        except (KeyError, ValueError) as e:
            if self.raises:
                raise
            self._fail(e)
            return
        try:
            y = targets(self.p, rows, self.split)
        except DataValidationError as e:
            if self.raises and self.p.task == "regression":
                raise
            self._fail(e)
            if self.p.task != "regression":
                self._labels_bad = True
                self._count_label_problems(rows)
            return
        self.preds.add(pred)
        self.ys.add(y)

    def _count_label_problems(self, rows: pd.DataFrame) -> None:
        tgt = self.p.target
        values = rows[tgt.label]
        self._missing += int(values.isna().sum())
        known = values[values.notna()]
        native = known.map(lambda v: v.item() if hasattr(v, "item") else v).astype(object)
        unseen = known[pd.Index(tgt.classes).get_indexer(native) < 0]
        for v in unseen.unique():
            self._unseen.setdefault(str(v), v)
        if len(self._unseen) > 10:  # the error names the 10 first in text order
            self._unseen = {k: self._unseen[k] for k in sorted(self._unseen)[:10]}

    def result(self, threshold: float) -> dict[str, Any] | Exception:
        """:func:`score`'s result on all the rows, or the error that stopped the scoring."""
        if self._labels_bad:
            label = self.p.target.label
            if self._missing:
                values = pd.Series([None] * self._missing, dtype=object)
            else:
                values = pd.Series(list(self._unseen.values()), dtype=object)
            try:  # the label problems of the whole split, in encode's words
                targets(self.p, pd.DataFrame({label: values}), self.split)
            except DataValidationError as e:
                self.error = e
            if self.raises:
                raise self.error  # type: ignore[misc]
        if self.error is not None:
            return self.error
        # a chunk is always scored (an empty split: its empty rows), so both hold arrays
        pred = self.preds.result(np.zeros(0))
        y = self.ys.result(np.zeros(0))
        self.preds, self.ys = RowArray(), RowArray()
        return scores_from(self.p, y, pred, threshold)


def _lacking(p: Predictor, columns: list[str]) -> KeyError | None:
    """The KeyError scoring rows without ``p``'s features or label raises (what
    :func:`score` raises on such rows), or None when ``columns`` has them all."""
    missing = [c for c in p.feature_names if c not in columns]
    if missing:
        return KeyError(f"missing feature column(s): {missing}")
    if p.target.label not in columns:
        return KeyError(p.target.label)
    return None


def stream_scores(
    models: Sequence[Predictor],
    dataset_dir: str | os.PathLike,
    split: str = "test",
    *,
    threshold: float = 0.5,
    slice_columns: Sequence[str] = (),
    batch_rows: int = READ_ROWS,
) -> tuple[list[dict[str, Any] | Exception], dict[str, SliceCodes]]:
    """Each model's :func:`score` on one split of a Dataset artifact, reading the split
    shard by shard in batches of ``batch_rows`` rows, and the ``slice_columns`` (checked:
    ConfigError) as :class:`SliceCodes`; the same results as scoring the split read whole.

    Only the columns the models and the slices need are read. The rows are scored in chunks
    of the predictor's :data:`~torchkfp.predictor.CHUNK` rows (one network call each, the
    rows scoring the whole split would give it, so the predictions are the same to the bit);
    per row only the targets, the predictions and the slice codes are kept.

    The first model's errors are raised (a column it needs missing: DataValidationError);
    for the others, a model that cannot score the rows (KeyError, ValueError; a column it
    needs missing: the KeyError :func:`score` raises) has its error in its place."""
    from torchkfp import predictor as predictor_module

    schema, rows = dataset_artifact.split_layout(dataset_dir, split)
    slice_cols = check_slice_columns(list(slice_columns), schema.names)
    results: list[dict[str, Any] | Exception | None] = [None] * len(models)
    streams: list[_ModelStream] = []
    wanted: list[str] = []
    for i, p in enumerate(models):
        lacks = _lacking(p, schema.names)
        if lacks is not None:
            if i == 0:
                need = [*p.feature_names, p.target.label]
                raise DataValidationError(
                    f"dataset {str(dataset_dir)!r}: the {split} split lacks column(s) "
                    f"{[c for c in need if c not in schema.names]} that the model at "
                    f"{str(p.path)!r} reads (its features and its label); score it on a "
                    "dataset with its columns (the one its features were built from)"
                )
            results[i] = lacks
            continue
        streams.append(_ModelStream(p, split, raises=i == 0, rows=rows))
        wanted += [*p.feature_names, p.target.label]
    columns = list(dict.fromkeys(wanted + slice_cols))
    collectors = {c: SliceCollector(c, rows) for c in slice_cols}
    chunk_rows = predictor_module.CHUNK
    scored = 0
    batches = dataset_artifact.iter_split(dataset_dir, split, columns, batch_rows)
    for table in _chunks(batches, chunk_rows):
        _stream_chunk(table, streams, collectors)
        scored += table.num_rows
    if not scored:  # an empty split: scored as the empty rows (what reading it whole gives)
        _stream_chunk(schema.empty_table().select(columns), streams, collectors)
    done = iter(s.result(threshold) for s in streams)
    out = [r if r is not None else next(done) for r in results]
    return out, {c: collectors[c].result() for c in slice_cols}


def _stream_chunk(
    table: pa.Table, streams: list[_ModelStream], collectors: dict[str, SliceCollector]
) -> None:
    rows = table.to_pandas()
    for s in streams:
        s.add(rows)
    for name, c in collectors.items():
        c.add(rows[name], table.schema.field(name).type)


def evaluate_candidate(
    ec: EvaluateConfig,
    model_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    champion_dir: str | os.PathLike | None = None,
    notes: list[str] | None = None,
    *,
    batch_rows: int = READ_ROWS,
) -> EvalResult:
    """The candidate's metrics and the gate's decision, against the model in ``champion_dir``
    if given. ``notes``: why the caller found no usable champion (recorded in the report).
    The result also holds what the HTML report draws (:meth:`EvalResult.html`).

    The test split is streamed (:func:`stream_scores`, ``batch_rows`` rows read at a time):
    memory holds, per test row, the targets and predictions of both models and a code per
    slice column, never the rows themselves."""
    t0 = time.perf_counter()
    cand = Predictor(model_dir)
    rules = GateRules.for_task(ec, cand.task)
    notes = list(notes or [])
    champ = None
    if champion_dir is not None:
        try:
            champ = Predictor(champion_dir)
        except ArtifactError as e:  # its files damaged or gone since the registry looked
            notes.append(f"champion at {champion_dir} cannot be loaded ({e})")
        else:
            if champ.task != cand.task:
                notes.append(
                    f"champion at {champion_dir} cannot score this test set (it is a "
                    f"{champ.task} model, the candidate {cand.task})"
                )
                champ = None
    results, slice_codes = stream_scores(
        [cand] if champ is None else [cand, champ],
        dataset_dir,
        "test",
        threshold=ec.threshold,
        slice_columns=ec.slice_columns,
        batch_rows=batch_rows,
    )
    scored = results[0]
    assert isinstance(scored, dict)  # the candidate's errors are raised
    champ_scored = None
    champ_classes: list[Any] = []
    if champ is not None:
        if isinstance(results[1], Exception):
            notes.append(f"champion at {champion_dir} cannot score this test set ({results[1]})")
        else:
            champ_scored = results[1]
            champ_classes = champ.classes
    champ_metrics = champ_scored["metrics"] if champ_scored else None
    promote, reasons = gate(rules, scored["metrics"], champ_metrics)
    if notes:
        reasons = [NO_USABLE_CHAMPION if r == NO_CHAMPION else r for r in reasons]
    slices, slice_notes, blocking = SliceGate.for_rules(ec, rules, cand.task).table(
        slice_codes,
        list(slice_codes),
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
