"""The evaluation report: one self-contained HTML page per run (KFP ``HTML`` output, so Vertex
AI's console shows it). Plots are inline SVG drawn here: nothing is loaded from the network and
no plotting library is needed.

Per task kind:

- binary: ROC and precision-recall curves, a reliability (calibration) plot, the score
  histogram per class, the confusion matrix at the threshold;
- multiclass: one-vs-rest ROC and precision-recall curves per class, the reliability of the
  top class, the top-class probability histogram (right vs wrong), the confusion matrix;
- regression: predicted vs actual, the residual histogram and residuals vs predicted;
- every kind: the gate's decision and reasons, the candidate's metrics beside the champion's,
  the training curves from the trainer's history (losses, the validation metric ``val_<name>``,
  the learning rate), and per-slice metrics (with the slices that blocked a promotion marked).

:func:`find_run_report` finds a local run's report (``torchkfp report``).

:func:`render` takes plain arrays and dicts (what the evaluation already computed); it does
not read artifacts.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from torchkfp import metrics
from torchkfp.errors import ArtifactError

_W, _H = 360, 260  # plot size in px
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 48, 12, 14, 36
_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_MAX_CLASS_CURVES = 10  # multiclass: one-vs-rest curves for at most this many classes
_MAX_POINTS = 2000  # scatter plots are down-sampled to this many points


@dataclass
class ModelScores:
    """One model's predictions on the test rows: probabilities of the positive class (binary),
    class probabilities [N, K] (multiclass) or values (regression). ``pred`` None: only its
    metrics are shown (e.g. a champion with other classes than the candidate's ``y``)."""

    name: str
    pred: np.ndarray | None
    metrics: dict[str, float]


@dataclass
class ReportData:
    task: str
    y: np.ndarray
    """Binary/multiclass: class indices; regression: the true values."""
    candidate: ModelScores
    champion: ModelScores | None = None
    classes: list[Any] = field(default_factory=list)
    threshold: float = 0.5
    metric: str = ""
    promote: bool | None = None
    reasons: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    """The trainer's per-epoch records (``epoch``, ``train_loss``, ``val_loss``,
    ``val_<metric>``, ``learning_rate``)."""
    best_epoch: int | None = None
    """The epoch whose weights the model kept (lowest validation loss), if known."""
    slices: list[dict[str, Any]] = field(default_factory=list)
    """Per-slice rows: ``column``, ``value`` (None: NULL), ``examples``, ``candidate``,
    ``champion``, ``delta``, ``blocked``, and optionally ``note`` (see
    :mod:`torchkfp.evaluation`)."""
    slice_notes: list[str] = field(default_factory=list)
    """What the slice table leaves out (values beyond the per-column cap)."""
    slice_min_examples: int | None = None
    slice_tolerance: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Shown under the title: e.g. the candidate, champion and dataset paths."""
    title: str = "torchkfp evaluation report"


# ---- SVG primitives ---------------------------------------------------------------------------
class _Axes:
    def __init__(self, xlim: tuple[float, float], ylim: tuple[float, float]):
        self.x0, self.x1 = xlim
        self.y0, self.y1 = ylim
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1.0

    def px(self, x: float) -> float:
        return _PAD_L + (x - self.x0) / (self.x1 - self.x0) * (_W - _PAD_L - _PAD_R)

    def py(self, y: float) -> float:
        return _H - _PAD_B - (y - self.y0) / (self.y1 - self.y0) * (_H - _PAD_T - _PAD_B)


def _fmt(v: float) -> str:
    if v == 0 or (1e-3 <= abs(v) < 1e5):
        return f"{v:.3g}"
    return f"{v:.2e}"


def _frame(ax: _Axes, xlabel: str, ylabel: str, body: list[str], title: str) -> str:
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" role="img" aria-label="{html.escape(title)}">',
        f'<rect x="{_PAD_L}" y="{_PAD_T}" width="{_W - _PAD_L - _PAD_R}" '
        f'height="{_H - _PAD_T - _PAD_B}" fill="#fff" stroke="#999"/>',
    ]
    for i in range(5):
        fx = ax.x0 + (ax.x1 - ax.x0) * i / 4
        fy = ax.y0 + (ax.y1 - ax.y0) * i / 4
        out.append(
            f'<text x="{ax.px(fx):.1f}" y="{_H - _PAD_B + 14}" font-size="10" '
            f'text-anchor="middle">{_fmt(fx)}</text>'
        )
        out.append(
            f'<text x="{_PAD_L - 4}" y="{ax.py(fy) + 3:.1f}" font-size="10" '
            f'text-anchor="end">{_fmt(fy)}</text>'
        )
    out.append(
        f'<text x="{(_PAD_L + _W - _PAD_R) / 2}" y="{_H - 6}" font-size="11" '
        f'text-anchor="middle">{html.escape(xlabel)}</text>'
    )
    out.append(
        f'<text x="12" y="{(_PAD_T + _H - _PAD_B) / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {(_PAD_T + _H - _PAD_B) / 2})">{html.escape(ylabel)}</text>'
    )
    out.extend(body)
    out.append("</svg>")
    return f"<figure><figcaption>{html.escape(title)}</figcaption>{''.join(out)}</figure>"


def _legend(names: Sequence[str]) -> list[str]:
    out = []
    for i, n in enumerate(names):
        y = _PAD_T + 12 + 13 * i
        out.append(
            f'<rect x="{_PAD_L + 8}" y="{y - 8}" width="10" height="3" '
            f'fill="{_COLORS[i % len(_COLORS)]}"/>'
            f'<text x="{_PAD_L + 22}" y="{y - 4}" font-size="10">{html.escape(n)}</text>'
        )
    return out


def _finite_pairs(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
    return [
        (float(x), float(y))
        for x, y in zip(xs, ys, strict=True)
        if math.isfinite(float(x)) and math.isfinite(float(y))
    ]


def line_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    diagonal: bool = False,
    markers: bool = False,
) -> str:
    """Lines (one per series: name, xs, ys) in one SVG figure."""
    pts = [_finite_pairs(xs, ys) for _, xs, ys in series]
    allx = [x for p in pts for x, _ in p] or [0.0, 1.0]
    ally = [y for p in pts for _, y in p] or [0.0, 1.0]
    ax = _Axes(xlim or (min(allx), max(allx)), ylim or (min(ally), max(ally)))
    body = []
    if diagonal:
        lo, hi = max(ax.x0, ax.y0), min(ax.x1, ax.y1)
        body.append(
            f'<line x1="{ax.px(lo):.1f}" y1="{ax.py(lo):.1f}" x2="{ax.px(hi):.1f}" '
            f'y2="{ax.py(hi):.1f}" stroke="#bbb" stroke-dasharray="4 3"/>'
        )
    for i, p in enumerate(pts):
        color = _COLORS[i % len(_COLORS)]
        if len(p) > 1:
            d = " ".join(f"{ax.px(x):.1f},{ax.py(y):.1f}" for x, y in p)
            body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{d}"/>')
        if markers or len(p) == 1:
            body.extend(
                f'<circle cx="{ax.px(x):.1f}" cy="{ax.py(y):.1f}" r="2.5" fill="{color}"/>'
                for x, y in p
            )
    body.extend(_legend([name for name, _, _ in series]))
    return _frame(ax, xlabel, ylabel, body, title)


def histogram(
    title: str,
    groups: Sequence[tuple[str, np.ndarray]],
    xlabel: str,
    bins: int = 30,
    xlim: tuple[float, float] | None = None,
) -> str:
    """Overlaid step histograms (share of each group per bin)."""
    values = [np.asarray(v, dtype=np.float64) for _, v in groups]
    values = [v[np.isfinite(v)] for v in values]
    both = np.concatenate(values) if values else np.zeros(1)
    lo, hi = xlim or ((float(both.min()), float(both.max())) if both.size else (0.0, 1.0))
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    shares = [
        np.histogram(v, bins=edges)[0] / max(1, v.size) if v.size else np.zeros(bins)
        for v in values
    ]
    top = max((float(s.max()) for s in shares), default=1.0) or 1.0
    series = []
    for (name, _), s in zip(groups, shares, strict=True):
        xs = np.repeat(edges, 2)[1:-1]
        ys = np.repeat(s, 2)
        series.append((name, xs.tolist(), ys.tolist()))
    return line_chart(title, series, xlabel, "share of rows", (lo, hi), (0.0, top * 1.05))


def scatter(
    title: str, xs: np.ndarray, ys: np.ndarray, xlabel: str, ylabel: str, diagonal: bool = False
) -> str:
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size > _MAX_POINTS:  # evenly spaced rows: deterministic
        idx = np.linspace(0, xs.size - 1, _MAX_POINTS).astype(np.int64)
        xs, ys = xs[idx], ys[idx]
    if xs.size == 0:
        xs = ys = np.zeros(1)
    if diagonal:
        lo, hi = float(min(xs.min(), ys.min())), float(max(xs.max(), ys.max()))
        ax = _Axes((lo, hi), (lo, hi))
    else:
        ax = _Axes((float(xs.min()), float(xs.max())), (float(ys.min()), float(ys.max())))
    body = []
    if diagonal:
        body.append(
            f'<line x1="{ax.px(ax.x0):.1f}" y1="{ax.py(ax.x0):.1f}" x2="{ax.px(ax.x1):.1f}" '
            f'y2="{ax.py(ax.x1):.1f}" stroke="#bbb" stroke-dasharray="4 3"/>'
        )
    body.extend(
        f'<circle cx="{ax.px(x):.1f}" cy="{ax.py(y):.1f}" r="1.6" fill="{_COLORS[0]}" '
        'fill-opacity="0.35"/>'
        for x, y in zip(xs.tolist(), ys.tolist(), strict=True)
    )
    return _frame(ax, xlabel, ylabel, body, title)


# ---- curves -----------------------------------------------------------------------------------
def precision_recall(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at each distinct score, highest threshold first."""
    tps, predicted, _ = metrics.ranked_counts(y, p)
    pos = tps[-1] if tps.size else 0.0
    recall = tps / pos if pos else np.zeros_like(tps)
    precision = tps / predicted
    return recall, precision


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[list[float], list[float]]:
    """Mean predicted probability vs observed frequency per equal-width bin (empty bins left
    out)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    mean_p, freq = [], []
    for b in range(bins):
        m = which == b
        if m.any():
            mean_p.append(float(p[m].mean()))
            freq.append(float(np.asarray(y, np.float64)[m].mean()))
    return mean_p, freq


def _downsample(xs: np.ndarray, ys: np.ndarray, n: int = 400) -> tuple[list[float], list[float]]:
    if xs.size <= n:
        return xs.tolist(), ys.tolist()
    idx = np.unique(np.linspace(0, xs.size - 1, n).astype(np.int64))
    return xs[idx].tolist(), ys[idx].tolist()


# ---- sections ---------------------------------------------------------------------------------
def _models(d: ReportData) -> list[ModelScores]:
    """The models drawn on the plots: those with predictions."""
    both = [d.candidate] + ([d.champion] if d.champion is not None else [])
    return [m for m in both if m.pred is not None]


def _binary_plots(d: ReportData) -> list[str]:
    y = np.asarray(d.y)
    roc, pr, rel = [], [], []
    for m in _models(d):
        fpr, tpr, _ = metrics.roc_curve(y, m.pred)
        roc.append((m.name, *_downsample(fpr, tpr)))
        rec, prec = precision_recall(y, m.pred)
        pr.append((m.name, *_downsample(rec, prec)))
        rel.append((m.name, *reliability(y, m.pred)))
    c = d.candidate.pred
    return [
        line_chart(
            "ROC curve",
            roc,
            "false positive rate",
            "true positive rate",
            (0, 1),
            (0, 1),
            diagonal=True,
        ),
        line_chart("Precision-recall curve", pr, "recall", "precision", (0, 1), (0, 1)),
        line_chart(
            "Reliability (calibration)",
            rel,
            "mean predicted probability",
            "observed positive rate",
            (0, 1),
            (0, 1),
            diagonal=True,
            markers=True,
        ),
        histogram(
            "Candidate score histogram by class",
            [(f"{_cls(d, 0)} (negative)", c[y == 0]), (f"{_cls(d, 1)} (positive)", c[y == 1])],
            "predicted probability of the positive class",
            xlim=(0.0, 1.0),
        ),
    ]


def _cls(d: ReportData, i: int) -> str:
    return str(d.classes[i]) if i < len(d.classes) else str(i)


def _confusion_table(d: ReportData) -> str:
    y = np.asarray(d.y).astype(np.int64)
    p = d.candidate.pred
    if d.task == "binary":
        pred = (p >= d.threshold).astype(np.int64)
        k = 2
        caption = f"Confusion matrix (threshold {d.threshold:g}); rows: true, columns: predicted"
    else:
        pred = p.argmax(axis=1)
        k = p.shape[1]
        caption = "Confusion matrix; rows: true, columns: predicted"
    cm = metrics.multiclass_confusion(y, pred, k)
    top = max(1, int(cm.max()))
    head = "".join(f"<th>{html.escape(_cls(d, j))}</th>" for j in range(k))
    rows = []
    for i in range(k):
        cells = "".join(
            f'<td style="background:rgba(31,119,180,{cm[i, j] / top * 0.8:.2f})">{cm[i, j]}</td>'
            for j in range(k)
        )
        rows.append(f"<tr><th>{html.escape(_cls(d, i))}</th>{cells}</tr>")
    return (
        f'<table class="cm"><caption>{html.escape(caption)}</caption>'
        f"<tr><th></th>{head}</tr>{''.join(rows)}</table>"
    )


def _multiclass_plots(d: ReportData) -> list[str]:
    y = np.asarray(d.y).astype(np.int64)
    rel = []
    for m in _models(d):
        top = m.pred.max(axis=1)
        hit = (m.pred.argmax(axis=1) == y).astype(np.float64)
        rel.append((m.name, *reliability(hit, top)))
    c = np.asarray(d.candidate.pred)
    k = c.shape[1]
    shown = list(range(min(k, _MAX_CLASS_CURVES)))
    roc, pr = [], []
    for j in shown:
        yj = (y == j).astype(np.float64)
        if 0 < yj.sum() < yj.size:  # both sides present: the curves are defined
            fpr, tpr, _ = metrics.roc_curve(yj, c[:, j])
            roc.append((_cls(d, j), *_downsample(fpr, tpr)))
            rec, prec = precision_recall(yj, c[:, j])
            pr.append((_cls(d, j), *_downsample(rec, prec)))
    more = f" (first {len(shown)} of {k} classes)" if k > len(shown) else ""
    top_c = c.max(axis=1)
    right = c.argmax(axis=1) == y
    return [
        line_chart(
            f"One-vs-rest ROC curves, candidate{more}",
            roc,
            "false positive rate",
            "true positive rate",
            (0, 1),
            (0, 1),
            diagonal=True,
        ),
        line_chart(
            f"One-vs-rest precision-recall curves, candidate{more}",
            pr,
            "recall",
            "precision",
            (0, 1),
            (0, 1),
        ),
        histogram(
            "Candidate top-class probability histogram",
            [("right class", top_c[right]), ("wrong class", top_c[~right])],
            "probability of the predicted class",
            xlim=(0.0, 1.0),
        ),
        line_chart(
            "Reliability of the top class",
            rel,
            "mean top-class probability",
            "observed accuracy",
            (0, 1),
            (0, 1),
            diagonal=True,
            markers=True,
        ),
    ]


def _regression_plots(d: ReportData) -> list[str]:
    y = np.asarray(d.y, np.float64)
    pred = np.asarray(d.candidate.pred, np.float64)
    resid = y - pred
    return [
        scatter("Predicted vs actual", pred, y, "predicted", "actual", diagonal=True),
        histogram("Residuals (actual - predicted)", [("candidate", resid)], "residual"),
        scatter("Residuals vs predicted", pred, resid, "predicted", "residual"),
    ]


def _history_series(history: list[dict], key: str, epochs: list[float]) -> list[tuple]:
    ys = [h.get(key) for h in history]
    if not any(isinstance(v, int | float) and not isinstance(v, bool) for v in ys):
        return []
    return [(key, epochs, [v if isinstance(v, int | float) else math.nan for v in ys])]


def _training_plot(d: ReportData) -> str:
    history = [h for h in d.history if isinstance(h, dict)]
    if not history:
        return "<p>No training history recorded in the model artifact.</p>"
    epochs = [h.get("epoch", i) for i, h in enumerate(history)]
    out = []
    if d.best_epoch is not None:
        out.append(
            f"<p>{len(history)} epochs; the model kept the weights of epoch {d.best_epoch} "
            "(lowest validation loss).</p>"
        )
    loss = [
        *_history_series(history, "train_loss", epochs),
        *_history_series(history, "val_loss", epochs),
    ]
    out.append(line_chart("Training curves", loss, "epoch", "loss", markers=True))
    keys = sorted({k for h in history for k in h if k.startswith("val_") and k != "val_loss"})
    for key in keys:
        series = _history_series(history, key, epochs)
        if series:
            name = key.removeprefix("val_")
            out.append(
                line_chart(f"Validation {name} per epoch", series, "epoch", name, markers=True)
            )
    lr = _history_series(history, "learning_rate", epochs)
    if lr:
        out.append(line_chart("Learning rate", lr, "epoch", "learning rate", markers=True))
    return "".join(out)


def _metrics_table(d: ReportData) -> str:
    champ = d.champion.metrics if d.champion else {}
    names = [k for k in d.candidate.metrics if k != "examples"]
    head = "<tr><th>metric</th><th>candidate</th>" + ("<th>champion</th>" if champ else "")
    rows = [head + "</tr>"]
    for k in names:
        mark = ' class="primary"' if k == d.metric else ""
        row = f"<tr{mark}><td>{html.escape(k)}</td><td>{_num(d.candidate.metrics.get(k))}</td>"
        if champ:
            row += f"<td>{_num(champ.get(k))}</td>"
        rows.append(row + "</tr>")
    return f'<table class="metrics">{"".join(rows)}</table>'


def _num(v: Any) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return f"{v:.4f}" if isinstance(v, float) else str(v)
    return "-" if v is None else html.escape(str(v))


def _value(v: Any) -> str:
    return "NULL" if v is None else str(v)


def _slices_table(d: ReportData) -> str:
    if not d.slices:
        return "<p>No slices configured (<code>evaluate.slice_columns</code>).</p>"
    rules = []
    if d.slice_min_examples is not None:
        rules.append(f"slices with at least {d.slice_min_examples} test rows are gated")
    if d.slice_tolerance is not None:
        rules.append(
            f"the candidate may be worse than the champion by at most {d.slice_tolerance:g}"
        )
    head = (
        "<tr><th>column</th><th>value</th><th>examples</th><th>candidate</th>"
        "<th>champion</th><th>change</th><th>gate</th><th>note</th></tr>"
    )
    rows = [head]
    for s in d.slices:
        blocked = s.get("blocked")
        cls = ' class="blocked"' if blocked else ""
        verdict = "blocked promotion" if blocked else ""
        rows.append(
            f"<tr{cls}><td>{html.escape(str(s.get('column')))}</td>"
            f"<td>{html.escape(_value(s.get('value')))}</td><td>{s.get('examples')}</td>"
            f"<td>{_num(s.get('candidate'))}</td><td>{_num(s.get('champion'))}</td>"
            f"<td>{_num(s.get('delta'))}</td><td>{verdict}</td>"
            f'<td class="note">{html.escape(s.get("note") or "")}</td></tr>'
        )
    caption = f"<caption>{html.escape(d.metric)} per slice</caption>"
    parts = []
    if rules:
        parts.append(f"<p>{html.escape('; '.join(rules))}.</p>")
    blocked = [s for s in d.slices if s.get("blocked")]
    if blocked:
        names = ", ".join(f"{s.get('column')}={_value(s.get('value'))}" for s in blocked)
        parts.append(f'<p class="hold">Blocked by slice(s): {html.escape(names)}</p>')
    parts.append(f'<table class="slices">{caption}{"".join(rows)}</table>')
    parts.extend(f"<p>{html.escape(n)}</p>" for n in d.slice_notes)
    return "".join(parts)


def _details(d: ReportData) -> str:
    if not d.details:
        return ""
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in d.details.items()
    )
    return f'<table class="details">{rows}</table>'


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}
figure{display:inline-block;margin:8px 12px 8px 0}figcaption{font-size:12px;font-weight:600}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}caption{text-align:left;font-size:12px}
tr.primary td{font-weight:700}tr.blocked td{background:#fde2e2}
td.note,table.details td{text-align:left}table.details th{text-align:left}
.promote{color:#1a7f37;font-weight:700}.hold{color:#b42318;font-weight:700}
"""


def render(d: ReportData) -> str:
    """The report as one HTML document (inline CSS and SVG only)."""
    if d.task == "binary":
        plots = _binary_plots(d)
    elif d.task == "multiclass":
        plots = _multiclass_plots(d)
    else:
        plots = _regression_plots(d)
    decision = ""
    if d.promote is not None:
        word, cls = ("promote", "promote") if d.promote else ("do not promote", "hold")
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in d.reasons)
        decision = f'<p>Gate: <span class="{cls}">{word}</span></p><ul>{reasons}</ul>'
    parts = [
        '<!DOCTYPE html><html><head><meta charset="utf-8">',
        f"<title>{html.escape(d.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(d.title)}</h1>",
        f"<p>Task: {html.escape(d.task)}; test rows: {len(d.y)}; primary metric: "
        f"{html.escape(d.metric)}</p>",
        _details(d),
        '<h2 id="gate">Gate</h2>',
        decision,
        '<h2 id="metrics">Metrics</h2>',
        _metrics_table(d),
        '<h2 id="plots">Plots</h2>',
        "".join(plots),
    ]
    if d.task != "regression":
        parts += ['<h2 id="confusion">Confusion matrix</h2>', _confusion_table(d)]
    parts += [
        '<h2 id="training">Training</h2>',
        _training_plot(d),
        '<h2 id="slices">Slices</h2>',
        _slices_table(d),
        "</body></html>",
    ]
    return "\n".join(parts)


