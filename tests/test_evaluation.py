"""torchkfp.evaluation: the promotion gate and the candidate's (and champion's) test metrics."""

import json
import shutil

import pytest

from torchkfp.config import ConfigError, EvaluateConfig
from torchkfp.evaluation import NO_USABLE_CHAMPION, GateRules, evaluate_candidate, gate


def test_gate_thresholds_and_champion_margin():
    rules = GateRules.for_task(EvaluateConfig(champion_margin=0.01), "binary")
    assert (rules.metric, rules.higher_is_better) == ("roc_auc", True)
    assert rules.minimums == {"roc_auc": 0.6} and rules.maximums == {"log_loss": 1.0}
    good = {"roc_auc": 0.70, "log_loss": 0.5}
    assert gate(rules, good, None) == (True, ["promote", "no champion yet"])
    assert not gate(rules, {"roc_auc": 0.55, "log_loss": 0.5}, None)[0]
    assert not gate(rules, good, {"roc_auc": 0.695, "log_loss": 0.5})[0]  # not by the margin
    ok, reasons = gate(rules, good, {"roc_auc": 0.68, "log_loss": 0.5})
    assert ok and "beats champion" in reasons[1]
    ok, reasons = gate(rules, {"roc_auc": 0.70, "log_loss": 1.5}, None)
    assert not ok and reasons[0] == "log_loss 1.5000 > max 1.0"


def test_gate_lower_is_better_metrics_and_task_defaults():
    rules = GateRules.for_task(EvaluateConfig(champion_margin=0.5), "regression")
    assert (rules.metric, rules.higher_is_better, rules.minimums) == ("rmse", False, {"r2": 0.0})
    cand = {"rmse": 10.0, "mae": 7.0, "r2": 0.3}
    assert gate(rules, cand, {"rmse": 11.0, "mae": 8, "r2": 0.2})[0]  # 10 < 11 - 0.5
    assert not gate(rules, cand, {"rmse": 10.2, "mae": 8, "r2": 0.2})[0]  # not by the margin
    assert not gate(rules, {**cand, "r2": -0.1}, None)[0]  # worse than predicting the mean
    multi = GateRules.for_task(EvaluateConfig(), "multiclass")
    assert (multi.metric, multi.higher_is_better) == ("log_loss", False)


def test_gate_never_passes_a_non_finite_metric():
    rules = GateRules.for_task(EvaluateConfig(min_metrics={}, max_metrics={}), "binary")
    ok, reasons = gate(rules, {"roc_auc": float("nan"), "log_loss": float("nan")}, None)
    assert not ok and "not a finite number" in reasons[0]


def test_gate_metric_must_belong_to_the_task():
    with pytest.raises(ConfigError, match=r"evaluate.metric: \['roc_auc'\] not metric"):
        GateRules.for_task(EvaluateConfig(metric="roc_auc"), "regression")
    with pytest.raises(ConfigError, match="evaluate.min_metrics"):
        GateRules.for_task(EvaluateConfig(min_metrics={"r2": 0.1}), "binary")


def test_evaluate_metrics_and_champion_gate(stage_outputs, tmp_path):
    ec = stage_outputs["config"].evaluate
    r = evaluate_candidate(ec, stage_outputs["model"], stage_outputs["dataset"])
    assert 0.5 < r.metrics["roc_auc"] < 1 and r.promote
    assert r.champion_metrics is None and r.reasons == ["promote", "no champion yet"]
    assert sum(map(sum, r.confusion)) == r.metrics["examples"]
    # what the evaluate component logs to KFP: class names, row = true class
    labels, rows = r.confusion_matrix()
    assert labels == ["0", "1"] and rows == r.confusion
    assert sum(rows[1]) == round(r.metrics["positive_rate"] * r.metrics["examples"])
    fpr, tpr, thr = r.roc_columns()
    assert len(fpr) == len(tpr) == len(thr) > 10 and fpr[0] == 0.0 and tpr[-1] == 1.0
    report = json.loads(open(r.save(tmp_path / "out" / "report.json")).read())
    assert report["metrics"] == r.metrics and report["promote"] is True
    # the same model as champion cannot beat itself
    r2 = evaluate_candidate(
        ec, stage_outputs["model"], stage_outputs["dataset"], stage_outputs["model"]
    )
    assert r2.champion_metrics["roc_auc"] == pytest.approx(r.metrics["roc_auc"])
    assert not r2.promote and "does not beat champion" in r2.reasons[0]


