"""A failed local run names the exception the failing stage died of (type and message, read
from the stage's own output), in the run summary and as one ``error:`` line of the CLI, with
and without --quiet; not only kfp's "Inner task failed"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torchkfp.pipelines import local
from torchkfp.pipelines.local import STAGES, PipelineFailed, root_exception, run_local

from torchkfp.config import Config
from torchkfp.registry.local import LocalRegistry

EXE = Path(sys.executable).with_name("torchkfp")


# ---- reading the root exception from a task's output (no kfp) ------------------------------
def _indented(text: str) -> list[str]:
    # kfp.local prints a task's lines indented by 4 spaces
    return ["    " + ln for ln in text.splitlines()]


def test_root_exception_is_the_last_traceback_s_exception():
    out = _indented(
        """starting
Traceback (most recent call last):
  File "a.py", line 1, in <module>
    inner()
KeyError: 'x'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "a.py", line 3, in <module>
    raise DataValidationError("column 'nope' is missing")
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
torchkfp.errors.DataValidationError: column 'nope' is missing
"""
    )
    assert root_exception(out) == (
        "torchkfp.errors.DataValidationError",
        "column 'nope' is missing",
    )


def test_root_exception_multiline_message_and_bare_type():
    out = _indented(
        """Traceback (most recent call last):
  File "t.py", line 9, in run
    raise TrainingError(msg)
torchkfp.errors.TrainingError: torchrun exited with code 1
worker 0: ValueError: bad shape

