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
        (
            "multiclass",
            [
                "One-vs-rest ROC curves, candidate",
                "One-vs-rest precision-recall curves, candidate",
                "Candidate top-class probability histogram",
                "Reliability of the top class",
                "Training curves",
            ],
            True,
        ),
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


def test_training_section_draws_the_validation_metric_and_learning_rate():
    d = _data("binary")
    d.history = [
        {
            "epoch": i,
            "train_loss": 0.6 - i / 20,
            "val_loss": 0.58 - i / 30,
            "val_roc_auc": 0.6 + i / 50,
            "learning_rate": 0.003 / (i + 1),
        }
        for i in range(4)
    ]
    d.best_epoch = 3
    page = render(d)
    training = page.split('id="training"')[1].split('id="slices"')[0]
    assert _figures(training) == [
        "Training curves",
        "Validation roc_auc per epoch",
        "Learning rate",
    ]
    assert "kept the weights of epoch 3" in training
    # an artifact without history still gets the section, saying so
    d.history, d.best_epoch = [], None
    assert "No training history recorded" in render(d)


def test_slices_section_names_the_blocking_slice_nulls_and_notes():
    d = _data("regression")
    d.slices = [
        {
            "column": "manufacturer",
            "value": None,
            "examples": 676,
            "candidate": 10.0,
            "champion": 9.0,
            "delta": 1.0,
            "blocked": True,
            "note": None,
        },
        {
            "column": "carrier",
            "value": "HA",
            "examples": 5,
            "candidate": None,
            "champion": None,
            "delta": None,
            "blocked": False,
            "note": "not comparable: one label value only: r2 undefined",
        },
    ]
    d.slice_notes = ["dest: 80 values; the 50 with the most test rows are shown and gated"]
    d.slice_min_examples, d.slice_tolerance = 200, 0.5
    page = render(d)
    slices = page.split('id="slices"')[1]
    assert "Blocked by slice(s): manufacturer=NULL" in slices
    assert "<td>NULL</td>" in slices and "r2 undefined" in slices
    assert "slices with at least 200 test rows are gated" in slices
    assert "the 50 with the most test rows" in slices


def test_a_champion_without_predictions_is_in_the_table_not_on_the_plots():
    d = _data("multiclass")
    d.champion = ModelScores("champion", None, {"log_loss": 0.9})
    page = render(d)
    assert "<th>champion</th>" in page and ">0.9000<" in page
    # the reliability plot has only the candidate's legend entry
    rel = page.split("<figcaption>Reliability of the top class</figcaption>")[1].split("</svg>")[0]
    assert ">candidate<" in rel and ">champion<" not in rel