def test_a_champion_that_cannot_be_loaded_is_no_usable_champion(stage_outputs, tmp_path):
    """A champion folder damaged or emptied since the registry looked: the gate uses the
    thresholds, and the report says why (never a traceback)."""
    ec = stage_outputs["config"].evaluate
    broken = tmp_path / "champion"
    shutil.copytree(stage_outputs["model"], broken)
    (broken / "_SUCCESS").unlink()
    r = evaluate_candidate(ec, stage_outputs["model"], stage_outputs["dataset"], broken)
    assert r.promote and r.champion_metrics is None
    assert r.reasons[:2] == ["promote", NO_USABLE_CHAMPION]
    [note] = r.notes
    assert note.startswith(f"champion at {broken} cannot be loaded") and "incomplete" in note
    assert note in r.reasons and r.to_dict()["notes"] == [note]


def test_evaluate_against_a_registry_whose_champion_is_gone(stage_outputs, tmp_path):
    from torchkfp.evaluation import evaluate_against_registry
    from torchkfp.registry.local import LocalRegistry

    ec = stage_outputs["config"].evaluate
    reg = LocalRegistry(tmp_path / "registry", "m")
    published = reg.publish(stage_outputs["model"])
    r = evaluate_against_registry(ec, reg, stage_outputs["model"], stage_outputs["dataset"])
    assert r.champion == published.location and not r.promote and r.notes == []

    shutil.rmtree(published.location)  # the champion's version folder, deleted by hand
    r = evaluate_against_registry(ec, reg, stage_outputs["model"], stage_outputs["dataset"])
    assert r.promote and r.champion is None
    assert r.reasons[:2] == ["promote", NO_USABLE_CHAMPION]
    [note] = r.notes
    assert "alias 'champion'" in note and "version 1, which no longer exists" in note


# ---- slices -----------------------------------------------------------------------------------
def _slice_gate(task="binary", metric="roc_auc", higher=True, min_examples=100, tol=0.01, cap=50):
    from torchkfp.evaluation import SliceGate

    return SliceGate(task, metric, higher, 0.5, min_examples, tol, cap)


def test_a_slice_where_the_candidate_is_worse_blocks_and_small_slices_never_do():
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 600
    carrier = np.array(["AA"] * 300 + ["UA"] * 240 + ["XX"] * 60, dtype=object)
    y = rng.integers(0, 2, n).astype(np.float32)
    good = np.clip(0.5 * y + 0.5 * rng.random(n), 0, 1)  # informative scores
    noise = rng.random(n)  # uninformative
    champ = good.copy()
    cand = good.copy()
    cand[carrier == "UA"] = noise[carrier == "UA"]  # the candidate lost UA
    cand[carrier == "XX"] = noise[carrier == "XX"]  # and XX, too small to gate
    test = pd.DataFrame({"carrier": carrier})
    rows, notes, reasons = _slice_gate().table(test, ["carrier"], (y, cand), (y, champ))
    by = {r["value"]: r for r in rows}
    assert [r["value"] for r in rows] == ["AA", "UA", "XX"]  # most rows first
    assert by["AA"]["delta"] == 0 and not by["AA"]["blocked"]
    assert by["UA"]["blocked"] and by["UA"]["delta"] < -0.1 and by["UA"]["gated"]
    assert not by["XX"]["blocked"] and not by["XX"]["gated"] and by["XX"]["delta"] < -0.1
    assert "fewer than 100 rows: shown, never blocks" in by["XX"]["note"]
    [reason] = reasons
    assert reason.startswith("slice carrier=UA (240 test rows): roc_auc ")
    assert f"vs champion {by['UA']['champion']:.4f}" in reason
    assert "more than slice_tolerance 0.01 (higher is better)" in reason
    assert notes == []
    # lower-is-better: a higher log loss is the regression
    rows, _, reasons = _slice_gate(metric="log_loss", higher=False, tol=0.05).table(
        test, ["carrier"], (y, cand), (y, champ)
    )
    assert [r["value"] for r in rows if r["blocked"]] == ["UA"] and "(lower is better)" in reasons[
        0
    ]
    # within the tolerance: no block
    rows, _, reasons = _slice_gate(tol=1.0).table(test, ["carrier"], (y, cand), (y, champ))
    assert reasons == [] and not any(r["blocked"] for r in rows)
    # no champion: the candidate's values only, nothing gated against
    rows, _, reasons = _slice_gate().table(test, ["carrier"], (y, cand), None)
    assert reasons == [] and rows[1]["champion"] is None and rows[1]["candidate"] is not None