after the blank line
"""
    )
    assert root_exception(out) == (
        "torchkfp.errors.TrainingError",
        "torchrun exited with code 1\nworker 0: ValueError: bad shape",
    )
    bare = ["Traceback (most recent call last):", '  File "x", line 1', "KeyboardInterrupt"]
    assert root_exception(bare) == ("KeyboardInterrupt", "")
    assert root_exception(["no traceback here", "ValueError: not after a traceback"]) is None


def test_output_follows_tasks_and_finds_the_failed_one(tmp_path):
    import io

    term = io.StringIO()
    out = local._KfpOutput(tmp_path / "kfp.log", term, quiet=True)
    out.write("12:00:00.000 - INFO - Executing task \x1b[96m'ingest'\x1b[0m\n")
    out.write("    Traceback (most recent call last):\n    ValueError: earlier, handled\n")
    out.write("12:00:01.000 - INFO - Task \x1b[96m'ingest'\x1b[0m finished with status SUCCESS\n")
    out.write("12:00:01.000 - INFO - Executing task 'preprocess'\n")
    out.write("    Traceback (most recent call last):\n")
    out.write('      File "p.py", line 3, in <module>\n')
    out.write("    torchkfp.errors.DataValidationError: label 'y' has 3 classes\n\n")
    out.write("12:00:02.000 - ERROR - Task 'preprocess' finished with status FAILURE\n")
    stage, exc = out.failure()
    out.close()
    assert stage == "preprocess"
    assert exc == ("torchkfp.errors.DataValidationError", "label 'y' has 3 classes")
    assert "preprocess: FAILURE" in term.getvalue()  # quiet mode: one line per stage event
    assert "Traceback" not in term.getvalue()
    assert "Traceback" in (tmp_path / "kfp.log").read_text()  # everything in the log

    # a task that started and never reported its end is the failed one
    out2 = local._KfpOutput(tmp_path / "kfp2.log", io.StringIO(), quiet=False)
    out2.write("Executing task 'train'\n    Traceback (most recent call last):\n    OSError: x")
    assert out2.failure() == ("train", ("OSError", "x"))
    out2.close()


def test_failure_outside_any_stage_is_recorded(small_config, monkeypatch):
    def broken(target, cfg):
        raise ValueError("the pipeline cannot be built")

    monkeypatch.setattr(local, "build_pipeline", broken)
    with pytest.raises(PipelineFailed) as e:
        run_local(small_config, quiet_kfp=True)
    summary = json.loads(Path(e.value.summary_path).read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "ValueError: the pipeline cannot be built"
    assert summary["failed_stage"] is None and e.value.stage is None
    assert all(s["status"] == "not run" for s in summary["stages"].values())


# ---- real kfp.local runs ---------------------------------------------------------------------
def _bad_feature(cfg: Config) -> Config:
    return cfg.override({"data.numeric_features": ["distance", "no_such_column"]})


def _assert_root_cause_summary(summary: dict, stage: str | None, type_: str, *words: str):
    assert summary["status"] == "failed"
    assert summary["error"].startswith(f"{type_}: "), summary["error"]
    for w in words:
        assert w in summary["error"], summary["error"]
    assert "Inner task failed" in summary["runner_error"]  # kfp's own message, kept
    assert summary["failed_stage"] in STAGES
    if stage is not None:
        assert summary["failed_stage"] == stage
    assert summary["stages"][summary["failed_stage"]]["status"] == "failed"
    assert "Traceback" in Path(summary["log"]).read_text()


@pytest.mark.integration
@pytest.mark.parametrize("quiet", [True, False])
def test_run_local_records_the_failed_stage_s_exception(small_config, quiet, capsys):
    with pytest.raises(PipelineFailed) as e:
        run_local(_bad_feature(small_config), quiet_kfp=quiet)
    summary = json.loads(Path(e.value.summary_path).read_text())
    _assert_root_cause_summary(summary, "ingest", "DataValidationError", "no_such_column")
    assert summary["error_type"] == "torchkfp.errors.DataValidationError"
    assert e.value.stage == "ingest" and e.value.error == summary["error"]
    shown = capsys.readouterr().out
    assert ("Traceback" in shown) is not quiet  # the task's output reaches the terminal
    # nothing after the failed stage ran, nothing was registered
    assert summary["stages"]["train"]["status"] == "not run"
    cfg = small_config.deploy
    assert LocalRegistry(cfg.registry_dir, cfg.model_name).versions() == []


def _cli_run(cfg: Config, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.to_dict()))
    return subprocess.run(
        [str(EXE), "run", *flags, "--config", str(cfg_file)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


@pytest.mark.integration
@pytest.mark.parametrize("flags", [("-q",), ()], ids=["quiet", "verbose"])
def test_cli_prints_the_root_cause_and_exits_1(small_config, tmp_path, flags):
    p = _cli_run(_bad_feature(small_config), tmp_path, *flags)
    assert p.returncode == 1, p.stderr[-2000:]
    [line] = _error_lines(p.stderr)
    assert line.startswith("error: ingest: DataValidationError: "), line
    assert "no_such_column" in line
    summary_path = p.stdout.strip().splitlines()[-1]  # the summary path comes last
    assert summary_path.endswith("run_summary.json")
    summary = json.loads(Path(summary_path).read_text())
    _assert_root_cause_summary(summary, "ingest", "DataValidationError", "no_such_column")
    assert "pipeline failed" in p.stdout  # the stage table is printed too


@pytest.mark.integration
def test_cli_names_a_later_stage_s_root_cause(small_config, tmp_path):
    # a label ingest accepts (a numeric column of the query) but that is no binary label: the
    # label checks after ingest reject it (preprocess, with the task-kinds work in place)
    numeric = [f for f in small_config.data.numeric_features if f != "dep_hour"]
    cfg = small_config.override(
        {"data.label": "dep_hour", "data.numeric_features": numeric, "data.task": "binary"}
    )
    p = _cli_run(cfg, tmp_path, "-q")
    assert p.returncode == 1, p.stderr[-2000:]
    [line] = _error_lines(p.stderr)
    summary = json.loads(Path(p.stdout.strip().splitlines()[-1]).read_text())
    _assert_root_cause_summary(summary, None, "DataValidationError", "dep_hour")
    assert summary["failed_stage"] != "ingest"
    assert line.startswith(f"error: {summary['failed_stage']}: DataValidationError: "), line


def test_only_the_python3_command_word_is_swapped():
    # kfp.local swaps every "python3" in a task's command, the config (a path in
    # warehouse.tables under .../lib/python3.11/...) included: the runner keeps paths intact
    cmd = [
        "sh",
        "-ec",
        '_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main "$@"\n',
        "--executor_input",
        '{"tables": {"t": "/venv/lib/python3.11/site-packages/x/data.csv"}}',
    ]
    out = local._replace_python_executable(cmd, "/venv/bin/python")
    assert out[2] == '_KFP_RUNTIME=true /venv/bin/python -m kfp.dsl.executor_main "$@"\n'
    assert out[4] == cmd[4]
