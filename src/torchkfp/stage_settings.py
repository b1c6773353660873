"""Which config sections each stage receives, and the pipeline parameters that carry them.

Every section is one pipeline parameter, ``<section>_config`` (a dict), and each step gets only
the sections it uses, so its cache key (on Vertex AI: the resolved input values) changes only
when something it uses changes. The one config file still sets everything: the compiled
pipeline takes its sections as parameter defaults, and ``submit`` fills the values from it.
"""

from __future__ import annotations

from typing import Any

STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    # never cached: the source data's fingerprint, which keys ingest's cache
    "fingerprint": ("warehouse", "split"),
    "ingest": ("warehouse", "data", "split"),
    "preprocess": ("data", "preprocess"),
    "train": ("train",),
    # evaluate and deploy find the registry through deploy (+ vertex); both are never cached
    "evaluate": ("evaluate", "deploy", "vertex"),
    "deploy": ("deploy", "vertex"),
}
PIPELINE_SECTIONS: tuple[str, ...] = tuple(
    dict.fromkeys(s for sections in STAGE_SECTIONS.values() for s in sections)
)
"""The sections that are pipeline parameters (``run`` only concerns the local runner)."""


def parameter_name(section: str) -> str:
    return f"{section}_config"


def section_parameter(section: Any) -> dict[str, Any]:
    """A config section as a pipeline parameter value. KFP's parameter values (protobuf
    Struct) cannot hold null: an unset setting whose default is None is left out (the stage
    rebuilds it from the default), and an unset text setting with another default travels as
    "" (which those settings read as unset)."""
    out = {}
    for name, value in section.to_dict().items():
        f = type(section).model_fields[name]
        if value is not None:
            out[name] = value
        elif f.default is not None:
            if not isinstance(f.default, str):
                raise ValueError(f"{section.section_name}.{name}=None cannot be a parameter")
            out[name] = ""
    return out


def pipeline_parameters(cfg: Any) -> dict[str, dict[str, Any]]:
    """``{"warehouse_config": {...}, "data_config": {...}, ...}`` for a ``Config``."""
    return {parameter_name(s): section_parameter(cfg.section(s)) for s in PIPELINE_SECTIONS}
