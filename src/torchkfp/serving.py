"""The HTTP prediction server: one FastAPI app that follows the Vertex AI custom-container contract.

Environment (set by Vertex AI; the defaults make the same container run anywhere):

- ``AIP_HTTP_PORT`` (default 8080): the port to listen on.
- ``AIP_HEALTH_ROUTE`` (default ``/health``): GET, 200 once the model is loaded.
- ``AIP_PREDICT_ROUTE`` (default ``/predict``): POST, the prediction route.
- ``AIP_STORAGE_URI``: the model artifact folder. ``gs://bucket/path`` is read from the GCS FUSE
  mount ``/gcs/bucket/path`` when one is present, else downloaded once with google-cloud-storage
  into a temporary folder; a local path is used as it is.

Request (the shape ``Endpoint.predict(instances=...)`` sends)::

    {"instances": [{"dep_hour": 7, "distance": 1065, "carrier": "UA", ..., "temp": null}, ...],
     "parameters": {"threshold": 0.5}}            # optional

- every instance is an object holding every feature of the model (GET ``/metadata`` lists them
  with an example instance); unknown fields are refused, so a typo never passes silently;
- numeric features: a JSON number, a string holding a number (``"12.5"``), or ``null`` for an
  unknown value (the training data had missing values: the model's fitted transform imputes
  them exactly as in training). NaN and infinities are refused: send ``null``;
- categorical features: a string, a number (matched as its string form: ``1`` is ``"1"``), a
  boolean, or ``null``; values not seen in training fall into the model's "unknown" bucket;
- ``parameters.threshold`` (optional, in (0, 1)) overrides the server's decision threshold.

Response: ``{"predictions": [{"probability_late": 0.27, "is_late": false}, ...]}``, one object
per instance, in order. Only ``predictions`` is returned: Vertex adds the deployed model id and
version itself (``aiplatform.Endpoint.predict`` returns them next to the predictions).

Errors never crash the server: a bad request gets a 4xx JSON body
``{"error": "<what is wrong and how to fix it>", "details": ["instances[3].distance ...", ...]}``
(``details`` lists up to 20 per-field problems). 400: not JSON, wrong shape, bad instance;
413: body larger than ``max_body_bytes`` or more than ``max_instances`` instances.

Inference is CPU-bound: it runs in worker threads (at most ``inference_threads`` at once) so the
event loop keeps answering health checks, and ``serve`` pins torch to a small number of intra-op
threads (``TORCHKFP_TORCH_THREADS``, default 1) so concurrent requests do not oversubscribe cores.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from torchkfp.artifacts import gcs_to_fuse
from torchkfp.config import Config

log = logging.getLogger("torchkfp.serving")

DEFAULT_PORT = 8080
DEFAULT_HEALTH_ROUTE = "/health"
DEFAULT_PREDICT_ROUTE = "/predict"
METADATA_ROUTE = "/metadata"
MAX_DETAILS = 20


class ServeError(RuntimeError):
    """The server cannot start: no model to serve, a bad model location, a bad setting."""


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


# ---- settings from the environment (the Vertex AI custom-container contract) -----------------
def _route(env: str, default: str) -> str:
    value = os.environ.get(env) or default
    if not value.startswith("/"):
        raise ServeError(f"{env}={value!r} must be a URL path starting with '/'")
    return value


def health_route() -> str:
    return _route("AIP_HEALTH_ROUTE", DEFAULT_HEALTH_ROUTE)


def predict_route() -> str:
    return _route("AIP_PREDICT_ROUTE", DEFAULT_PREDICT_ROUTE)


def http_port() -> int:
    raw = os.environ.get("AIP_HTTP_PORT") or str(DEFAULT_PORT)
    try:
        port = int(raw)
    except ValueError:
        raise ServeError(f"AIP_HTTP_PORT={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ServeError(f"AIP_HTTP_PORT={raw!r} is not a port number in 1..65535")
    return port


# ---- where the model comes from ----------------------------------------------------------------
def resolve_model(model: str | None, alias: str | None, cfg: Config) -> str:
    """The model folder (or gs:// URI) to serve.

    ``model`` (a path or gs:// URI) wins; else ``alias`` is looked up in the local registry
    (``cfg.deploy.registry_dir`` / ``cfg.deploy.model_name``); with neither, ``AIP_STORAGE_URI``
    when set (inside a Vertex AI serving container), else the configured ``cfg.deploy.alias``.
    """
    if model and alias:
        raise ServeError("give either --model or --alias, not both")
    if model:
        if "://" not in model and not Path(model).is_dir():
            raise ServeError(
                f"model folder {model!r} does not exist: pass the folder of a model artifact "
                "(it holds model.pt, transform.json and _SUCCESS) or a gs:// URI"
            )
        return model
    if alias is None:
        uri = os.environ.get("AIP_STORAGE_URI")
        if uri:
            return uri
        alias = cfg.deploy.alias
    if cfg.deploy.registry != "local":
        raise ServeError(
            f"resolving the alias {alias!r} works with the local registry; with "
            f"deploy.registry={cfg.deploy.registry!r} pass --model gs://... (the model's "
            "artifact URI) or set AIP_STORAGE_URI"
        )
    from torchkfp.registry import LocalRegistry, RegistryError

    reg = LocalRegistry(cfg.deploy.registry_dir, cfg.deploy.model_name)
    try:
        path = reg.resolve(alias)
    except RegistryError as e:
        raise ServeError(
            f"{e}; aliases.json points at a missing version: rerun `torchkfp run`"
        ) from None
    if path is None:
        raise ServeError(
            f"no model has the alias {alias} yet in the local registry {reg.root}: run "
            "`torchkfp run` first (or serve a model folder: --model PATH, or AIP_STORAGE_URI)"
        )
    return str(path)


def localize_model(uri: str) -> str:
    """A local folder holding the model artifact at ``uri`` (downloaded once if it is gs://)."""
    if not uri.startswith("gs://"):
        if "://" in uri:
            raise ServeError(f"model location {uri!r}: use a local folder or a gs:// URI")
        return uri
    fuse = Path(gcs_to_fuse(uri))
    if fuse.is_dir():
        return str(fuse)
    bucket_name, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket_name:
        raise ServeError(f"model location {uri!r} has no bucket: write gs://BUCKET/PATH")
    prefix = prefix.strip("/")
    from google.cloud import storage

    dest = Path(tempfile.mkdtemp(prefix="torchkfp-model-"))
    atexit.register(shutil.rmtree, dest, True)
    n = 0
    try:
        client = storage.Client()
        for blob in client.list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None):
            rel = blob.name[len(prefix) :].lstrip("/") if prefix else blob.name
            if not rel or rel.endswith("/"):
                continue  # folder placeholder objects
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(target))
            n += 1
    except Exception as e:  # auth, permission, network: google-api-core and google-auth errors
        raise ServeError(
            f"cannot download the model from {uri}: {type(e).__name__}: {e}; check the URI and "
            "that this service account can read the bucket"
        ) from None
    if n == 0:
        raise ServeError(f"no files under {uri}: is AIP_STORAGE_URI the model artifact folder?")
    log.info("downloaded %d files from %s to %s", n, uri, dest)
    return str(dest)


# ---- request validation ------------------------------------------------------------------------
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
            400, f"the request body must be a JSON object like {example}, got a "
            f"{type(payload).__name__}",
        )  # fmt: skip
    if "instances" not in payload:
        raise BadRequest(400, f"the request has no 'instances' field: send JSON like {example}")
    unknown = sorted(set(payload) - {"instances", "parameters"})
    if unknown:
        raise BadRequest(
            400, f"unknown top-level field(s) {unknown}: send only 'instances' and optionally "
            "'parameters'",
        )  # fmt: skip
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise BadRequest(
            400, f"'instances' must be a list of objects, got {type(instances).__name__}: "
            f"send JSON like {example}",
        )  # fmt: skip
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


