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
    """Print ``error: msg`` on stderr, on one line (line breaks in ``msg`` become spaces), and
    exit with ``code`` (2: configuration or usage, 1: the work itself failed)."""
    typer.secho(f"error: {' '.join(str(msg).split())}", fg="red", err=True)
    raise typer.Exit(code)


MAX_CONFIG_BYTES = 1 << 20
"""The largest config file read (a config is a few KiB; anything larger is not one)."""
MAX_YAML_NODES = 100_000
"""A YAML document expanding to more values than this (anchors and aliases nesting each other,
the "billion laughs") is refused before anything walks it."""
QUERY_COMMANDS = ("run", "ingest", "run-local")
"""Commands that run the warehouse query: ``load_config`` checks the query file (it exists, is
text, parses as one query) before they start, so a bad one exits 2 before any work."""


def _yaml_error(e: Exception) -> str:
    """One line from a PyYAML error: what it expected and where (line, column; 1-based)."""
    import yaml

    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{' '.join(str(e.problem or e.context or 'invalid').split())}{where}"
    return " ".join(str(e).split())[:200]


def _expanded_size(obj: Any, limit: int) -> int:
    """How many values ``obj`` holds once aliases are expanded (counts shared nodes once per
    use, without expanding them); stops counting past ``limit``."""
    memo: dict[int, int] = {}

    def size(o: Any) -> int:
        if not isinstance(o, dict | list):
            return 1
        if id(o) in memo:
            return memo[id(o)]
        memo[id(o)] = limit + 1  # a cycle (a recursive alias) counts as too large
        items = list(o.values()) + list(o) if isinstance(o, dict) else o
        total = 1
        for x in items:
            total += size(x)
            if total > limit:
                break
        memo[id(o)] = total
        return total

    return size(obj)


def _parse_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load(text)``; ConfigError on one line naming ``what`` otherwise."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} is not valid YAML: {_yaml_error(e)}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply") from None
    if _expanded_size(value, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise ConfigError(
            f"{what} expands to more than {MAX_YAML_NODES} values (nested YAML aliases)"
        )
    return value


def check_config_file(path: str) -> None:
    """ConfigError (one line) unless ``path`` is a readable UTF-8 YAML file holding a mapping:
    a folder, a device, a binary file, a file over 1 MiB or a YAML syntax error is named with
    its position, never with a traceback."""
    p = Path(path)
    where = f"config file {path!r}"
    if p.is_dir():
        raise ConfigError(f"{where} is a folder, not a YAML file")
    if not p.exists():
        raise ConfigError(f"{where} does not exist")
    if not p.is_file():
        raise ConfigError(f"{where} is not a regular file")
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{where} is larger than {MAX_CONFIG_BYTES} bytes: not a config")
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{where} cannot be read ({type(e).__name__}: {e.strerror})") from None
    if b"\0" in data:
        raise ConfigError(f"{where} is a binary file, not YAML text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})"
        ) from None
    raw = _parse_yaml(text, where)
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(
            f"{where} must hold a mapping of sections (warehouse:, train:, ...), not a "
            f"{type(raw).__name__}"
        )


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
        overrides[key] = _parse_yaml(value, f"--set {s!r}: the value")
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
        if path is not None:
            check_config_file(path)
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
