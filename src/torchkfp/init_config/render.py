"""The config ``torchkfp init`` writes: commented YAML that ``torchkfp run -c`` runs as is."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import yaml

from torchkfp.config import Config, ConfigError
from torchkfp.init_config.inference import Inference
from torchkfp.init_config.source import FEW_DISTINCT, InitError


# ---- the config -----------------------------------------------------------------------------
def _in_memory_warehouse_ok() -> bool:
    """Whether this version's config takes ``warehouse.duckdb_path: null`` (an in-memory
    DuckDB holding only ``warehouse.tables``)."""
    try:
        Config.from_dict(
            {"warehouse": {"duckdb_path": None, "query_file": None, "table": "t"}}
        ).with_absolute_paths()
    except (ConfigError, TypeError, AttributeError):
        return False
    return True


def config_dict(inf: Inference, config_dir: str | Path | None = None) -> dict[str, Any]:
    """The config's settings (validated): the inferred ones, every other one at its default.
    ``config_dir``: where the config is written; only used where this version's config cannot
    take an in-memory DuckDB (``duckdb_path: null``): then the warehouse is the default file
    under it (``<config_dir>/.data/warehouse.duckdb``, created on first use)."""
    wh = {"query_file": None, **inf.warehouse}
    if "duckdb_path" not in wh:
        if _in_memory_warehouse_ok():
            wh["duckdb_path"] = None
        else:
            base = Path(config_dir or ".").resolve()
            wh["duckdb_path"] = str(base / ".data" / "warehouse.duckdb")
    raw = {
        "warehouse": wh,
        "data": {
            "label": inf.label,
            "task": inf.task,
            "numeric_features": inf.numeric,
            "categorical_features": inf.categorical,
        },
        "split": inf.split,
        "deploy": {"model_name": inf.name},
        "vertex": {"endpoint_display_name": inf.name},
        "run": {"pipeline_name": f"torchkfp-{inf.name}"},
    }
    try:
        cfg = Config.from_dict(raw)
    except ConfigError as e:
        raise InitError(f"the inferred config is not valid: {e}") from None
    return cfg.to_dict()


def _first_sentence(doc: str | None) -> str:
    text = " ".join((doc or "").split())
    m = re.search(r"(?<![a-z]\.[a-z])(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    return text[: m.start() + 1] if m else text


def _comment(text: str, indent: str) -> list[str]:
    return [
        f"{indent}# {ln}" for ln in textwrap.wrap(text, width=96 - len(indent) - 2) if ln.strip()
    ]


def _yaml_value(key: str, value: Any, indent: str) -> list[str]:
    # scalars: ``key: value``; lists and mappings of scalars in flow style: ``key: [a, b]``
    flow = None if isinstance(value, list | dict) else False
    text = yaml.safe_dump(
        {key: value}, default_flow_style=flow, sort_keys=False, width=96 - len(indent)
    )
    return [f"{indent}{ln}" for ln in text.rstrip("\n").splitlines()]


def render(inf: Inference, config_dir: str | Path | None = None) -> str:
    """The config file: a header saying what was inferred and why, then every section and
    setting with its meaning as a comment."""
    values = config_dict(inf, config_dir)
    set_by_init = {
        "warehouse": set(inf.warehouse) | {"query_file", "duckdb_path"},
        "data": {"label", "task", "numeric_features", "categorical_features"},
        "split": set(inf.split),
        "deploy": {"model_name"},
        "vertex": {"endpoint_display_name"},
        "run": {"pipeline_name"},
    }
    lines = [
        f"# Written by `torchkfp init` from {inf.source} ({inf.rows} rows).",
        "# Run it:  torchkfp run -c THIS_FILE      (check the inferred settings first)",
        "#",
        f"# label:       {inf.label} -> task {inf.task} ({inf.task_reason})",
        f"# split:       {inf.split_reason}",
    ]
    lines += _comment("numeric:     " + (", ".join(inf.numeric) or "-"), "")
    lines += _comment("categorical: " + (", ".join(inf.categorical) or "-"), "")
    if inf.excluded:
        lines.append("# not features:")
        for col, why in inf.excluded.items():
            lines += _comment(f"  {col}: {why}", "")
    for note in inf.notes:
        lines += _comment(f"NOTE: {note}", "")
    lines += _comment(
        f"Rules: floats -> numeric; integers -> numeric, but categorical with <= {FEW_DISTINCT} "
        "values; strings, booleans -> categorical; dates, identifiers, constants -> left out. "
        "Edit the lists as you see fit; [init] marks the settings init chose.",
        "",
    )
    for section, info in Config.model_fields.items():
        model = info.annotation
        lines += ["", *_comment(f"---- {section}: {_first_sentence(info.description)}", "")]
        lines.append(f"{section}:")
        for fname, finfo in model.model_fields.items():
            if fname not in values[section]:
                continue
            doc = _first_sentence(finfo.description)
            if fname in set_by_init.get(section, ()):
                doc = f"[init] {doc}"
            lines += _comment(doc, "  ")
            lines += _yaml_value(fname, values[section][fname], "  ")
    return "\n".join(lines) + "\n"