def test_slices_one_class_nulls_and_the_cap_on_values():
    import numpy as np
    import pandas as pd

    n = 400
    y = np.tile([0.0, 1.0], n // 2).astype(np.float32)
    p = np.linspace(0, 1, n)
    plane = pd.Series(["A320"] * 150 + [None] * 150 + ["B737"] * 100, dtype=object)
    col = pd.DataFrame({"plane": plane, "one_class": y, "many": np.arange(n) % 70})
    gate = _slice_gate(min_examples=10, cap=50)
    rows, notes, reasons = gate.table(col, ["plane", "one_class", "many"], (y, p), (y, 1 - p))
    plane_rows = [r for r in rows if r["column"] == "plane"]
    assert [r["value"] for r in plane_rows] == ["A320", None, "B737"]  # NULL: a slice
    assert plane_rows[1]["examples"] == 150
    # the label itself as a slice: every slice is one class, roc_auc undefined, never NaN
    one = [r for r in rows if r["column"] == "one_class"]
    assert len(one) == 2 and all(r["candidate"] is None and not r["blocked"] for r in one)
    assert all(r["note"] == "not comparable: one class only: roc_auc undefined" for r in one)
    many = [r for r in rows if r["column"] == "many"]
    assert len(many) == 50
    [note] = notes
    assert note.startswith("many: 70 values; the 50 with the most test rows are shown and gated")
    # the champion (1 - p) is the reverse of the candidate: the candidate wins or ties,
    # except where it ranks worse: on every gated, comparable slice, blocked = worse
    for r in rows:
        if r["blocked"]:
            assert r["candidate"] < r["champion"] - 0.01
    assert len(reasons) == sum(r["blocked"] for r in rows)
    json.dumps(rows)  # JSON-able as they are


def test_slice_columns_must_be_columns_of_the_test_split(stage_outputs):
    ec = stage_outputs["config"].evaluate.model_copy(
        update={"slice_columns": ["carrier", "airline"]}
    )
    with pytest.raises(ConfigError) as e:
        evaluate_candidate(ec, stage_outputs["model"], stage_outputs["dataset"])
    msg = str(e.value)
    assert msg.startswith("evaluate.slice_columns: ['airline'] not column(s) of the dataset's")
    assert "'carrier'" in msg and "'origin'" in msg  # the columns it has


def test_slices_against_itself_never_block_and_land_in_the_report(stage_outputs, tmp_path):
    ec = stage_outputs["config"].evaluate.model_copy(
        update={"slice_columns": ["carrier", "manufacturer"], "slice_min_examples": 200}
    )
    m = stage_outputs["model"]
    r = evaluate_candidate(ec, m, stage_outputs["dataset"], m)
    assert r.slices and not any(s["blocked"] for s in r.slices)
    gated = [s for s in r.slices if s["gated"]]
    assert gated and all(s["delta"] == 0 for s in gated if s["note"] is None)
    assert any(s["column"] == "manufacturer" and s["value"] is None for s in r.slices)
    assert sum(s["examples"] for s in r.slices if s["column"] == "carrier") == r.metrics["examples"]
    # a carrier with one class on the test rows is "not comparable", not NaN
    for s in r.slices:
        if s["candidate"] is None:
            assert s["note"].startswith("not comparable: one class only")
    report = json.loads(open(r.save(tmp_path / "report.json")).read())
    assert report["slices"] == json.loads(json.dumps(r.slices))
    page = r.html()
    assert page.count("<tr><td>carrier</td>") + page.count(
        '<tr class="blocked"><td>carrier'
    ) == len([s for s in r.slices if s["column"] == "carrier"])


def test_the_binary_report_from_the_evaluation(stage_outputs, tmp_path):
    import re

    from torchkfp.evaluation import EvalResult

    ec = stage_outputs["config"].evaluate
    m = stage_outputs["model"]
    r = evaluate_candidate(ec, m, stage_outputs["dataset"], m)
    page = r.html()
    assert re.findall(r'<h2 id="([a-z]+)"', page) == [
        "gate",
        "metrics",
        "plots",
        "confusion",
        "training",
        "slices",
    ]
    assert re.findall(r"<figcaption>([^<]+)</figcaption>", page) == [
        "ROC curve",
        "Precision-recall curve",
        "Reliability (calibration)",
        "Candidate score histogram by class",
        "Training curves",
        "Validation roc_auc per epoch",  # val_roc_auc from the artifact's training history
        "Learning rate",
    ]
    assert "do not promote" in page and "does not beat champion" in page
    assert "<th>champion</th>" in page and f"<td>{m}</td>" in page  # the champion's path
    # the ROC curve has a line for each model, the confusion matrix counts every test row
    roc = page.split("<figcaption>ROC curve</figcaption>")[1].split("</svg>")[0]
    assert roc.count("<polyline") == 2
    cells = re.findall(r"<td style=[^>]*>(\d+)</td>", page)
    assert sum(map(int, cells)) == r.metrics["examples"]
    # without a champion: the candidate alone, and the page is written whole
    alone = evaluate_candidate(ec, m, stage_outputs["dataset"])
    path = alone.save_html(tmp_path / "out" / "report.html")
    solo = open(path).read()
    assert "<th>champion</th>" not in solo and "no champion yet" in solo
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html"]
    with pytest.raises(ValueError, match="no predictions to draw"):
        EvalResult("binary", {}, None, True).html()
