"""What the commands share: the common options, loading the config, the error exit and JSON
output. Command modules import from here, never from the ``torchkfp.cli`` package itself (which
imports them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import typer

from torchkfp.config import Config, ConfigError

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
    """Print ``error: msg`` on stderr and exit with ``code`` (2: configuration or usage, 1: the
    work itself failed)."""
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def load_config(
    path: str | None,
    sets: list[str] | None = None,
    default: str = DEFAULT_LOCAL_CONFIG,
    resolve_paths: bool = True,
) -> Config:
    """The config from ``path`` (else ``default`` if that file exists, else the embedded
    defaults) with the ``--set section.name=value`` overrides; exits 2 on a bad config."""
    import yaml

    if path is None and Path(default).is_file():
        path = default
    try:
        cfg = Config.load(path, resolve_paths=False)
        if sets:
            overrides: dict[str, Any] = {}
            for s in sets:
                key, eq, value = s.partition("=")
                if not eq:
                    raise ConfigError(f"--set {s!r}: write it as section.name=value")
                overrides[key.strip()] = yaml.safe_load(value)
            cfg = cfg.override(overrides)
        return cfg.with_absolute_paths() if resolve_paths else cfg
    except ConfigError as e:
        fail(str(e))


def load_vertex_config(path: str | None, sets: list[str] | None = None) -> Config:
    """The config of a Vertex AI command (default: the example Vertex config), paths kept as
    written: they name places in the cloud or in the run's container."""
    return load_config(path, sets, default=DEFAULT_VERTEX_CONFIG, resolve_paths=False)


def echo_json(obj: Any, indent: int | None = 2) -> None:
    """Print ``obj`` (a result with ``to_dict()``, or plain data) as JSON on stdout;
    ``indent=None``: on one line."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else obj
    typer.echo(json.dumps(data, indent=indent, default=str))
