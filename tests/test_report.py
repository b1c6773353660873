"""The HTML evaluation report: self-contained, and the sections each task kind needs."""

import re

import numpy as np
import pytest

from torchkfp.report import ModelScores, ReportData, precision_recall, reliability, render

RNG = np.random.default_rng(0)
HISTORY = [{"epoch": 0, "train_loss": 0.6, "val_loss": 0.55}, {"epoch": 1, "train_loss": 0.5}]


def _data(task: str) -> ReportData:
    n = 400
    if task == "binary":
        y = RNG.integers(0, 2, n)
        cand = np.clip(0.3 * y + 0.7 * RNG.random(n), 0, 1)
        champ = np.clip(0.2 * y + 0.8 * RNG.random(n), 0, 1)
        classes, metric = [0, 1], "roc_auc"
    elif task == "multiclass":
        y = RNG.integers(0, 3, n)
        cand, champ = RNG.dirichlet([1, 1, 1], n), RNG.dirichlet([1, 1, 1], n)
        classes, metric = ["early", "on_time", "late"], "log_loss"
    else:
        y = RNG.normal(size=n)
        cand, champ = y + 0.3 * RNG.normal(size=n), y + 0.5 * RNG.normal(size=n)
        classes, metric = [], "rmse"
    return ReportData(
        task=task,
        y=y,
        candidate=ModelScores("candidate", cand, {metric: 0.7, "examples": n}),
        champion=ModelScores("champion", champ, {metric: 0.69}),
        classes=classes,
        metric=metric,
        promote=False,
        reasons=[f"slice carrier=<AA> {metric} regressed"],
        history=HISTORY,
        slices=[
            {
                "column": "carrier",
                "value": "<AA>",
                "examples": 300,
                "candidate": 0.6,
                "champion": 0.7,
                "delta": -0.1,
                "blocked": True,
            },
            {
                "column": "carrier",
                "value": "UA",
                "examples": 100,
                "candidate": 0.8,
                "champion": 0.7,
                "delta": 0.1,
                "blocked": False,
            },
        ],
    )


def _figures(page: str) -> list[str]:
    return re.findall(r"<figcaption>([^<]+)</figcaption>", page)


@pytest.mark.parametrize(
    "task, figures, confusion",
    [
        (
            "binary",
            [
                "ROC curve",
                "Precision-recall curve",
                "Reliability (calibration)",
                "Candidate score histogram by class",
                "Training curves",
            ],
            True,
        ),
        ("multiclass", ["Reliability of the top class", "Training curves"], True),
        (
            "regression",
            [
                "Predicted vs actual",
                "Residuals (actual - predicted)",
                "Residuals vs predicted",
                "Training curves",
            ],
            False,
        ),
    ],
)
def test_each_task_kind_gets_its_sections(task, figures, confusion):
    page = render(_data(task))
    assert _figures(page) == figures
    for section in ("gate", "metrics", "plots", "training", "slices"):
        assert f'id="{section}"' in page
    assert ('id="confusion"' in page) is confusion
    # champion beside candidate: both columns in the metrics table, both lines on the curves
    assert "<th>champion</th>" in page
    # the blocking slice is marked, and text from the data is escaped
    assert page.count('class="blocked"') == 1
    assert "&lt;AA&gt;" in page and "<AA>" not in page
    assert "do not promote" in page


def test_the_page_loads_nothing_from_the_network():
    page = render(_data("binary"))
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page
    # every SVG is well formed enough to count: one closing tag per opening
    assert page.count("<svg") == page.count("</svg>") == 5


def test_confusion_matrix_counts_rows_as_true_classes():
    d = _data("binary")
    d.y = np.array([0, 0, 1, 1, 1])
    d.candidate = ModelScores("candidate", np.array([0.1, 0.9, 0.8, 0.7, 0.2]), {"roc_auc": 1})
    d.champion = None
    page = render(d)
    cells = re.findall(r"<td style=[^>]*>(\d+)</td>", page)
    assert cells == ["1", "1", "1", "2"]  # tn fp / fn tp at threshold 0.5


def test_curves_helpers():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.7, 0.1])
    recall, precision = precision_recall(y, p)
    assert recall.tolist() == [0.5, 0.5, 1.0, 1.0]
    assert precision.tolist() == [1.0, 0.5, 2 / 3, 0.5]
    mean_p, freq = reliability(np.array([0, 1, 1]), np.array([0.05, 0.95, 0.91]), bins=10)
    assert mean_p == pytest.approx([0.05, 0.93]) and freq == [0.0, 1.0]
