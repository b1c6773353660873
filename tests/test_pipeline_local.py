"""The whole DAG under kfp.local (SubprocessRunner), on a small slice of the real data: run once
through the CLI (the ``dag_run`` fixture), then a second time in-process on the same registry
(the champion gate), plus a config error. A failing run: tests/test_run_errors.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torchkfp.pipelines.local import run_local

from torchkfp import artifacts
from torchkfp.artifacts import model as model_artifact
from torchkfp.registry import open_registry
from torchkfp.registry.local import LocalRegistry

pytestmark = pytest.mark.integration


def task_outputs(summary: dict, task: str) -> dict:
    """What a task wrote for KFP (parameters and artifact metadata), as kfp.local keeps it."""
    return json.loads((Path(summary["run_dir"]) / task / "executor_output.json").read_text())


def test_dag_runs_end_to_end_promotes_then_gates_on_champion(dag_run):
    small_config, summary = dag_run["config"], dag_run["summary"]
    assert "pipeline succeeded" in dag_run["stdout"]  # the CLI's printed summary
    assert summary["status"] == "succeeded"
    assert set(summary["stage_seconds"]) == {
        "fingerprint",
        "ingest",
        "preprocess",
        "train",
        "evaluate",
        "deploy",
    }
    assert summary["source_fingerprint"]["method"] == "duckdb-content"
    assert summary["world_size"] == 2
    assert 0.5 < summary["metrics"]["roc_auc"] < 1
    assert summary["gate"]["promote"] is True
    reg = LocalRegistry(small_config.deploy.registry_dir, small_config.deploy.model_name)
    assert reg.aliases() == {"champion": 1}
    assert summary["model"]["version"] == "1"
    assert artifacts.require(summary["model"]["path"], model_artifact.KIND)
    assert open_registry(small_config.deploy).champion() == summary["model"]["path"]

    # what each component reported to KFP: outputs and artifact metadata agree
    ingest = task_outputs(summary, "ingest")
    [dataset] = ingest["artifacts"]["dataset"]["artifacts"]
    assert ingest["parameterValues"]["rows"] == sum(dataset["metadata"]["rows"].values())
    assert dataset["metadata"]["fingerprint"] == ingest["parameterValues"]["fingerprint"]
    assert summary["data_fingerprint"] == ingest["parameterValues"]["fingerprint"]
    train = task_outputs(summary, "train")
    [model] = train["artifacts"]["model"]["artifacts"]
    assert train["parameterValues"]["world_size"] == model["metadata"]["world_size"] == 2
    assert train["parameterValues"]["samples_per_s"] > 0
    evaluate = task_outputs(summary, "evaluate")
    [m] = evaluate["artifacts"]["metrics"]["artifacts"]
    assert m["metadata"]["roc_auc"] == pytest.approx(summary["metrics"]["roc_auc"])
    [cm] = evaluate["artifacts"]["classification_metrics"]["artifacts"]
    assert cm["metadata"]["confusionMatrix"]["annotationSpecs"][1]["displayName"] == "1"  # class
    assert len(cm["metadata"]["confidenceMetrics"]) > 10
    deploy = task_outputs(summary, "deploy")
    assert deploy["parameterValues"]["version"] == "1"
    assert deploy["parameterValues"]["location"] == summary["model"]["path"]

    # same data, same settings: ingest, preprocess and train reuse the first run's outputs
    # (the stage cache); the candidate ties the champion and must not replace it
    summary2, _ = run_local(small_config, quiet_kfp=True)
    assert {k: v.get("cache") for k, v in summary2["stages"].items()} == {
        "fingerprint": None,
        "ingest": "hit",
        "preprocess": "hit",
        "train": "hit",
        "evaluate": None,
        "deploy": None,
    }
    assert summary2["gate"]["promote"] is False
    assert "deploy" not in summary2["stage_seconds"]
    assert summary2["champion_metrics"]["roc_auc"] == pytest.approx(summary["metrics"]["roc_auc"])
    assert reg.versions() == [1]


def test_cli_run_exits_2_on_a_config_error(tmp_path, small_config):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(small_config.to_dict()))
    exe = Path(sys.executable).with_name("torchkfp")
    bad = subprocess.run(
        [str(exe), "run", "-q", "--config", str(cfg_file), "--set", "data.label=carrier"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "is also listed as a feature" in bad.stderr
