"""Request parsing and validation: a bad request becomes a 4xx JSON error naming the problem
and the fix, never a 500 (the rules are in the package docstring, :mod:`torchkfp.serving`)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from fastapi.responses import Response

METADATA_ROUTE = "/metadata"
MAX_DETAILS = 20
MAX_NAMES = 10
"""Client-chosen names (unknown fields, duplicate keys) shown in one message, at most."""
MAX_STANDARD_DEVIATIONS = 1e6
"""A numeric value must lie within this many training standard deviations of the training
mean: beyond it the standardized input is a unit or typing error, and far enough beyond it
overflows float32 (the model's input type) to infinity."""
MAX_INT_DIGITS = 4000
"""JSON integers with more digits are refused while parsing (below Python's own 4300-digit
limit, whose error message is about Python; no float holds such a number anyway)."""

# A string holding a number: plain ASCII decimal notation, as JSON or a CSV file writes it.
# Python's float() would also take " 12 ", "1_000", "nan", "Infinity" and non-ASCII digits.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SURROGATE = re.compile("[\ud800-\udfff]")
EXAMPLE = '{"instances": [{"feature": value, ...}, ...]}'
_ANY = (-math.inf, math.inf)


def json_bytes(body: Any) -> bytes:
    """``body`` as UTF-8 JSON; never NaN/Infinity (ValueError), never an encoding error."""
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace")


class BadRequest(Exception):
    """A request the server refuses: ``status`` (4xx, or 500 for a model that gives no finite
    prediction) and a message that names the problem and the fix."""

    def __init__(
        self,
        status: int,
        message: str,
        details: list[str] | None = None,
        *,
        close: bool = False,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []
        self.headers = dict(headers or {})
        if close:  # the body was not read: do not parse what is left of it as a new request
            self.headers["Connection"] = "close"

    def response(self) -> Response:
        body: dict[str, Any] = {"error": self.message}
        if self.details:
            body["details"] = self.details
        return Response(
            json_bytes(body),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )


def valid_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate (JSON ``"\\ud800"``): not Unicode text, and
    it cannot be encoded as UTF-8."""
    return text.isascii() or _SURROGATE.search(text) is None


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def quote_name(name: str) -> str:
    """A client-chosen name for a message: quoted, escaped, shortened."""
    text = repr(name)  # repr escapes surrogates and control characters
    return text if len(text) <= 42 else f"{text[:37]}...' ({len(name)} characters)"


def describe_names(names: Iterable[str]) -> str:
    """Client-chosen names for a message: quoted, shortened, at most ``MAX_NAMES``."""
    names = sorted(names)
    shown = ", ".join(quote_name(n) for n in names[:MAX_NAMES])
    more = f", and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else ""
    return f"[{shown}{more}]"


class InstanceValidator:
    """Checks instances against the model's features and turns them into columns.

    ``ranges``: numeric feature -> (training mean, training std); a value further than
    ``MAX_STANDARD_DEVIATIONS`` stds from the mean is refused."""

    def __init__(
        self,
        numeric: list[str],
        categorical: list[str],
        ranges: dict[str, tuple[float, float]] | None = None,
    ):
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.features = frozenset(self.numeric + self.categorical)
        self.ranges: dict[str, tuple[float, float]] = {}
        for name, (mean, std) in (ranges or {}).items():
            half = MAX_STANDARD_DEVIATIONS * abs(std)
            if half > 0 and math.isfinite(mean + half):  # else: no stats to judge by
                self.ranges[name] = (mean - half, mean + half)

    def columns(self, instances: list[Any]) -> dict[str, list[Any]]:
        cols: dict[str, list[Any]] = {name: [] for name in self.numeric + self.categorical}
        problems: list[str] = []
        n_bad = 0
        more = ""
        for i, inst in enumerate(instances):
            before = len(problems)
            self._check_instance(i, inst, cols, problems)
            n_bad += len(problems) > before
            if len(problems) >= MAX_DETAILS:
                problems = problems[:MAX_DETAILS]
                more = " or more" if i + 1 < len(instances) else ""
                break
        if problems:
            raise BadRequest(
                400,
                f"{n_bad}{more} instance(s) do not match the model's features ({problems[0]}); see "
                f"'details' for every problem found and GET "
                f"{METADATA_ROUTE} for the feature list and an example instance",
                problems,
            )
        return cols

    def _check_instance(
        self, i: int, inst: Any, cols: dict[str, list[Any]], problems: list[str]
    ) -> None:
        if not isinstance(inst, dict):
            problems.append(
                f"instances[{i}] must be an object mapping feature name to value, "
                f"got {type(inst).__name__} {_describe(inst)}"
            )
            return
        keys = inst.keys()
        if len(keys) != len(self.features) or keys != self.features:
            missing = sorted(self.features - keys)
            unknown = set(keys) - self.features
            if missing:
                problems.append(
                    f"instances[{i}] is missing feature(s) {missing}: send every feature, "
                    "null for an unknown value"
                )
            if unknown:
                problems.append(
                    f"instances[{i}] has unknown field(s) {describe_names(unknown)}: the "
                    f"model's features are {sorted(self.features)}"
                )
            if missing or unknown:
                return
        ranges = self.ranges
        for name in self.numeric:
            v = inst[name]
            if v is None:
                cols[name].append(math.nan)
                continue
            if type(v) is float:  # the common case, checked inline: finite and in range
                lo, hi = ranges.get(name, _ANY)
                if lo <= v <= hi and v - v == 0.0:
                    cols[name].append(v)
                    continue
            x = self._number(i, name, v, problems)
            cols[name].append(math.nan if x is None else x)
        for name in self.categorical:
            v = inst[name]
            if v is None:
                cols[name].append(v)
            elif isinstance(v, str):
                if not valid_unicode(v):
                    problems.append(
                        f"instances[{i}].{name} is not valid Unicode text (it holds a lone "
                        f"surrogate such as the escape \\ud800), got {_describe(v)}: send "
                        "UTF-8 text"
                    )
                    v = None
                cols[name].append(v)
            elif (
                isinstance(v, bool)
                or isinstance(v, int)
                or (isinstance(v, float) and math.isfinite(v))
            ):
                # keyed by the fitted transform (torchkfp.transform.category_key), as in
                # training: 1, 1.0 and "1" are one category, true is "True"
                cols[name].append(v)
            else:
                problems.append(
                    f"instances[{i}].{name} must be a string, a number or null (categorical "
                    f"feature), got {type(v).__name__} {_describe(v)}"
                )
                cols[name].append(None)

    def _number(self, i: int, name: str, v: Any, problems: list[str]) -> float | None:
        """The float value of a numeric feature, or None after adding the problem."""
        x: float | None = None
        if isinstance(v, str):
            if _NUMBER.fullmatch(v):
                x = float(v)
            else:
                problems.append(
                    f"instances[{i}].{name} must be a finite number or null (numeric feature), "
                    f"got {_describe(v)}: a string must hold a plain decimal number like "
                    '"12.5" or "-3e2" (no spaces, "_" or "," separators, NaN or Infinity; '
                    "send null for an unknown value)"
                )
                return None
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                x = float(v)
            except OverflowError:  # an int beyond float range
                x = None
        if x is None or not math.isfinite(x):
            problems.append(
                f"instances[{i}].{name} must be a finite number or null (numeric feature), "
                f"got {_describe(v)}"
            )
            return None
        lo, hi = self.ranges.get(name, (-math.inf, math.inf))
        if not lo <= x <= hi:
            problems.append(
                f"instances[{i}].{name} is out of range, got {_describe(v)}: a value must lie "
                f"within {MAX_STANDARD_DEVIATIONS:g} training standard deviations of the "
                f"training mean ({lo:.6g} to {hi:.6g}); check its units"
            )
            return None
        return x


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json ``object_pairs_hook``: refuses duplicate keys and keys that are not Unicode."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dups: set[str] = set()
        for k, _ in pairs:
            (dups if k in seen else seen).add(k)
        raise BadRequest(
            400,
            f"duplicate key(s) {describe_names(dups)} in a JSON object: send each field once "
            "(JSON parsers disagree on which value wins)",
        )
    for k in obj:
        if not valid_unicode(k):
            raise BadRequest(
                400,
                f"the field name {quote_name(k)} is not valid Unicode text (it holds a lone "
                "surrogate such as the escape \\ud800): send UTF-8 text",
            )
    return obj


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadRequest(
            400,
            f"the request holds an integer with {len(text.lstrip('-'))} digits: numbers must "
            "be finite 64-bit floats (at most about 1.8e308)",
        )
    return int(text)


def parse_body(body: bytes, max_instances: int) -> tuple[list[Any], dict[str, Any]]:
    """The ``instances`` list and the ``parameters`` object of a request body."""
    if not body.strip():
        raise BadRequest(400, f"the request body is empty: send JSON like {EXAMPLE}")
    try:
        text = body.decode("utf-8-sig")  # a byte order mark is allowed, and dropped
    except UnicodeDecodeError:
        raise BadRequest(400, "the request body is not UTF-8 text: send UTF-8 JSON") from None
    try:
        payload = json.loads(text, object_pairs_hook=_object, parse_int=_int)
    except RecursionError:
        raise BadRequest(
            400, "the request body is nested too deeply: instances are flat objects"
        ) from None
    except ValueError as e:
        raise BadRequest(
            400, f"the request body is not valid JSON ({e}): send JSON like {EXAMPLE}"
        ) from None
    if not isinstance(payload, dict):
        raise BadRequest(
            400,
            f"the request body must be a JSON object like {EXAMPLE}, got a "
            f"{type(payload).__name__}",
        )
    if "instances" not in payload:
        raise BadRequest(400, f"the request has no 'instances' field: send JSON like {EXAMPLE}")
    unknown = set(payload) - {"instances", "parameters"}
    if unknown:
        raise BadRequest(
            400,
            f"unknown top-level field(s) {describe_names(unknown)}: send only 'instances' and "
            "optionally 'parameters'",
        )
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise BadRequest(
            400,
            f"'instances' must be a list of objects, got {type(instances).__name__}: "
            f"send JSON like {EXAMPLE}",
        )
    if not instances:
        raise BadRequest(400, "'instances' is an empty list: send at least one instance")
    if len(instances) > max_instances:
        raise BadRequest(
            413,
            f"too many instances: {len(instances)} > {max_instances} per request; split them "
            f"into requests of at most {max_instances} instances",
        )
    params = payload.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest(
            400,
            f"'parameters' must be an object like {{\"threshold\": 0.5}}, got "
            f"{type(params).__name__}",
        )
    unknown = set(params) - {"threshold"}
    if unknown:
        raise BadRequest(
            400,
            f"unknown parameter(s) {describe_names(unknown)}: the one parameter is 'threshold'",
        )
    if "threshold" in params:
        t = params["threshold"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
            raise BadRequest(
                400,
                f"parameters.threshold must be a number in (0, 1), got {_describe(t)}: "
                "send a JSON number strictly between 0 and 1",
            )
    return instances, params