# ---- the app -----------------------------------------------------------------------------------
def create_app(
    model_dir: str,
    *,
    max_instances: int = 1000,
    max_body_bytes: int = 5_000_000,
    threshold: float = 0.5,
    inference_threads: int | None = None,
    health_path: str | None = None,
    predict_path: str | None = None,
) -> FastAPI:
    """The prediction app for the model artifact at ``model_dir`` (a folder or gs:// URI).

    The model is loaded here, once; the routes default to ``AIP_HEALTH_ROUTE`` and
    ``AIP_PREDICT_ROUTE`` (``/health``, ``/predict``).
    """
    import numpy as np
    import pandas as pd

    from torchkfp.artifacts import ArtifactError
    from torchkfp.predictor import Predictor

    if max_instances < 1 or max_body_bytes < 1:
        raise ServeError("max_instances and max_body_bytes must be >= 1")
    if not 0 < threshold < 1:
        raise ServeError(f"threshold={threshold} must be in (0, 1)")
    local = localize_model(model_dir)
    try:
        predictor = Predictor(local)
    except (ArtifactError, OSError, ValueError, KeyError, RuntimeError) as e:
        raise ServeError(f"cannot load the model at {model_dir}: {e}") from None
    tf = predictor.transform
    validator = InstanceValidator(tf.numeric_features, tf.categorical_features)
    health_path = health_path or health_route()
    predict_path = predict_path or predict_route()
    limiter = anyio.CapacityLimiter(inference_threads or max(1, os.cpu_count() or 1))

    version_file = Path(local) / "version.json"
    info = {
        "model_uri": model_dir,
        "model_dir": local,
        "registry_version": (
            json.loads(version_file.read_text()) if version_file.is_file() else None
        ),
        "artifact": {k: v for k, v in predictor.metadata.items() if k != "training"},
        "training": {
            k: v
            for k, v in (predictor.metadata.get("training") or {}).items()
            if k not in ("history", "config")
        },
        "features": {
            "numeric": tf.numeric_features,
            "categorical": {k: {"vocabulary_size": len(v)} for k, v in tf.vocab.items()},
            "label": tf.label,
        },
        "example_instance": {
            **{k: round(s.mean, 3) for k, s in tf.numeric.items()},
            **{k: (v[0] if v else None) for k, v in tf.vocab.items()},
        },
        "request": {
            "routes": {"predict": predict_path, "health": health_path},
            "max_instances": max_instances,
            "max_body_bytes": max_body_bytes,
            "threshold": threshold,
            "response": {"predictions": [{"probability_late": "float", "is_late": "bool"}]},
        },
    }

    def predict_body(body: bytes) -> Response:
        try:
            instances, params = parse_body(body, max_instances)
            cols = validator.columns(instances)
        except BadRequest as e:
            return e.response()
        t = float(params.get("threshold", threshold))
        data: dict[str, np.ndarray] = {
            k: np.asarray(cols[k], dtype=np.float64) for k in validator.numeric
        }
        for k in validator.categorical:
            data[k] = np.empty(len(cols[k]), dtype=object)
            data[k][:] = cols[k]
        df = pd.DataFrame(data, copy=False)
        try:
            probs = predictor.predict_proba(df)
        except Exception:  # a bug, not bad input: the input was validated above
            log.exception("prediction failed")
            return JSONResponse(
                {"error": "prediction failed inside the server; see the server log"},
                status_code=500,
            )
        preds = [{"probability_late": p, "is_late": p >= t} for p in probs.tolist()]
        return Response(
            json.dumps({"predictions": preds}, allow_nan=False),
            media_type="application/json",
        )

    app = FastAPI(
        title="torchkfp prediction server",
        description="Vertex AI custom-container prediction server for a torchkfp model.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.predictor = predictor
    app.state.info = info

    @app.get(health_path)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(METADATA_ROUTE)
    async def metadata() -> dict[str, Any]:
        return info

    @app.post(predict_path)
    async def predict(request: Request) -> Response:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            return BadRequest(
                413,
                f"the request body is {int(length)} bytes, more than the limit of "
                f"{max_body_bytes}: send fewer instances per request",
            ).response()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return BadRequest(
                    413,
                    f"the request body is more than the limit of {max_body_bytes} bytes: send "
                    "fewer instances per request",
                ).response()
            chunks.append(chunk)
        body = b"".join(chunks)
        return await anyio.to_thread.run_sync(predict_body, body, limiter=limiter)

    return app


def serve(
    model_dir: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    access_log: bool = False,
    **app_kwargs: Any,
) -> None:
    """Load the model and serve it until SIGTERM/SIGINT (port None: AIP_HTTP_PORT or 8080)."""
    import torch
    import uvicorn

    threads = os.environ.get("TORCHKFP_TORCH_THREADS", "1")
    if not threads.isdigit() or int(threads) < 1:
        raise ServeError(f"TORCHKFP_TORCH_THREADS={threads!r} must be a positive integer")
    torch.set_num_threads(int(threads))
    port = http_port() if port is None else port
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    app = create_app(model_dir, **app_kwargs)
    info = app.state.info
    log.info(
        "serving %s on http://%s:%d (predict: POST %s, health: GET %s, metadata: GET %s)",
        model_dir,
        host,
        port,
        info["request"]["routes"]["predict"],
        info["request"]["routes"]["health"],
        METADATA_ROUTE,
    )
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")
