"""``torchkfp submit`` and ``torchkfp schedule create|list|pause|resume|delete``: Vertex AI
Pipelines runs and schedules.

Each command compiles (where it needs a pipeline) and then makes one call into
:mod:`torchkfp.submit`; kfp and google-cloud-aiplatform are imported inside the commands so
``torchkfp --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from torchkfp.commands.schedule_group import schedule_app

if TYPE_CHECKING:
    from torchkfp.config import Config

DEFAULT_VERTEX_CONFIG = "configs/vertex.example.yaml"  # the same default as torchkfp.cli

ConfigOpt = typer.Option(
    None, "--config", "-c",
    help=f"Vertex YAML config (default: {DEFAULT_VERTEX_CONFIG}).",
)  # fmt: skip
SetOpt = typer.Option(
    None, "--set",
    help="Override one setting, e.g. --set vertex.project=my-project (repeatable; value is YAML).",
)  # fmt: skip
TemplateOpt = typer.Option(
    None, "--template",
    help="Submit this compiled pipeline YAML instead of compiling one from the config.",
)  # fmt: skip
DryRunOpt = typer.Option(
    False, "--dry-run", help="Validate and print the request as JSON; send nothing."
)


def _load(config: str | None, sets: list[str] | None) -> Config:
    from torchkfp.cli import DEFAULT_VERTEX_CONFIG as default
    from torchkfp.cli import load_config

    return load_config(config, sets, default=default, resolve_paths=False)


def _fail(msg: str, code: int) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def _template(cfg: Config, template: str | None, workdir: str) -> str:
    """The compiled pipeline: ``template`` if given, else the Vertex pipeline compiled from
    ``cfg`` into ``workdir``."""
    if template:
        return template
    from torchkfp.pipelines.compiler import compile_pipeline

    return compile_pipeline("vertex", cfg, Path(workdir) / "flights_delay_vertex.yaml")


def _echo_json(obj: Any) -> None:
    from torchkfp.submit import to_json

    typer.echo(to_json(obj))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _sdk_logs_to_stderr() -> None:
    """The aiplatform SDK logs progress to stdout, where this CLI prints its JSON result: send
    those logs to stderr. A handler on the SDK's parent logger stops the SDK from adding its
    own stdout handlers; loggers it already made are pointed at stderr."""
    parent = logging.getLogger("google.cloud.aiplatform")
    if not any(isinstance(h, _StderrHandler) for h in parent.handlers):
        parent.addHandler(_StderrHandler())
        parent.setLevel(logging.INFO)
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if name.startswith("google.cloud.aiplatform.") and isinstance(lg, logging.Logger):
            for h in list(lg.handlers):
                if type(h) is logging.StreamHandler:  # the SDK's own (stdout) handler
                    lg.removeHandler(h)  # its records now reach the parent's stderr handler


def _run(fn, *args: Any, **kwargs: Any) -> Any:
    """Call into torchkfp.submit; exit 2 on a config problem, 1 on a failed request or run."""
    from torchkfp.config import ConfigError
    from torchkfp.submit import SubmitError

    _sdk_logs_to_stderr()
    try:
        return fn(*args, **kwargs)
    except ConfigError as e:
        _fail(str(e), 2)
    except SubmitError as e:
        _fail(str(e), 1)


def submit(
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
    dry_run: bool = DryRunOpt,
    wait: bool = typer.Option(
        False, "--wait", help="Follow the run until it ends; exit 1 unless it SUCCEEDED."
    ),
    template: str = TemplateOpt,
    display_name: str = typer.Option(None, "--display-name", help="Run display name."),
    poll_interval: float = typer.Option(
        15.0, "--poll-interval", help="--wait: seconds between state checks."
    ),
    timeout: float = typer.Option(
        None, "--timeout", help="--wait: give up (exit 1) after this many seconds."
    ),
) -> None:
    """Compile the Vertex AI pipeline and submit one run to Vertex AI Pipelines.

    The whole config is passed as the run's config_json parameter.

    Examples:\n
      torchkfp submit --config configs/vertex.yaml --dry-run\n
      torchkfp submit --config configs/vertex.yaml --wait\n
      torchkfp submit -c configs/vertex.yaml --set train.epochs=3 --set vertex.enable_caching=false
    """
    from torchkfp import submit as lib

    cfg = _load(config, set_)
    with tempfile.TemporaryDirectory(prefix="torchkfp-submit-") as tmp:
        path = _run(_template, cfg, template, tmp)

        def show(state: str) -> None:
            typer.echo(f"state: {state}", err=True)

        result = _run(
            lib.submit, cfg, path, display_name=display_name, dry_run=dry_run, wait=wait,
            poll_interval=poll_interval, timeout=timeout, on_state=show,
        )  # fmt: skip
    if dry_run:
        _echo_json(result.request)
        return
    typer.echo(f"submitted: {result.job_name}", err=True)
    typer.echo(f"console:   {result.dashboard_url}", err=True)
    _echo_json({"name": result.job_name, "state": result.state, "url": result.dashboard_url})


@schedule_app.command("create")
def schedule_create(
    cron: str = typer.Option(
        ...,
        "--cron",
        help="Unix cron, optionally with a time zone: 'TZ=America/New_York 0 3 * * *'.",
    ),  # fmt: skip
    display_name: str = typer.Option(
        "torchkfp-flights-delay", "--display-name", "--name", help="Schedule display name."
    ),
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
    max_concurrent_runs: int = typer.Option(
        1, "--max-concurrent-runs", help="Runs of this schedule allowed at once."
    ),
    start_time: str = typer.Option(
        None, "--start-time", help="First run not before this ISO time, e.g. 2026-01-01T00:00:00Z."
    ),
    end_time: str = typer.Option(None, "--end-time", help="No runs after this ISO time."),
    max_runs: int = typer.Option(None, "--max-runs", help="Stop after this many runs."),
    template: str = TemplateOpt,
    dry_run: bool = DryRunOpt,
) -> None:
    """Create a Vertex AI schedule that runs the pipeline with this config on a cron.

    Examples:\n
      torchkfp schedule create --cron 'TZ=America/New_York 0 3 * * *' -c my.yaml --dry-run\n
      torchkfp schedule create --cron '0 6 * * 1' --name weekly -c my.yaml --max-runs 52
    """
    from torchkfp import submit as lib

    cfg = _load(config, set_)
    _run(lib.parse_cron, cron)  # a bad cron fails before anything is compiled
    with tempfile.TemporaryDirectory(prefix="torchkfp-schedule-") as tmp:
        path = _run(_template, cfg, template, tmp)
        result = _run(
            lib.create_schedule, cfg, path, cron=cron, display_name=display_name,
            max_concurrent_run_count=max_concurrent_runs, start_time=start_time,
            end_time=end_time, max_run_count=max_runs, dry_run=dry_run,
        )  # fmt: skip
    typer.echo("next runs: " + ", ".join(result.next_runs), err=True)
    if dry_run:
        _echo_json(result.request)
        return
    typer.echo(f"created: {result.schedule.name}", err=True)
    _echo_json(result.schedule)


@schedule_app.command("list")
def schedule_list(
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
    display_name: str = typer.Option(None, "--name", help="Only schedules with this name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the Vertex AI schedules in the configured project and region.

    Examples:\n
      torchkfp schedule list -c configs/vertex.yaml\n
      torchkfp schedule list -c configs/vertex.yaml --name nightly --json
    """
    from torchkfp import submit as lib

    cfg = _load(config, set_)
    found = _run(lib.list_schedules, cfg, display_name=display_name)
    if as_json:
        _echo_json([s.to_dict() for s in found])
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
    from torchkfp import submit as lib

    cfg = _load(config, sets)
    fn = {
        "pause": lib.pause_schedule,
        "resume": lib.resume_schedule,
        "delete": lib.delete_schedule,
    }[action]
    result = _run(fn, cfg, name, dry_run=dry)
    if dry:
        _echo_json(result.request)
        return
    typer.echo(f"{action}d: {result.schedule.name}", err=True)
    _echo_json(result.schedule)


