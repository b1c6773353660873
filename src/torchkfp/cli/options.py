"""What the commands share: the common options, loading the config, the error exit and JSON
output. Command modules import from here, never from the ``torchkfp.cli`` package itself (which
imports them)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import typer

from torchkfp.config import Config, ConfigError
from torchkfp.config.files import parse_yaml

DEFAULT_LOCAL_CONFIG = "configs/local.yaml"
DEFAULT_VERTEX_CONFIG = "configs/vertex.example.yaml"

ConfigOpt = typer.Option(
    None,
    "--config",
    "-c",
    help=f"YAML config (default: {DEFAULT_LOCAL_CONFIG} if present, else the embedded local "
    "defaults).",
)
SetOpt = typer.Option(
    None,
    "--set",
    help="Override one setting, e.g. --set train.epochs=2 (repeatable; value is YAML).",
)
VertexConfigOpt = typer.Option(
    None, "--config", "-c", help=f"Vertex YAML config (default: {DEFAULT_VERTEX_CONFIG})."
)
VertexSetOpt = typer.Option(
    None,
    "--set",
    help="Override one setting, e.g. --set vertex.project=my-project (repeatable; value is YAML).",
)
TemplateOpt = typer.Option(
    None,
    "--template",
    help="Submit this compiled pipeline YAML instead of compiling one from the config.",
)
DryRunOpt = typer.Option(
    False, "--dry-run", help="Validate and print the request as JSON; send nothing."
)


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print ``error: msg`` on stderr, on one line (line breaks in ``msg`` become spaces), and
    exit with ``code`` (2: configuration or usage, 1: the work itself failed)."""
    typer.secho(f"error: {' '.join(str(msg).split())}", fg="red", err=True)
    raise typer.Exit(code)


QUERY_COMMANDS = ("run", "ingest", "run-local")
"""Commands that run the warehouse query: ``load_config`` checks the query file (it exists, is
text, parses as one query) before they start, so a bad one exits 2 before any work."""


def parse_sets(sets: list[str]) -> dict[str, Any]:
    """``--set section.name=value`` options as ``{"section.name": value}`` (value: YAML)."""
    overrides: dict[str, Any] = {}
    for s in sets:
        key, eq, value = s.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"--set {s!r}: write it as section.name=value")
        section, dot, name = key.partition(".")
        if not dot or not section or not name:
            raise ConfigError(
                f"--set {s!r}: {key!r} is not a setting; write section.name, e.g. train.epochs"
            )
        overrides[key] = parse_yaml(value, f"--set {s!r}: the value")
    return overrides


def check_query(cfg: Config) -> None:
    """ConfigError unless the config's query can be read and parsed (``warehouse.table``: a
    valid name; ``warehouse.query_file``: see :func:`torchkfp.warehouse.load_sql`)."""
    from torchkfp.ingest import source_query

    source_query(cfg.warehouse)


def _command_name() -> str | None:
    """The name of the command being run (``run``, ``ingest``, ...), from the click context:
    typer >= 0.26 carries its own copy of click, older versions use click itself."""
    import importlib

    for module in ("typer._click.globals", "click.globals"):
        try:
            ctx = importlib.import_module(module).get_current_context(silent=True)
        except (ImportError, AttributeError):
            continue
        if ctx is not None:
            return ctx.info_name
    return None


def load_config(
    path: str | None,
    sets: list[str] | None = None,
    default: str = DEFAULT_LOCAL_CONFIG,
    resolve_paths: bool = True,
    query: bool | None = None,
) -> Config:
    """The config from ``path`` (else ``default`` if that file exists, else the embedded
    defaults) with the ``--set section.name=value`` overrides; exits 2 with one ``error:`` line
    on a bad config file, a bad ``--set`` or an unknown setting. ``query``: also check the query
    (None: for the commands that run it, :data:`QUERY_COMMANDS`, with local paths)."""
    if path is None and Path(default).is_file():
        path = default
    if query is None:
        query = resolve_paths and _command_name() in QUERY_COMMANDS
    try:
        overrides = parse_sets(sets) if sets else {}
        cfg = Config.load(path, resolve_paths=False)
        if overrides:
            cfg = cfg.override(overrides)
        cfg = cfg.with_absolute_paths() if resolve_paths else cfg
        if query:
            check_query(cfg)
        return cfg
    except ConfigError as e:
        fail(str(e))
    except (OSError, UnicodeError) as e:
        fail(f"config {path!r} cannot be read ({type(e).__name__}: {e})")


def load_vertex_config(path: str | None, sets: list[str] | None = None) -> Config:
    """The config of a Vertex AI command (default: the example Vertex config), paths kept as
    written: they name places in the cloud or in the run's container."""
    return load_config(path, sets, default=DEFAULT_VERTEX_CONFIG, resolve_paths=False)


def echo_json(obj: Any, indent: int | None = 2) -> None:
    """Print ``obj`` (a result with ``to_dict()``, or plain data) as JSON on stdout;
    ``indent=None``: on one line."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else obj
    typer.echo(json.dumps(data, indent=indent, default=str))


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 (this process and its children: torchrun's epoch lines) to
    stderr while a command works, so stdout holds only its JSON result."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
