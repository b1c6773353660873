"""The whole DAG under kfp.local (SubprocessRunner), on a small slice of the real data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torchkfp.pipelines.local import PipelineFailed, run_local

from torchkfp import artifacts
from torchkfp.registry import LocalRegistry

pytestmark = pytest.mark.integration


def test_dag_runs_end_to_end_promotes_then_gates_on_champion(small_config):
    summary, path = run_local(small_config, quiet_kfp=True)
    assert json.loads(Path(path).read_text()) == json.loads(json.dumps(summary, default=str))
    assert summary["status"] == "succeeded"
    assert set(summary["stage_seconds"]) == {"ingest", "preprocess", "train", "evaluate", "deploy"}
    assert summary["world_size"] == 2
    assert 0.5 < summary["metrics"]["roc_auc"] < 1
    assert summary["gate"]["promote"] is True
    reg = LocalRegistry(small_config.deploy.registry_dir, small_config.deploy.model_name)
    assert reg.aliases() == {"champion": 1}
    assert summary["model"]["version"] == "1"
    assert artifacts.require(summary["model"]["path"], "model")

    # same data, same seed: the new candidate ties the champion and must not replace it
    summary2, _ = run_local(small_config, quiet_kfp=True)
    assert summary2["gate"]["promote"] is False
    assert "deploy" not in summary2["stage_seconds"]
    assert summary2["champion_metrics"]["roc_auc"] == pytest.approx(summary["metrics"]["roc_auc"])
    assert reg.versions() == [1]


def test_dag_failure_is_loud_and_recorded(small_config):
    cfg = small_config.override({"data.numeric_features": ["distance", "not_a_column"]})
    with pytest.raises(PipelineFailed) as e:
        run_local(cfg, quiet_kfp=True)
    summary = json.loads(Path(e.value.summary_path).read_text())
    assert summary["status"] == "failed"
    assert summary["stages"]["ingest"]["status"] == "failed"
    assert summary["stages"]["train"]["status"] == "not run"
    assert LocalRegistry(cfg.deploy.registry_dir, cfg.deploy.model_name).versions() == []


def test_cli_run_prints_summary_path_last_and_exits_nonzero_on_failure(tmp_path, small_config):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(small_config.to_dict()))
    exe = Path(sys.executable).with_name("torchkfp")
    ok = subprocess.run(
        [str(exe), "run", "-q", "--config", str(cfg_file), "--set", "train.epochs=1"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    last = ok.stdout.strip().splitlines()[-1]
    assert last.endswith("run_summary.json") and json.loads(Path(last).read_text())["status"]
    bad = subprocess.run(
        [str(exe), "run", "-q", "--config", str(cfg_file), "--set", "data.label=carrier"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and "is also listed as a feature" in bad.stderr
