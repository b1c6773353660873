"""``torchkfp schedule run-local``: run the local DAG on a cron, in the foreground.

The command is attached to the shared ``schedule`` group (:mod:`torchkfp.commands.schedule_group`)
when this module is imported; the group itself is added to the main app by another module.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import typer

from torchkfp.commands.schedule_group import schedule_app

SetOpt = typer.Option(
    None, "--set", help="Override one setting, e.g. --set train.epochs=2 (repeatable; YAML value)."
)


def _log(msg: str) -> None:
    stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    typer.echo(f"{stamp}  {msg}")


@schedule_app.command("run-local")
def run_local_schedule(
    cron: str = typer.Option(
        ...,
        "--cron",
        help="When to run: 5 cron fields (minute hour day-of-month month day-of-week), UTC unless "
        "prefixed 'TZ=Area/City ' (as on Vertex AI). A 6th trailing field is seconds "
        "(local testing).",
    ),  # fmt: skip
    config: str = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML config (default: configs/local.yaml if present, else the embedded defaults).",
    ),  # fmt: skip
    set_: list[str] = SetOpt,
    max_runs: int = typer.Option(
        None, "--max-runs", min=1, help="Stop (exit 0) after this many runs, whatever the outcome."
    ),
    history: str = typer.Option(
        None,
        "--history",
        help="JSON-lines history file (default: <run.pipeline_root>/schedule_history.jsonl).",
    ),  # fmt: skip
    grace: float = typer.Option(
        30.0,
        "--grace",
        min=0,
        help="On Ctrl-C/SIGTERM: seconds the current run gets to exit after SIGTERM before "
        "SIGKILL.",
    ),  # fmt: skip
) -> None:
    """Run the whole DAG locally on a cron schedule, in the foreground, one run at a time.

    Each tick runs `torchkfp run --quiet` in its own process (logs in <history>-logs/).

    A tick that comes while a run is still going is skipped, and recorded as skipped.

    History: one JSON line per run (start, end, status, summary path, error) and per skip.

    Ctrl-C/SIGTERM terminates the current run (SIGTERM; SIGKILL after --grace seconds).

    The stopped run is recorded as 'terminated'; the command exits 0.

    The config is read once, at start: restart the scheduler to pick up changes.

    Examples:\n
      torchkfp schedule run-local --cron "0 3 * * *"\n
      torchkfp schedule run-local --cron "TZ=America/New_York 30 6 * * 1-5" -c configs/local.yaml\n
      torchkfp schedule run-local --cron "*/15 * * * *" --max-runs 4 --history runs.jsonl\n
      tail -f .runs/schedule_history.jsonl
    """
    import yaml

    from torchkfp.cli import fail, load_config
    from torchkfp.local_scheduler import (
        HISTORY_FILE,
        CronSchedule,
        LocalScheduler,
        ScheduleError,
        SubprocessRun,
    )

    try:
        schedule = CronSchedule.parse(cron)
    except ScheduleError as e:
        fail(str(e))
    cfg = load_config(config, set_)
    hist = Path(history).resolve() if history else Path(cfg.run.pipeline_root) / HISTORY_FILE
    hist.parent.mkdir(parents=True, exist_ok=True)
    # the config every run uses, frozen at start (paths already absolute)
    snapshot = hist.with_name(hist.stem + ".config.yaml")
    snapshot.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    argv = [sys.executable, "-m", "torchkfp.cli", "run", "--config", str(snapshot), "--quiet"]
    run_fn = SubprocessRun(argv, hist.with_name(hist.stem + "-logs"), grace_s=grace, log=_log)
    sched = LocalScheduler(schedule, run_fn, hist, max_runs=max_runs, log=_log)
    _log(f"history: {hist}  (config snapshot: {snapshot}; Ctrl-C stops)")
    try:
        sched.run()
    except ScheduleError as e:
        fail(str(e))


def register(app: typer.Typer) -> None:
    """``run-local`` is attached to ``schedule_app`` at import; the group is added to ``app``
    by the module that owns it."""
