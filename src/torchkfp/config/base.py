"""The shared machinery of the config sections: the ``_Section`` base (frozen pydantic model
with ``from_dict`` / ``to_dict``), the value types (strict integers, finite floats, ISO dates),
and the translation of pydantic's errors into one :class:`ConfigError` naming the setting."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Strict,
    ValidationError,
)
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from typing_extensions import Self


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*){0,2}$")
_NAME = re.compile(r"^[a-z][a-z0-9\-]{0,62}$")


def _check(cond: bool, msg: str) -> None:
    if not cond:  # msg is complete (it names the dotted setting): _message passes it on as is
        raise PydanticCustomError("config", "{msg}", {"msg": msg})


def _number(value: Any) -> Any:
    if isinstance(value, bool):  # lax float would take true as 1.0
        raise PydanticCustomError("float_type", "Input should be a valid number")
    try:  # before any bound check, which would call nan "not > 0"
        finite = math.isfinite(float(value)) if isinstance(value, str | float) else True
    except ValueError:
        finite = True  # not a number at all: float parsing says so
    if not finite:
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    return value


def _iso_date(value: Any) -> Any:
    if isinstance(value, dt.date):  # YAML reads a bare 2013-01-01 as a date
        return value.isoformat()
    try:
        if isinstance(value, str):  # anything else: "must be a string"
            dt.date.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("iso_date", "Input should be a YYYY-MM-DD date") from None
    return value


def _str_dict(value: Any) -> Any:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value


def _integral(value: Any) -> Any:
    # Pipeline parameters travel as protobuf Structs, which hold every number as a double: a
    # section rebuilt inside a component sees 3.0 for 3. Whole floats pass; 2.5 does not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _whole_numbers(value: Any) -> Any:
    """Free-form values (query parameters, model arguments): a whole float is an int, as it was
    written, since pipeline parameters turn every number into a double. So ``width: 8`` reaches
    a model factory as 8 in every run; write ``8.5`` (or pass a string) for a float."""

    def fix(v: Any) -> Any:
        if isinstance(v, list):
            return [fix(x) for x in v]
        return _integral(v)

    return {k: fix(v) for k, v in value.items()} if isinstance(value, dict) else value


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


Int = Annotated[int, Strict(), BeforeValidator(_integral)]  # no "3", 2.5 or true
Float = Annotated[float, BeforeValidator(_number), AllowInfNan(False)]  # lax: "3e-4" -> 0.0003
DateStr = Annotated[str, BeforeValidator(_iso_date)]
OptStr = Annotated[str | None, BeforeValidator(_empty_is_none)]
"""A setting that may be unset; "" reads as unset (pipeline parameters cannot carry null)."""
OptDate = Annotated[DateStr | None, BeforeValidator(_empty_is_none)]


class _Section(BaseModel):
    section_name: ClassVar[str] = ""
    """The section's key in the config file (its settings are named ``<section>.<field>``)."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_assignment=False, frozen=True
    )

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Self:
        """Validate a plain mapping (None: all defaults); raise ConfigError naming the setting."""
        try:
            return cls.model_validate({} if raw is None else raw)
        except ValidationError as e:
            raise ConfigError(_message(e, cls)) from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-safe builtins (what ``from_dict`` takes back)."""
        return self.model_dump(mode="json")


# ---- ValidationError -> one ConfigError message ------------------------------------------
_TYPES = {
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float"), "must be an integer"),
    **dict.fromkeys(("float_type", "float_parsing"), "must be a number"),
    **dict.fromkeys(("bool_type", "bool_parsing"), "must be true or false"),
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "iso_date": "is not an ISO date; write it as YYYY-MM-DD",
}
_OPS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_HINTS = {"train.nproc_per_node": " (0: one per GPU)"}


def _info(root: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The FieldInfo that ``loc`` names, walking down from ``root`` (None if it names none)."""
    model: Any = root
    info = None
    for part in loc:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return None
        info = fields[part]
        model = info.annotation
    return info


def _bounds(info: Any, ctx: dict[str, Any]) -> str:
    """'must be >= 1', 'must be in [0, 0.5)': the field's bounds, as written in its Field()."""
    b = {k: getattr(m, k) for m in getattr(info, "metadata", ()) for k in _OPS if hasattr(m, k)}
    b = b or {k: v for k, v in ctx.items() if k in _OPS}
    lo, hi = ("ge" if "ge" in b else "gt"), ("le" if "le" in b else "lt")
    if lo in b and hi in b:
        return (
            f"must be in {'[' if lo == 'ge' else '('}{b[lo]}, {b[hi]}{']' if hi == 'le' else ')'}"
        )
    op = lo if lo in b else hi
    return f"must be {_OPS[op]} {b.get(op, '?')}"


def _path(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def _message(err: ValidationError, root: type[BaseModel]) -> str:
    prefix = getattr(root, "section_name", "")
    unknown: dict[tuple[Any, ...], list[str]] = {}
    msgs: list[str] = []
    for e in err.errors(include_url=False):
        kind, loc, value = e["type"], tuple(e["loc"]), e.get("input")
        path = _path(prefix, loc)
        if kind == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
        elif kind == "config":
            msgs.append(e["ctx"]["msg"])
        elif kind in _TYPES:
            msgs.append(
                f"{path} must not be empty" if value is None else f"{path}={value!r} {_TYPES[kind]}"
            )
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            bounds = _bounds(_info(root, loc), e.get("ctx", {}))
            msgs.append(f"{path} {bounds}{_HINTS.get(path, '')}")
        elif kind == "literal_error":
            msgs.append(f"{path}={value!r}: use {e['ctx']['expected']}")
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            msgs.append(f"{path} must be a mapping, got {type(value).__name__}")
        elif kind == "list_type":
            msgs.append(f"{path} must be a list, got {type(value).__name__}")
        else:
            msgs.append(f"{path}={value!r}: {e['msg']}")
    first = []
    for loc, names in unknown.items():
        model = getattr(_info(root, loc), "annotation", None) if loc else root
        valid = sorted(getattr(model, "model_fields", {}))
        first.append(f"unknown setting(s) {sorted(names)} in {_path(prefix, loc)}; valid: {valid}")
    return "; ".join(dict.fromkeys(first + msgs))
