"""``torchkfp schedule``: run the pipeline on a cron, on Vertex AI (``create``, ``list``,
``pause``, ``resume``, ``delete``: :mod:`torchkfp.vertex.schedules`) or locally, in the
foreground (``run-local``: :mod:`torchkfp.local_scheduler`)."""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
from pathlib import Path

import typer

from torchkfp.cli._vertex import call, pipeline_template
from torchkfp.cli.options import (
    ConfigOpt,
    DryRunOpt,
    SetOpt,
    TemplateOpt,
    VertexConfigOpt,
    VertexSetOpt,
    echo_json,
    fail,
    load_config,
    load_vertex_config,
)

schedule_app = typer.Typer(
    help="Run the pipeline on a schedule: Vertex AI schedules (create, list, pause, resume, "
    "delete) or locally (run-local).\n\nExample:  torchkfp schedule list --config "
    "configs/vertex.yaml",
    no_args_is_help=True,
)


# ---- locally ------------------------------------------------------------------------------
def _log(msg: str) -> None:
    stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    typer.echo(f"{stamp}  {msg}")


@schedule_app.command("run-local")
def run_local(
    cron: str = typer.Option(
        ...,
        "--cron",
        help="When to run: 5 cron fields (minute hour day-of-month month day-of-week), UTC unless "
        "prefixed 'TZ=Area/City ' (as on Vertex AI). A 6th trailing field is seconds "
        "(local testing).",
    ),
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
    max_runs: int = typer.Option(
        None, "--max-runs", min=1, help="Stop (exit 0) after this many runs, whatever the outcome."
    ),
    history: str = typer.Option(
        None,
        "--history",
        help="JSON-lines history file (default: <run.pipeline_root>/schedule_history.jsonl).",
    ),
    grace: float = typer.Option(
        30.0,
        "--grace",
        min=0,
        help="On Ctrl-C/SIGTERM: seconds the current run gets to exit after SIGTERM before "
        "SIGKILL.",
    ),
    no_cache: bool = typer.Option(
        False,
        "--no-cache",
        help="Every run reruns every stage (torchkfp run --no-cache); by default a run on "
        "unchanged data and settings reuses the stage cache.",
    ),
) -> None:
    """Run the whole DAG locally on a cron schedule, in the foreground, one run at a time.

    Each tick runs `torchkfp run --quiet` in its own process (logs in <history>-logs/); on
    unchanged data a run reuses the stage cache (--no-cache: every run retrains).

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

    from torchkfp.cron import CronError, CronSchedule
    from torchkfp.local_scheduler import (
        HISTORY_FILE,
        LocalScheduler,
        ScheduleError,
        SubprocessRun,
    )

    try:
        schedule = CronSchedule.parse(cron, allow_seconds=True)
    except CronError as e:
        fail(str(e))
    cfg = load_config(config, set_)
    hist = Path(history).resolve() if history else Path(cfg.run.pipeline_root) / HISTORY_FILE
    hist.parent.mkdir(parents=True, exist_ok=True)
    # the config every run uses, frozen at start (paths already absolute)
    snapshot = hist.with_name(hist.stem + ".config.yaml")
    snapshot.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    argv = [sys.executable, "-m", "torchkfp.cli", "run", "--config", str(snapshot), "--quiet"]
    if no_cache:
        argv.append("--no-cache")
    run_fn = SubprocessRun(argv, hist.with_name(hist.stem + "-logs"), grace_s=grace, log=_log)
    sched = LocalScheduler(schedule, run_fn, hist, max_runs=max_runs, log=_log)
    _log(f"history: {hist}  (config snapshot: {snapshot}; Ctrl-C stops)")
    try:
        sched.run()
    except ScheduleError as e:
        fail(str(e))


# ---- on Vertex AI -------------------------------------------------------------------------
@schedule_app.command("create")
def create(
    cron: str = typer.Option(
        ...,
        "--cron",
        help="Unix cron, optionally with a time zone: 'TZ=America/New_York 0 3 * * *'.",
    ),
    display_name: str = typer.Option(
        None,
        "--display-name",
        "--name",
        help="Schedule display name (default: the config's run.pipeline_name).",
    ),
    config: str = VertexConfigOpt,
    set_: list[str] = VertexSetOpt,
    max_concurrent_runs: int = typer.Option(
        1, "--max-concurrent-runs", help="Runs of this schedule allowed at once."
    ),
    start_time: str = typer.Option(
        None, "--start-time", help="First run not before this ISO time, e.g. 2026-01-01T00:00:00Z."
    ),
    end_time: str = typer.Option(None, "--end-time", help="No runs after this ISO time."),
    max_runs: int = typer.Option(None, "--max-runs", help="Stop after this many runs."),
    template: str = TemplateOpt,
    pipeline: str = typer.Option(
        "training",
        "--pipeline",
        help="What to run: 'training' (the whole DAG) or 'batch' (batch scoring with the "
        "champion, as the config's batch section says).",
    ),
    dry_run: bool = DryRunOpt,
) -> None:
    """Create a Vertex AI schedule that runs the pipeline with this config on a cron.

    Examples:\n
      torchkfp schedule create --cron 'TZ=America/New_York 0 3 * * *' -c my.yaml --dry-run\n
      torchkfp schedule create --cron '0 6 * * 1' --name weekly -c my.yaml --max-runs 52\n
      torchkfp schedule create --pipeline batch --cron '0 7 * * *' -c my.yaml
    """
    from torchkfp.cron import CronSchedule
    from torchkfp.vertex import schedules

    cfg = load_vertex_config(config, set_)
    if pipeline not in schedules.PIPELINES:
        fail(f"--pipeline {pipeline!r}: use one of {', '.join(schedules.PIPELINES)}")
    call(CronSchedule.parse, cron)  # a bad cron fails before anything is compiled
    # batch: its settings are checked before anything is compiled
    values = call(schedules.pipeline_values, cfg, pipeline)
    default_name = cfg.run.pipeline_name + ("-batch" if pipeline == "batch" else "")
    with tempfile.TemporaryDirectory(prefix="torchkfp-schedule-") as tmp:
        path = call(pipeline_template, cfg, template, tmp, pipeline)
        result = call(
            schedules.create_schedule,
            cfg,
            path,
            cron=cron,
            display_name=display_name or default_name,
            parameter_values=values,
            max_concurrent_run_count=max_concurrent_runs,
            start_time=start_time,
            end_time=end_time,
            max_run_count=max_runs,
            dry_run=dry_run,
        )
    typer.echo("next runs: " + ", ".join(result.next_runs), err=True)
    if dry_run:
        echo_json(result.request)
        return
    typer.echo(f"created: {result.schedule.name}", err=True)
    echo_json(result.schedule)


@schedule_app.command("list")
def list_(
    config: str = VertexConfigOpt,
    set_: list[str] = VertexSetOpt,
    display_name: str = typer.Option(None, "--name", help="Only schedules with this name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the Vertex AI schedules in the configured project and region.

    Examples:\n
      torchkfp schedule list -c configs/vertex.yaml\n
      torchkfp schedule list -c configs/vertex.yaml --name nightly --json
    """
    from torchkfp.vertex import schedules

    cfg = load_vertex_config(config, set_)
    found = call(schedules.list_schedules, cfg, display_name=display_name)
    if as_json:
        echo_json([s.to_dict() for s in found])
        return
    if not found:
        typer.echo(f"no schedules in {cfg.vertex.project}/{cfg.vertex.region}")
        return
    typer.echo(f"{'ID':<20} {'STATE':<10} {'NAME':<28} {'CRON':<32} NEXT RUN")
    for s in found:
        typer.echo(
            f"{s.name.rsplit('/', 1)[1]:<20} {s.state:<10} {s.display_name:<28} "
            f"{s.cron:<32} {s.next_run_time or '-'}"
        )


