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
