"""Reading the files a user points the config at: bounded, text-only, one clear ConfigError.

The config file (YAML) and a query file (SQL) are read through :func:`read_text_file` (it
exists, is a regular file under a size limit, is not binary, is UTF-8); YAML is parsed by
:func:`parse_yaml` (a syntax error named by line and column, alias bombs refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchkfp.config.base import ConfigError

MAX_CONFIG_BYTES = 1 << 20
"""The largest config file read (a config is a few KiB; anything larger is not one)."""
MAX_YAML_NODES = 100_000
"""A YAML document expanding to more values than this (anchors and aliases nesting each other,
the "billion laughs") is refused before anything walks it."""


def read_text_file(
    path: str | Path, where: str, *, kind: str, limit: int, encoding: str = "utf-8"
) -> str:
    """The text of ``path``; ConfigError naming ``where`` if it is a folder, missing, not a
    regular file, over ``limit`` bytes, unreadable, binary or not UTF-8. ``kind`` names what
    the file should hold (``YAML``, ``SQL``)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{where} is a folder, not a {kind} file")
    if not p.exists():
        raise ConfigError(f"{where} does not exist")
    if not p.is_file():
        raise ConfigError(f"{where} is not a regular file")
    try:
        if p.stat().st_size > limit:
            what = "a config" if kind == "YAML" else "a query"
            raise ConfigError(f"{where} is larger than {limit} bytes: not {what}")
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{where} cannot be read ({type(e).__name__}: {e.strerror})") from None
    if b"\0" in data:
        raise ConfigError(f"{where} is a binary file, not {kind} text")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})"
        ) from None


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


def parse_yaml(text: str, what: str) -> Any:
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


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping of sections in a YAML config file (an empty file: {})."""
    where = f"config file {str(path)!r}"
    text = read_text_file(path, where, kind="YAML", limit=MAX_CONFIG_BYTES)
    raw = parse_yaml(text, where)
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(
            f"{where} must hold a mapping of sections (warehouse:, train:, ...), not a "
            f"{type(raw).__name__}"
        )
    return raw or {}
