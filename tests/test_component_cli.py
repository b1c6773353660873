"""`torchkfp component ...`: every stage on its own through the real CLI, chained by hand, gives
the same model as the whole DAG run by kfp.local on the same config."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.integration


def cli(*args: str, config: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torchkfp.cli", "component", *args]
    if config is not None:
        argv += ["--config", str(config)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if check:
        assert p.returncode == 0, f"{' '.join(args)} failed:\n{p.stderr[-3000:]}"
    return p


def result(p: subprocess.CompletedProcess) -> dict:
    """The one JSON line a stage prints; its stdout holds nothing else."""
    lines = p.stdout.splitlines()
    assert len(lines) == 1, f"stdout should be one JSON line, got:\n{p.stdout[-2000:]}"
    return json.loads(lines[0])


def write_config(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


@pytest.fixture(scope="module")
def chain(tmp_path_factory, warehouse_path) -> dict:
    """ingest -> preprocess -> train -> evaluate -> deploy, one CLI call each."""
    from conftest import make_config

    root = tmp_path_factory.mktemp("chain")
    cfg = make_config(root, warehouse_path, **{"train.epochs": 2})
    conf = write_config(cfg, root / "config.yaml")
    w = root / "work"
    out = {"root": root, "config": conf, "cfg": cfg, "work": w}
    out["ingest"] = result(cli("ingest", "--out", str(w / "dataset"), config=conf))
    out["preprocess"] = result(
        cli(
            "preprocess",
            "--dataset",
            str(w / "dataset"),
            "--transform-out",
            str(w / "transform"),
            "--features-out",
            str(w / "features"),
            config=conf,
        )
    )
    p = cli(
        "train",
        "--features",
        str(w / "features"),
        "--transform",
        str(w / "transform"),
        "--model-out",
        str(w / "model"),
        config=conf,
    )
    assert "[train] epoch 2/2" in p.stderr  # torchrun's progress went to stderr
    out["train"] = result(p)
    out["evaluate"] = result(
        cli(
            "evaluate",
            "--model",
            str(w / "model"),
            "--dataset",
            str(w / "dataset"),
            "--report-out",
            str(w / "report.json"),
            config=conf,
        )
    )
    out["deploy"] = result(
        cli(
            "deploy",
            "--model",
            str(w / "model"),
            "--if-promoted",
            str(w / "report.json"),
            config=conf,
        )
    )
    return out


@pytest.fixture(scope="module")
def dag(dag_run) -> dict:
    """The whole DAG (``torchkfp run``) on the same settings, with its own fresh registry."""
    return dag_run["summary"]


def test_chained_stages_equal_the_dag(chain, dag):
    assert dag["status"] == "succeeded"
    ev = chain["evaluate"]
    # same data, same seed, same code path: the same model, bit for bit
    assert chain["ingest"]["fingerprint"] == dag["data_fingerprint"]
    assert chain["ingest"]["rows"] == dag["rows"]
    auc_chain, auc_dag = ev["metrics"]["roc_auc"], dag["metrics"]["roc_auc"]
    print(f"\ntest ROC AUC: chained {auc_chain!r}  DAG {auc_dag!r}")
    assert abs(auc_chain - auc_dag) < 1e-12
    assert abs(ev["metrics"]["log_loss"] - dag["metrics"]["log_loss"]) < 1e-12
    assert chain["train"]["best_val_loss"] == dag["training"]["best_val_loss"]
    a = torch.load(Path(chain["train"]["model"]) / "model.pt", weights_only=True)
    b = torch.load(Path(dag["model"]["path"]) / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the stages' own results are consistent with each other
    assert chain["train"]["world_size"] == 2 and chain["train"]["epochs_run"] == 2
    assert ev["promote"] is True and ev["champion"] is None and ev["reasons"][0] == "promote"
    report = json.loads((chain["work"] / "report.json").read_text())
    assert report["metrics"] == ev["metrics"] and report["promote"] is True
    # the HTML report beside the JSON one (--report-out without --html-out)
    html = chain["work"] / "report.html"
    assert ev["report_html"] == str(html) and ev["blocked_slices"] == []
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "ROC curve" in page and 'id="slices"' in page


def test_deploy_moves_the_alias(chain):
    from torchkfp.registry.local import LocalRegistry

    cfg = chain["cfg"]
    reg = LocalRegistry(cfg.deploy.registry_dir, cfg.deploy.model_name)
    d1 = chain["deploy"]
    assert d1["deployed"] is True and d1["version"] == "1" and d1["previous"] is None
    assert reg.aliases() == {"champion": 1}

    # evaluating again now compares against that champion (the registry alias by default):
    # the same model does not beat itself, so the gate says no and deploy --if-promoted skips
    w = chain["work"]
    ev = result(
        cli(
            "evaluate",
            "--model",
            str(w / "model"),
            "--dataset",
            str(w / "dataset"),
            "--report-out",
            str(w / "report2.json"),
            config=chain["config"],
        )
    )
    assert ev["champion"] == str(reg.resolve("champion"))
    assert ev["champion_metrics"]["roc_auc"] == ev["metrics"]["roc_auc"]
    assert ev["promote"] is False and "does not beat champion" in ev["reasons"][0]
    skip = result(
        cli(
            "deploy",
            "--model",
            str(w / "model"),
            "--if-promoted",
            str(w / "report2.json"),
            config=chain["config"],
        )
    )
    assert skip["deployed"] is False and "not promoted" in skip["reason"]
    assert reg.aliases() == {"champion": 1} and reg.versions() == [1]

    # an explicit deploy registers version 2 and moves the alias from 1 to 2
    d2 = result(cli("deploy", "--model", str(w / "model"), config=chain["config"]))
    assert (d2["version"], d2["previous"], d2["alias"]) == ("2", "1", "champion")
    assert reg.aliases() == {"champion": 2, "previous-champion": 1} and reg.versions() == [1, 2]
    assert Path(d2["location"]) == reg.resolve("champion")

    # --no-champion gates on thresholds only
    ev = result(
        cli(
            "evaluate",
            "--model",
            str(w / "model"),
            "--dataset",
            str(w / "dataset"),
            "--no-champion",
            config=chain["config"],
        )
    )
    assert ev["champion"] is None and ev["promote"] is True


def test_train_on_incomplete_features_fails_clearly(chain, tmp_path):
    broken = tmp_path / "features"
    shutil.copytree(chain["work"] / "features", broken)
    (broken / "_SUCCESS").unlink()
    p = cli(
        "train",
        "--features",
        str(broken),
        "--transform",
        str(chain["work"] / "transform"),
        "--model-out",
        str(tmp_path / "model"),
        config=chain["config"],
        check=False,
    )
    assert p.returncode == 1
    assert p.stdout == ""
    err = p.stderr.strip()
    assert err.startswith("error: train: features artifact")
    assert "is incomplete (no _SUCCESS marker)" in err and "rerun that stage" in err
    assert "Traceback" not in err
    assert not (tmp_path / "model").exists()


def test_stage_errors_are_one_line_and_exit_non_zero(chain, tmp_path):
    """Error paths, in-process (CliRunner) to keep them fast."""
    from typer.testing import CliRunner

    from torchkfp.cli import app

    def run(*args: str):
        r = CliRunner().invoke(app, ["component", *args, "--config", str(chain["config"])])
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        return r.exit_code, r.stdout, r.stderr

    w = chain["work"]
    code, out, err = run("ingest", "--out", str(tmp_path / "d"), "--set", "train.epochs=0")
    assert (code, out, err.strip()) == (2, "", "error: train.epochs must be >= 1")

    code, out, err = run(
        "preprocess",
        "--dataset",
        str(tmp_path / "missing"),
        "--transform-out",
        str(tmp_path / "t"),
        "--features-out",
        str(tmp_path / "f"),
    )
    assert code == 1 and out == ""
    missing = tmp_path / "missing"
    assert err.strip() == f"error: preprocess: dataset artifact '{missing}' does not exist"

    code, out, err = run(
        "evaluate",
        "--model",
        str(w / "model"),
        "--dataset",
        str(w / "dataset"),
        "--champion",
        str(w / "model"),
        "--no-champion",
    )
    assert code == 2 and "exclude each other" in err

    # a slice column the test split lacks: a config error before anything is scored
    code, out, err = run(
        "evaluate",
        "--model",
        str(w / "model"),
        "--dataset",
        str(w / "dataset"),
        "--no-champion",
        "--set",
        "evaluate.slice_columns=[carrier, airline]",
    )
    assert code == 2 and out == ""
    assert err.startswith("error: evaluate: evaluate.slice_columns: ['airline'] not column(s)")
    # the HTML report may not be written into an input folder
    code, out, err = run(
        "evaluate",
        "--model",
        str(w / "model"),
        "--dataset",
        str(w / "dataset"),
        "--html-out",
        str(w / "model" / "r.html"),
    )
    assert code == 2 and "--html-out" in err and "is inside --model" in err
    assert not (w / "model" / "r.html").exists()

    code, out, err = run("deploy", "--model", str(w / "model"), "--if-promoted", str(w / "x.json"))
    assert code == 2 and "is not an evaluate report" in err and out == ""

    code, out, err = run("deploy", "--model", str(w / "features"))
    assert code == 1 and "holds a 'features' artifact, expected 'model'" in err