# ---- finding a local run's report --------------------------------------------------------------
REPORT_OUTPUT = "html_report"
"""The evaluate component's HTML output; kfp.local writes it to
``<pipeline_root>/<run id>/<kfp run folder>/evaluate/html_report``."""
SUMMARY_FILE = "run_summary.json"
SUMMARY_KEY = "report_html"
"""The run summary's entry naming the HTML report."""


def _from_summary(summary: Path) -> Path | None:
    try:
        found = json.loads(summary.read_text()).get(SUMMARY_KEY)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(found, str) or not found:
        return None
    p = Path(found)
    if not p.is_absolute() and not p.is_file():
        p = summary.parent / p
    return p if p.is_file() else None


def report_in(folder: str | os.PathLike) -> Path | None:
    """The HTML report of the run in ``folder`` (a run's own pipeline root, its kfp run folder,
    or that run's evaluate task folder): named by its run summary's ``report_html``, else the
    evaluate task's ``html_report`` output; None when it has none."""
    f = Path(folder)
    for summary in [f / SUMMARY_FILE, *sorted(f.glob(f"*/{SUMMARY_FILE}"))]:
        found = _from_summary(summary) if summary.is_file() else None
        if found is not None:
            return found
    outputs = [
        p
        for pattern in (REPORT_OUTPUT, f"evaluate/{REPORT_OUTPUT}", f"*/evaluate/{REPORT_OUTPUT}")
        for p in f.glob(pattern)
        if p.is_file()
    ]
    return max(outputs, key=lambda p: p.stat().st_mtime) if outputs else None