NameArg = typer.Argument(..., help="Schedule ID, full resource name, or display name.")


@schedule_app.command("pause")
def schedule_pause(
    name: str = NameArg, config: str = ConfigOpt, set_: list[str] = SetOpt,
    dry_run: bool = DryRunOpt,
) -> None:  # fmt: skip
    """Pause a schedule: no new runs until it is resumed.

    Examples:\n
      torchkfp schedule pause 1234567890 -c configs/vertex.yaml\n
      torchkfp schedule pause nightly -c configs/vertex.yaml --dry-run
    """
    _action("pause", name, config, set_, dry_run)


@schedule_app.command("resume")
def schedule_resume(
    name: str = NameArg, config: str = ConfigOpt, set_: list[str] = SetOpt,
    dry_run: bool = DryRunOpt,
) -> None:  # fmt: skip
    """Resume a paused schedule.

    Examples:\n
      torchkfp schedule resume 1234567890 -c configs/vertex.yaml\n
      torchkfp schedule resume nightly -c configs/vertex.yaml --dry-run
    """
    _action("resume", name, config, set_, dry_run)


@schedule_app.command("delete")
def schedule_delete(
    name: str = NameArg, config: str = ConfigOpt, set_: list[str] = SetOpt,
    dry_run: bool = DryRunOpt,
) -> None:  # fmt: skip
    """Delete a schedule (runs it already started keep running).

    Examples:\n
      torchkfp schedule delete 1234567890 -c configs/vertex.yaml\n
      torchkfp schedule delete nightly -c configs/vertex.yaml --dry-run
    """
    _action("delete", name, config, set_, dry_run)


def register(app: typer.Typer) -> None:
    """Add ``submit`` and the ``schedule`` group to the main app."""
    app.command("submit")(submit)
    app.add_typer(schedule_app, name="schedule")
