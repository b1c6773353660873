"""The evaluation report through ``evaluate_candidate`` on real trained models of each task kind,
and the slice gate on a real regression: a candidate trained on data whose labels for one
carrier were corrupted upstream (every flight marked late), against a champion trained on data
corrupted the same way for two larger carriers, so the candidate wins on the whole test set and
loses on that one carrier."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import dataset_dir, make_config

from torchkfp.evaluation import evaluate_candidate

pytestmark = pytest.mark.integration
TESTS = Path(__file__).resolve().parent
SQL = TESTS.parent / "src" / "torchkfp" / "sql" / "flights_delay.sql"
LABEL = "IF(f.arr_delay >= 15, 1, 0) AS is_late"


def figures(page: str) -> list[str]:
    return re.findall(r"<figcaption>([^<]+)</figcaption>", page)


def sections(page: str) -> list[str]:
    return re.findall(r'<h2 id="([a-z]+)"', page)


def train_on(root: Path, cfg) -> str:
    """ingest -> preprocess -> train with the real stages; returns the model folder."""
    from torchkfp.ingest import ingest
    from torchkfp.preprocess import preprocess
    from torchkfp.training import launch

    ingest(cfg.warehouse, cfg.data, cfg.split, root / "dataset")
    preprocess(cfg.data, cfg.preprocess, root / "dataset", root / "transform", root / "features")
    launch(cfg.train, root / "features", root / "transform", root / "model")
    return str(root / "model")


# ---- each task kind --------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["multiclass", "regression"])
def task_model(request, task_kind_run) -> dict:
    """The model and dataset of the session's DAG run of the kind (conftest's
    ``task_kind_run``, the runs tests/test_task_kinds.py checks), with slices configured."""
    kind = request.param
    run = task_kind_run(kind)
    summary = run["summary"]
    cfg = run["config"].override(
        {"evaluate.slice_columns": ["origin", "carrier"], "evaluate.slice_min_examples": 300}
    )
    return {
        "kind": kind,
        "cfg": cfg,
        "model": summary["model"]["path"],
        "dataset": dataset_dir(summary),
    }


def test_the_report_of_each_task_kind(task_model, tmp_path):
    kind, cfg = task_model["kind"], task_model["cfg"]
    # the model against itself as champion: the gate holds (no better than itself), every
    # slice ties, and the page has everything the kind needs
    r = evaluate_candidate(
        cfg.evaluate, task_model["model"], task_model["dataset"], task_model["model"]
    )
    assert r.task == kind and not r.promote and not r.blocked_slices()
    path = Path(r.save_html(tmp_path / "r" / "report.html"))
    page = path.read_text()
    assert not list(path.parent.glob(".*tmp*"))  # written through a temporary file
    want = ["gate", "metrics", "plots", "training", "slices"]
    if kind == "multiclass":
        want.insert(3, "confusion")
        plots = [
            "One-vs-rest ROC curves, candidate",
            "One-vs-rest precision-recall curves, candidate",
            "Candidate top-class probability histogram",
            "Reliability of the top class",
        ]
        val_metric = "accuracy"
    else:
        plots = ["Predicted vs actual", "Residuals (actual - predicted)", "Residuals vs predicted"]
        val_metric = "rmse"
    assert sections(page) == want
    assert figures(page) == [
        *plots,
        "Training curves",
        f"Validation {val_metric} per epoch",
        "Learning rate",
    ]
    assert "<th>champion</th>" in page and f'class="primary"><td>{r.metric}</td>' in page
    # the training curves come from the model artifact's history: one point per epoch
    curves = page.split("<figcaption>Training curves</figcaption>")[1].split("</svg>")[0]
    assert curves.count("<circle") == 2 * cfg.train.epochs  # train_loss and val_loss
    # slices: every origin, and carriers down to the smallest, in the table
    origins = [s for s in r.slices if s["column"] == "origin"]
    assert {s["value"] for s in origins} == {"EWR", "JFK", "LGA"}
    assert all(s["delta"] == 0 and s["gated"] for s in origins)
    assert page.count("<tr><td>origin</td>") == 3
    assert "slices with at least 300 test rows are gated" in page
    if kind == "multiclass":  # class names on the confusion matrix
        assert all(f"<th>{c}</th>" in page for c in r.classes)


# ---- the slice gate on a real regression -------------------------------------------------------
def corrupted(root: Path, warehouse_path: str, carriers: list[str], **overrides):
    """The default query with every flight of ``carriers`` marked late on the training and
    validation days (before the test split, 2013-01-27): a broken upstream join, say."""
    names = ", ".join(f"'{c}'" for c in carriers)
    flipped = (
        f"IF(f.carrier IN ({names}) AND f.day < 27, 1, IF(f.arr_delay >= 15, 1, 0)) AS is_late"
    )
    sql = SQL.read_text()
    assert LABEL in sql
    query = root / "query.sql"
    query.write_text(sql.replace(LABEL, flipped))
    cfg = make_config(
        root,
        warehouse_path,
        **{"warehouse.query_file": str(query), "train.epochs": 2, **overrides},
    )
    return train_on(root, cfg)


@pytest.fixture(scope="module")
def regressed(tmp_path_factory, warehouse_path, stage_outputs) -> dict:
    cand = corrupted(tmp_path_factory.mktemp("cand"), warehouse_path, ["MQ"])
    champ = corrupted(tmp_path_factory.mktemp("champ"), warehouse_path, ["UA", "B6"])
    return {"candidate": cand, "champion": champ, "dataset": stage_outputs["dataset"]}


def test_the_slice_gate_blocks_a_candidate_that_regressed_on_one_carrier(
    regressed, stage_outputs, tmp_path
):
    ec = stage_outputs["config"].evaluate.model_copy(
        update={
            "metric": "log_loss",
            "slice_columns": ["carrier", "origin"],
            "slice_min_examples": 200,
            # 0.1: MQ's corrupted labels cost it ~0.7; they also spill a little (~0.06 in one
            # run) onto 9E, the other regional carrier flying the same planes
            "slice_tolerance": 0.1,
        }
    )
    r = evaluate_candidate(ec, regressed["candidate"], regressed["dataset"], regressed["champion"])
    by = {(s["column"], s["value"]): s for s in r.slices}
    mq, ua = by[("carrier", "MQ")], by[("carrier", "UA")]
    print(
        f"\nlog loss: candidate {r.metrics['log_loss']:.4f} champion "
        f"{r.champion_metrics['log_loss']:.4f}; MQ {mq['candidate']:.4f} vs "
        f"{mq['champion']:.4f}; UA {ua['candidate']:.4f} vs {ua['champion']:.4f}"
    )
    # on the whole test set the candidate wins: the whole-set gate alone would promote it
    assert r.metrics["log_loss"] < r.champion_metrics["log_loss"]
    assert r.reasons[0].startswith("beats champion log_loss")
    # ... but not on MQ's rows, where its labels were corrupted: that slice blocks
    assert not r.promote
    assert r.blocked_slices() == ["carrier=MQ"]
    assert mq["candidate"] > mq["champion"] + 0.1 and mq["examples"] >= 200
    assert ua["candidate"] < ua["champion"]  # where the champion's data was corrupted
    [reason] = [x for x in r.reasons if x.startswith("slice ")]
    assert reason.startswith(f"slice carrier=MQ ({mq['examples']} test rows): log_loss ")
    assert "more than slice_tolerance 0.1 (lower is better)" in reason
    # the JSON report and the HTML page say which slice blocked
    saved = json.loads(Path(r.save(tmp_path / "report.json")).read_text())
    assert saved["promote"] is False and reason in saved["reasons"]
    assert [s["value"] for s in saved["slices"] if s["blocked"]] == ["MQ"]
    page = r.html()
    assert "Blocked by slice(s): carrier=MQ" in page and "do not promote" in page
    [row] = re.findall(r'<tr class="blocked">(.*?)</tr>', page)
    assert "<td>carrier</td><td>MQ</td>" in row and "blocked promotion" in row
    # the same candidate with a looser slice tolerance: the whole-set win promotes it
    looser = ec.model_copy(update={"slice_tolerance": 10.0})
    r2 = evaluate_candidate(
        looser, regressed["candidate"], regressed["dataset"], regressed["champion"]
    )
    assert r2.promote and r2.blocked_slices() == []