def _action(action: str, name: str, config: str | None, sets: list[str] | None, dry: bool):
    from torchkfp.vertex import schedules

    cfg = load_vertex_config(config, sets)
    fn = {
        "pause": schedules.pause_schedule,
        "resume": schedules.resume_schedule,
        "delete": schedules.delete_schedule,
    }[action]
    result = call(fn, cfg, name, dry_run=dry)
    if dry:
        echo_json(result.request)
        return
    typer.echo(f"{action}d: {result.schedule.name}", err=True)
    echo_json(result.schedule)


NameArg = typer.Argument(..., help="Schedule ID, full resource name, or display name.")


@schedule_app.command("pause")
def pause(
    name: str = NameArg,
    config: str = VertexConfigOpt,
    set_: list[str] = VertexSetOpt,
    dry_run: bool = DryRunOpt,
) -> None:
    """Pause a schedule: no new runs until it is resumed.

    Examples:\n
      torchkfp schedule pause 1234567890 -c configs/vertex.yaml\n
      torchkfp schedule pause nightly -c configs/vertex.yaml --dry-run
    """
    _action("pause", name, config, set_, dry_run)


@schedule_app.command("resume")
def resume(
    name: str = NameArg,
    config: str = VertexConfigOpt,
    set_: list[str] = VertexSetOpt,
    dry_run: bool = DryRunOpt,
) -> None:
    """Resume a paused schedule.

    Examples:\n
      torchkfp schedule resume 1234567890 -c configs/vertex.yaml\n
      torchkfp schedule resume nightly -c configs/vertex.yaml --dry-run
    """
    _action("resume", name, config, set_, dry_run)


@schedule_app.command("delete")
def delete(
    name: str = NameArg,
    config: str = VertexConfigOpt,
    set_: list[str] = VertexSetOpt,
    dry_run: bool = DryRunOpt,
) -> None:
    """Delete a schedule (runs it already started keep running).

    Examples:\n
      torchkfp schedule delete 1234567890 -c configs/vertex.yaml\n
      torchkfp schedule delete nightly -c configs/vertex.yaml --dry-run
    """
    _action("delete", name, config, set_, dry_run)


def register(app: typer.Typer) -> None:
    app.add_typer(schedule_app, name="schedule")