def _runs(root: Path) -> list[Path]:
    """The local runs under ``root``, newest first (their folders are named run-<UTC start
    time>-<random>; ties broken by modification time)."""
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("run-")]
    return sorted(runs, key=lambda p: (p.name[:19], p.stat().st_mtime), reverse=True)


def find_run_report(pipeline_root: str | os.PathLike, run: str | None = None) -> dict[str, str]:
    """``{"report": the HTML file, "run": the run's folder}`` for ``run`` (a run folder, a run
    id under ``pipeline_root``, or the report file itself), or for the latest run under
    ``pipeline_root`` that has a report. ArtifactError naming what was looked at when there
    is none."""
    root = Path(pipeline_root)
    if run is None:
        for folder in _runs(root):
            found = report_in(folder)
            if found is not None:
                return {"report": str(found.resolve()), "run": str(folder.resolve())}
        raise ArtifactError(
            f"no run under {str(root)!r} (run.pipeline_root) has an evaluation report yet: run "
            "the pipeline (`torchkfp run`), or name a run folder"
        )
    given = Path(run)
    if given.is_file() and given.name != SUMMARY_FILE:
        return {"report": str(given.resolve()), "run": str(given.parent.resolve())}
    folder = given.parent if given.is_file() else given
    if not folder.is_dir():
        folder = root / run
    if not folder.is_dir():
        recent = [p.name for p in _runs(root)[:5]]
        raise ArtifactError(
            f"run {run!r} is neither a folder nor a run id under {str(root)!r}; recent runs "
            f"there: {recent or 'none'}"
        )
    found = report_in(folder)
    if found is None:
        raise ArtifactError(
            f"run folder {str(folder)!r} holds no evaluation report (no {SUMMARY_KEY!r} in a "
            f"{SUMMARY_FILE}, no evaluate/{REPORT_OUTPUT}): the run may have failed before "
            "evaluate, or predate the HTML report"
        )
    return {"report": str(found.resolve()), "run": str(folder.resolve())}
