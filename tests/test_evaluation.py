"""torchkfp.evaluation: the promotion gate and the candidate's (and champion's) test metrics."""

import json

import pytest

from torchkfp.config import EvaluateConfig
from torchkfp.evaluation import evaluate_candidate, gate


def test_gate_thresholds_and_champion_margin():
    ec = EvaluateConfig(min_roc_auc=0.6, champion_margin=0.01)
    good = {"roc_auc": 0.70, "log_loss": 0.5}
    assert gate(ec, good, None)[0]
    assert gate(ec, good, None)[1] == ["promote", "no champion yet"]
    assert not gate(ec, {"roc_auc": 0.55, "log_loss": 0.5}, None)[0]
    assert not gate(ec, good, {"roc_auc": 0.695, "log_loss": 0.5})[0]  # not by the margin
    ok, reasons = gate(ec, good, {"roc_auc": 0.68, "log_loss": 0.5})
    assert ok and "beats champion" in reasons[1]
    ok, reasons = gate(ec, {"roc_auc": 0.70, "log_loss": 1.5}, None)
    assert not ok and reasons[0] == "log_loss 1.5000 > max_log_loss 1.0"


def test_evaluate_metrics_and_champion_gate(stage_outputs, tmp_path):
    ec = stage_outputs["config"].evaluate
    r = evaluate_candidate(ec, stage_outputs["model"], stage_outputs["dataset"])
    assert 0.5 < r.metrics["roc_auc"] < 1 and r.promote
    assert r.champion_metrics is None and r.reasons == ["promote", "no champion yet"]
    c = r.confusion
    assert sum(c.values()) == r.metrics["examples"]
    # what the evaluate component logs to KFP
    labels, rows = r.confusion_matrix()
    assert labels == ["on_time", "late"] and rows == [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
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
