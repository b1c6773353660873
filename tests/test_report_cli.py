"""``torchkfp report [RUN]``: finds a local run's HTML evaluation report (the latest by default)
through the run summary's ``report_html`` or the evaluate task's ``html_report`` output, as
kfp.local lays them out; ``--open`` hands it to the web browser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from torchkfp.cli import app
from torchkfp.report import find_run_report

KFP_RUN = "flights-delay-2025-01-0{}-12-00-00-000000"  # kfp.local's run folder in a run's root


def run_folder(root: Path, run_id: str, day: int, report: str | None, summary: bool) -> Path:
    """A run as ``torchkfp run`` leaves it: <root>/<run id>/<kfp run>/evaluate/html_report and
    run_summary.json (``report``: the page's text; None: evaluate never ran)."""
    kfp_run = root / run_id / KFP_RUN.format(day)
    (kfp_run / "ingest").mkdir(parents=True)
    entry = None
    if report is not None:
        html = kfp_run / "evaluate" / "html_report"
        html.parent.mkdir()
        html.write_text(report)
        entry = str(html)
    if summary:
        data = {"status": "succeeded" if report else "failed", "run_dir": str(kfp_run)}
        if entry:
            data["report_html"] = entry
        (kfp_run / "run_summary.json").write_text(json.dumps(data))
    return root / run_id


@pytest.fixture()
def runs(tmp_path) -> dict:
    root = tmp_path / "runs"
    old = run_folder(root, "run-20250101-120000-aaaaaa", 1, "<p>first</p>", summary=False)
    mid = run_folder(root, "run-20250102-120000-bbbbbb", 2, "<p>second</p>", summary=True)
    failed = run_folder(root, "run-20250103-120000-cccccc", 3, None, summary=True)
    (root / "cache").mkdir()  # the stage cache and checkpoints live beside the runs
    (root / "checkpoints").mkdir()
    return {"root": root, "old": old, "mid": mid, "failed": failed}


def cli(runs: dict, *args: str):
    r = CliRunner().invoke(app, ["report", *args, "--set", f"run.pipeline_root={runs['root']}"])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout, r.stderr


def test_the_latest_run_with_a_report_by_default(runs):
    code, out, err = cli(runs)
    assert code == 0, err
    found = json.loads(out)
    # the newest run failed before evaluate: the one before it, through its summary
    assert found == {
        "report": str(runs["mid"] / KFP_RUN.format(2) / "evaluate" / "html_report"),
        "run": str(runs["mid"]),
    }
    assert Path(found["report"]).read_text() == "<p>second</p>"


def test_a_run_by_id_or_folder_with_or_without_a_summary(runs):
    code, out, _ = cli(runs, "run-20250101-120000-aaaaaa")  # no summary: the task output
    assert code == 0 and Path(json.loads(out)["report"]).read_text() == "<p>first</p>"
    code, out, _ = cli(runs, str(runs["mid"] / KFP_RUN.format(2)))  # kfp's own run folder
    assert code == 0 and Path(json.loads(out)["report"]).read_text() == "<p>second</p>"
    # a summary naming a report that is gone: the task output is still found by its path
    summary = runs["old"] / KFP_RUN.format(1) / "run_summary.json"
    summary.write_text(json.dumps({"report_html": str(runs["old"] / "gone.html")}))
    code, out, _ = cli(runs, str(runs["old"]))
    assert code == 0 and Path(json.loads(out)["report"]).read_text() == "<p>first</p>"


def test_no_report_is_one_error_line(runs, tmp_path):
    code, out, err = cli(runs, "run-20250103-120000-cccccc")
    assert code == 1 and out == ""
    assert err.startswith("error: report: run folder ") and "holds no evaluation report" in err
    code, out, err = cli(runs, "run-nope")
    assert code == 1 and "'run-nope' is neither a folder nor a run id" in err
    assert "run-20250103-120000-cccccc" in err  # the recent runs it could have meant
    empty = {"root": tmp_path / "none"}
    code, out, err = cli(empty)
    assert code == 1 and "has an evaluation report yet" in err and "torchkfp run" in err


def test_find_run_report_accepts_the_report_file_itself(runs):
    html = runs["mid"] / KFP_RUN.format(2) / "evaluate" / "html_report"
    assert find_run_report(runs["root"], str(html))["report"] == str(html)


@pytest.mark.integration
def test_open_hands_the_report_to_the_browser(runs, tmp_path):
    """A real subprocess (the webbrowser module reads $BROWSER once per process): the
    "browser" is a script that records the URL it is given."""
    seen = tmp_path / "seen.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(f"import sys; open({str(seen)!r}, 'w').write(sys.argv[1])\n")
    env = {**os.environ, "BROWSER": f"{sys.executable} {browser} %s"}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchkfp.cli",
            "report",
            "--open",
            "--set",
            f"run.pipeline_root={runs['root']}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["opened"] is True
    assert seen.read_text() == Path(result["report"]).as_uri()


@pytest.mark.integration
def test_the_dag_run_report_is_found_and_shown(dag_run):
    """The real layout: the DAG run by ``torchkfp run`` (kfp.local) writes the evaluate step's
    HTML output, and ``torchkfp report`` finds it: named by its run id, and with no run named
    the newest run that has one (other tests may add runs to this shared root)."""
    summary = dag_run["summary"]
    run_id = Path(summary["run_dir"]).parent.name

    def report(*args: str) -> dict:
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "torchkfp.cli",
                "report",
                *args,
                "--config",
                str(dag_run["config_file"]),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    found = report(run_id)
    assert Path(found["report"]).is_relative_to(summary["run_dir"])
    runs_root = Path(summary["run_dir"]).parent.parent
    newest = max(r.name for r in runs_root.glob("run-*") if list(r.glob("*/evaluate/html_report")))
    assert Path(report()["report"]).is_relative_to(runs_root / newest)
    page = Path(found["report"]).read_text()
    assert page.startswith("<!DOCTYPE html>") and 'id="gate"' in page and "ROC curve" in page
    # what the evaluate step told KFP about it: the decision and the primary metric
    out = json.loads((Path(summary["run_dir"]) / "evaluate" / "executor_output.json").read_text())
    [art] = out["artifacts"]["html_report"]["artifacts"]
    assert Path(art["uri"]) == Path(found["report"])
    meta = art["metadata"]
    assert meta["promote"] is summary["gate"]["promote"] and meta["metric"] == "roc_auc"
    assert meta["roc_auc"] == pytest.approx(summary["metrics"]["roc_auc"])
