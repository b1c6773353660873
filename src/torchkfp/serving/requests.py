"""Request parsing and validation: a bad request becomes a 4xx JSON error naming the problem
and the fix, never a 500."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.responses import JSONResponse

METADATA_ROUTE = "/metadata"
MAX_DETAILS = 20


class BadRequest(Exception):
    def __init__(self, status: int, message: str, details: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message}
        if self.details:
            body["details"] = self.details
        return JSONResponse(body, status_code=self.status)


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class InstanceValidator:
    """Checks instances against the model's features and turns them into columns."""

    def __init__(self, numeric: list[str], categorical: list[str]):
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.features = frozenset(self.numeric + self.categorical)

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
            unknown = sorted(set(keys) - self.features)
            if missing:
                problems.append(
                    f"instances[{i}] is missing feature(s) {missing}: send every feature, "
                    "null for an unknown value"
                )
            if unknown:
                problems.append(
                    f"instances[{i}] has unknown field(s) {unknown}: the model's features are "
                    f"{sorted(self.features)}"
                )
            if missing or unknown:
                return
        for name in self.numeric:
            v = inst[name]
            if v is None:
                cols[name].append(math.nan)
                continue
            x: float | None = None
            if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                try:
                    x = float(v)
                except (ValueError, OverflowError):  # not a number; an int beyond float range
                    x = None
            if x is None or not math.isfinite(x):
                problems.append(
                    f"instances[{i}].{name} must be a finite number or null (numeric feature), "
                    f"got {_describe(v)}"
                )
                cols[name].append(math.nan)
            else:
                cols[name].append(x)
        for name in self.categorical:
            v = inst[name]
            if v is None or isinstance(v, str):
                cols[name].append(v)
            elif isinstance(v, bool):
                cols[name].append(str(v))
            elif isinstance(v, int) or (isinstance(v, float) and math.isfinite(v)):
                cols[name].append(str(v))
            else:
                problems.append(
                    f"instances[{i}].{name} must be a string, a number or null (categorical "
                    f"feature), got {type(v).__name__} {_describe(v)}"
                )
                cols[name].append(None)


def parse_body(body: bytes, max_instances: int) -> tuple[list[Any], dict[str, Any]]:
    """The ``instances`` list and the ``parameters`` object of a request body."""
    example = '{"instances": [{"feature": value, ...}, ...]}'
    if not body.strip():
        raise BadRequest(400, f"the request body is empty: send JSON like {example}")
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest(400, "the request body is not UTF-8 text: send UTF-8 JSON") from None
    except RecursionError:
        raise BadRequest(400, "the request body is nested too deeply") from None
    except ValueError as e:
        raise BadRequest(
            400, f"the request body is not valid JSON ({e}): send JSON like {example}"
        ) from None
    if not isinstance(payload, dict):
        raise BadRequest(
            400,
            f"the request body must be a JSON object like {example}, got a "
            f"{type(payload).__name__}",
        )
    if "instances" not in payload:
        raise BadRequest(400, f"the request has no 'instances' field: send JSON like {example}")
    unknown = sorted(set(payload) - {"instances", "parameters"})
    if unknown:
        raise BadRequest(
            400,
            f"unknown top-level field(s) {unknown}: send only 'instances' and optionally "
            "'parameters'",
        )
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise BadRequest(
            400,
            f"'instances' must be a list of objects, got {type(instances).__name__}: "
            f"send JSON like {example}",
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
        raise BadRequest(400, f"'parameters' must be an object, got {type(params).__name__}")
    unknown = sorted(set(params) - {"threshold"})
    if unknown:
        raise BadRequest(400, f"unknown parameter(s) {unknown}: the one parameter is 'threshold'")
    if "threshold" in params:
        t = params["threshold"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
            raise BadRequest(
                400, f"parameters.threshold must be a number in (0, 1), got {_describe(t)}"
            )
    return instances, params
