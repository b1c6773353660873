"""The HTTP app (FastAPI) and ``serve``; routes and port from the Vertex AI custom-container
environment (``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``, ``AIP_PREDICT_ROUTE``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from torchkfp.serving.location import ServeError, localize_model
from torchkfp.serving.requests import (
    EXAMPLE,
    METADATA_ROUTE,
    BadRequest,
    InstanceValidator,
    json_bytes,
    parse_body,
    quote_name,
)

log = logging.getLogger("torchkfp.serving")

DEFAULT_PORT = 8080
DEFAULT_HEALTH_ROUTE = "/health"
DEFAULT_PREDICT_ROUTE = "/predict"
DEFAULT_MAX_INSTANCES = 1000
DEFAULT_MAX_BODY_BYTES = 5_000_000
DEFAULT_BODY_TIMEOUT_S = 30.0
"""Seconds to receive a whole request body, from the first read: a client that stalls gets 408."""
DEFAULT_KEEP_ALIVE_S = 15.0
"""Seconds an idle keep-alive connection stays open (uvicorn ``timeout_keep_alive``)."""
DEFAULT_MAX_CONNECTIONS = 512
"""Open connections (or requests in progress) at most; above it uvicorn answers 503 and closes
the connection (uvicorn ``limit_concurrency``)."""
MAX_HEAD_BYTES = 64 * 1024
"""A request head (request line and headers) still incomplete past this many bytes gets a plain
400 from uvicorn's h11 parser and the connection closed (httptools buffers any size: hence h11)."""
LOAD_FAILURE_EXIT_ENV = "TORCHKFP_LOAD_FAILURE_EXIT_S"
DEFAULT_LOAD_FAILURE_EXIT_S = 10.0
"""Seconds ``serve`` keeps answering 503 (with the load error) after the model failed to load,
before it exits with status 2 (``TORCHKFP_LOAD_FAILURE_EXIT_S``; 0: at once)."""
RETRY_AFTER_S = 5
"""``Retry-After`` of a 503 answered while the model is loading."""
JSON_MEDIA_TYPES = ("application/json",)
RUNTIME_ENV = "TORCHKFP_SERVING_RUNTIME"
"""``torch`` (default) or ``onnx``: what runs the model (``torchkfp serve --runtime`` overrides)."""
THREADS_ENV = "TORCHKFP_TORCH_THREADS"
"""Intra-op threads of the model's runtime (torch or ONNX Runtime), default 1."""
RUNTIMES = ("torch", "onnx")
INLINE_BODY_BYTES = 16 * 1024
"""A request body up to this size is answered on the event loop (parse, validate, predict: a
fraction of a millisecond for the few rows it can hold); a larger one in a worker thread, so
the loop keeps answering health checks meanwhile."""
_METHOD_ORDER = {m: i for i, m in enumerate(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])}


def _route(env: str, default: str) -> str:
    value = os.environ.get(env) or default
    if not value.startswith("/"):
        raise ServeError(f"{env}={value!r} must be a URL path starting with '/'")
    return value


def health_route() -> str:
    return _route("AIP_HEALTH_ROUTE", DEFAULT_HEALTH_ROUTE)


def predict_route() -> str:
    return _route("AIP_PREDICT_ROUTE", DEFAULT_PREDICT_ROUTE)


def serving_runtime(value: str | None = None) -> str:
    """``value``, else ``TORCHKFP_SERVING_RUNTIME``, else ``torch``; ServeError if not one of
    :data:`RUNTIMES`."""
    where = "--runtime" if value else RUNTIME_ENV
    raw = value or os.environ.get(RUNTIME_ENV) or "torch"
    if raw not in RUNTIMES:
        raise ServeError(
            f"{where}={raw!r} is not a serving runtime: use torch (PyTorch) or onnx (ONNX "
            "Runtime, for a model artifact that carries model.onnx)"
        )
    return raw


def runtime_threads() -> int:
    raw = os.environ.get(THREADS_ENV, "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ServeError(f"{THREADS_ENV}={raw!r} must be a positive integer")
    return int(raw)


def http_port() -> int:
    raw = os.environ.get("AIP_HTTP_PORT") or str(DEFAULT_PORT)
    try:
        port = int(raw)
    except ValueError:
        raise ServeError(f"AIP_HTTP_PORT={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ServeError(f"AIP_HTTP_PORT={raw!r} is not a port number in 1..65535")
    return port


def predictions(predictor: Any, out: Any, threshold: float) -> list[dict[str, Any]]:
    """One response object per instance, by task kind: binary ``{"label", "probability"}``
    (the positive class's probability), multi-class ``{"label", "probabilities": {class:
    p}}``, regression ``{"value"}``."""
    if predictor.task == "regression":
        return [{"value": v} for v in out.tolist()]
    labels = predictor.labels(out, threshold)
    if predictor.task == "binary":
        return [{"label": c, "probability": p} for c, p in zip(labels, out.tolist(), strict=True)]
    names = [str(c) for c in predictor.classes]
    return [
        {"label": c, "probabilities": dict(zip(names, row, strict=True))}
        for c, row in zip(labels, out.tolist(), strict=True)
    ]


def response_shape(predictor: Any) -> dict[str, Any]:
    """What one prediction looks like, for GET /metadata."""
    if predictor.task == "regression":
        return {"value": "float"}
    if predictor.task == "binary":
        c = predictor.classes
        return {"label": f"{c[0]!r} or {c[1]!r}", "probability": f"float, P(label = {c[1]!r})"}
    return {
        "label": "one of classes",
        "probabilities": {str(c): "float" for c in predictor.classes},
    }


def _without_paths(value: Any) -> Any:
    """``value`` without filesystem paths and storage URIs: GET /metadata is unauthenticated.

    Drops keys that name a location (``source``, ``path``, ``*_dir``, ``*_uri``, ...) and any
    string that looks like a path (``/x``, ``~/x``, ``./x``, ``C:\\x``) or a URI (``gs://x``);
    NaN and infinities become null."""
    if isinstance(value, dict):
        return {
            k: _without_paths(v)
            for k, v in value.items()
            if not _PATH_KEY.search(str(k)) and not _looks_like_path(v)
        }
    if isinstance(value, list):
        return [_without_paths(v) for v in value if not _looks_like_path(v)]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


_PATH_KEY = re.compile(r"(?:^|_)(?:source|path|paths|dir|dirs|uri|uris|url|location|file)$", re.I)
_PATH_VALUE = re.compile(r"^(?:/|~|\.{1,2}[/\\]|[A-Za-z]:[/\\]|\\\\)|://")


_ERROR_PATH = re.compile(
    r"""(?<=['"])(?:/|~/|[A-Za-z]:\\)[^'"]*(?=['"])|\b[a-z][a-z0-9+.-]*://[^\s'"]*[^\s'".,:;)]"""
)
"""Paths (quoted, as error messages write them) and URIs in an error message."""


def _looks_like_path(value: Any) -> bool:
    return isinstance(value, str) and _PATH_VALUE.search(value) is not None


def _media_type_problem(headers: Any) -> BadRequest | None:
    """415 for a body the server cannot read: compressed, or not declared as UTF-8 JSON. No
    Content-Type at all is read as JSON (curl --data-binary, many HTTP libraries)."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        return BadRequest(
            415,
            f"Content-Encoding {quote_name(encoding)} is not supported: send the body "
            "uncompressed (Content-Encoding: identity, or no Content-Encoding header)",
            close=True,
        )
    ctype = headers.get("content-type")
    if ctype is None:
        return None
    media, *params = (p.strip().lower() for p in ctype.split(";"))
    fix = "send the body as UTF-8 JSON with Content-Type: application/json"
    if media not in JSON_MEDIA_TYPES and not media.endswith("+json"):
        return BadRequest(415, f"Content-Type {quote_name(ctype)} is not JSON: {fix}", close=True)
    for param in params:
        key, _, val = param.partition("=")
        if key.strip() == "charset" and val.strip().strip('"') not in ("utf-8", "utf8"):
            return BadRequest(
                415, f"Content-Type {quote_name(ctype)}: JSON must be UTF-8; {fix}", close=True
            )
    return None


@dataclass
class LoadedModel:
    """What the routes need of a loaded model."""

    predictor: Any
    validator: InstanceValidator
    info: dict[str, Any]
    metadata_body: bytes


def load_model(
    model_dir: str,
    *,
    max_instances: int,
    max_body_bytes: int,
    body_timeout_s: float,
    threshold: float,
    health_path: str,
    predict_path: str,
    runtime: str = "torch",
    threads: int | None = None,
) -> LoadedModel:
    """Localize (download) and load the model artifact at ``model_dir`` on ``runtime``
    (``torch`` or ``onnx``; ``threads``: ONNX Runtime's intra-op threads), and describe it
    for GET /metadata. ServeError when it cannot be loaded (on ``onnx``: also when the
    artifact carries no ONNX export)."""
    from torchkfp.artifacts import ArtifactError
    from torchkfp.predictor import Predictor

    local = localize_model(model_dir)
    try:
        predictor = Predictor(local, runtime, threads=threads)
    except (ArtifactError, OSError, ValueError, KeyError, RuntimeError) as e:
        raise ServeError(f"cannot load the model at {model_dir}: {e}") from None
    tf = predictor.transform
    validator = InstanceValidator(
        tf.numeric_features,
        tf.categorical_features,
        {k: (s.mean, s.std) for k, s in tf.numeric.items()},
    )
    version_file = Path(local) / "version.json"
    info = {
        "registry_version": _without_paths(
            json.loads(version_file.read_text()) if version_file.is_file() else None
        ),
        "artifact": _without_paths(
            {k: v for k, v in predictor.metadata.items() if k != "training"}
        ),
        "training": _without_paths(
            {
                k: v
                for k, v in (predictor.metadata.get("training") or {}).items()
                if k not in ("history", "config")
            }
        ),
        "features": {
            "numeric": tf.numeric_features,
            "categorical": {k: {"vocabulary_size": len(v)} for k, v in tf.vocab.items()},
            "label": tf.label,
        },
        "task": predictor.task,
        "classes": predictor.classes or None,
        "runtime": runtime,
        "example_instance": {
            **{k: round(s.mean, 3) for k, s in tf.numeric.items()},
            **{k: (v[0] if v else None) for k, v in tf.vocab.items()},
        },
        "request": {
            "routes": {"predict": predict_path, "health": health_path},
            "max_instances": max_instances,
            "max_body_bytes": max_body_bytes,
            "body_timeout_s": body_timeout_s,
            "threshold": threshold if predictor.task == "binary" else None,
            "numeric_range": {k: list(v) for k, v in validator.ranges.items()},
            "response": {"predictions": [response_shape(predictor)]},
        },
    }
    return LoadedModel(predictor, validator, info, json_bytes(info))


class ModelState:
    """The served model's state: ``loading``, then ``ready`` (``loaded`` set) or ``failed``
    (``error`` set). :meth:`load` runs once, inline or in a background thread."""

    LOADING, READY, FAILED = "loading", "ready", "failed"

    def __init__(self, model_dir: str, loader: Callable[[], LoadedModel]):
        self.model_dir = model_dir
        self._loader = loader
        self.status = self.LOADING
        self.loaded: LoadedModel | None = None
        self.error: str | None = None
        self.started = time.monotonic()
        self.seconds: float | None = None
        self.on_ready: Callable[[LoadedModel], None] | None = None
        self.on_failure: Callable[[str], None] | None = None
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        """Load the model; never raises: a failure is logged and kept in ``error``."""
        log.info("loading the model from %s", self.model_dir)
        try:
            loaded = self._loader()
        except ServeError as e:
            self._failed(str(e))
            return
        except Exception as e:  # a bug, or a fault the loader does not name: still reported
            log.exception("loading the model failed")
            self._failed(f"cannot load the model at {self.model_dir}: {type(e).__name__}: {e}")
            return
        self.loaded = loaded
        self.seconds = time.monotonic() - self.started
        if self.on_ready is not None:
            self.on_ready(loaded)
        self.status = self.READY  # last: the routes answer once everything above is set
        log.info("model loaded in %.1f s: ready", self.seconds)

    def _failed(self, error: str) -> None:
        self.error = error
        self.seconds = time.monotonic() - self.started
        self.status = self.FAILED
        log.error("%s", error)
        if self.on_failure is not None:
            self.on_failure(error)

    def start(self) -> None:
        """Load in a background thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.load, name="load-model", daemon=True)
            self._thread.start()

    def public_error(self) -> str:
        """``error`` without the model's location or other paths (the health route is
        unauthenticated): they read ``<model>`` and ``<path>``; the log has them."""
        text = self.error or ""
        for where in sorted({self.model_dir, self.model_dir.rstrip("/")}, key=len, reverse=True):
            if where:
                text = text.replace(where, "<model>")
        return _ERROR_PATH.sub("<path>", text)

    def unavailable(self) -> BadRequest:
        """The 503 a route answers while the model is not ready."""
        if self.status == self.FAILED:
            return BadRequest(
                503,
                f"the model failed to load, so this server cannot answer: {self.public_error()}",
                close=True,
            )
        waited = time.monotonic() - self.started
        return BadRequest(
            503,
            f"the model is still loading ({waited:.0f} s so far): retry in a few seconds; "
            "the health route answers 200 once it is ready",
            close=True,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


def create_app(
    model_dir: str,
    *,
    max_instances: int = DEFAULT_MAX_INSTANCES,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    threshold: float = 0.5,
    inference_threads: int | None = None,
    health_path: str | None = None,
    predict_path: str | None = None,
    background: bool = False,
    runtime: str = "torch",
    runtime_threads: int | None = None,
) -> FastAPI:
    """The prediction app for the model artifact at ``model_dir`` (a folder or gs:// URI).

    ``background=False``: the model is loaded here, once (ServeError if it cannot be);
    ``background=True`` (``serve``): the app's startup loads it in a thread, and until then
    the health route, ``/metadata`` and the predict route answer 503 (``app.state.model``: the
    :class:`ModelState`). The routes default to ``AIP_HEALTH_ROUTE`` and ``AIP_PREDICT_ROUTE``
    (``/health``, ``/predict``). ``runtime``: ``torch`` or ``onnx`` (ONNX Runtime with
    ``runtime_threads`` intra-op threads; None: its default).
    """
    import numpy as np

    if max_instances < 1 or max_body_bytes < 1:
        raise ServeError("max_instances and max_body_bytes must be >= 1")
    if not body_timeout_s > 0:
        raise ServeError(f"body_timeout_s={body_timeout_s} must be > 0")
    if not 0 < threshold < 1:
        raise ServeError(f"threshold={threshold} must be in (0, 1)")
    runtime = serving_runtime(runtime)
    health_path = health_path or health_route()
    predict_path = predict_path or predict_route()
    limiter = anyio.CapacityLimiter(inference_threads or max(1, os.cpu_count() or 1))

    def loader() -> LoadedModel:
        return load_model(
            model_dir,
            max_instances=max_instances,
            max_body_bytes=max_body_bytes,
            body_timeout_s=body_timeout_s,
            threshold=threshold,
            health_path=health_path,
            predict_path=predict_path,
            runtime=runtime,
            threads=runtime_threads,
        )

    state = ModelState(model_dir, loader)
    routes = f"POST {predict_path}, GET {health_path}, GET {METADATA_ROUTE}"

    def infer(body: bytes) -> Response:
        loaded = state.loaded
        assert loaded is not None  # the route answers 503 until the model is ready
        predictor, validator = loaded.predictor, loaded.validator
        instances, params = parse_body(body, max_instances)
        cols = validator.columns(instances)
        t = float(params.get("threshold", threshold))
        out = predictor.predict_columns(cols, len(instances))
        finite = np.isfinite(out)
        if not finite.all():
            bad = np.flatnonzero(~finite.reshape(len(out), -1).all(axis=1)).tolist()
            log.error("the model gave a non-finite prediction for instance(s) %s", bad[:20])
            raise BadRequest(
                500,
                f"the model gave no finite prediction for instance(s) {bad[:20]}: the inputs "
                "are within the accepted range, so this is a fault of the model, not of the "
                "request (the server never answers NaN or infinity); see the server log",
            )
        return Response(
            json_bytes({"predictions": predictions(predictor, out, t)}),
            media_type="application/json",
        )

    def predict_body(body: bytes) -> Response:
        try:
            return infer(body)
        except BadRequest as e:
            return e.response()
        except Exception:  # a bug, not bad input: the input was validated
            log.exception("prediction failed")
            return BadRequest(
                500, "prediction failed inside the server; see the server log"
            ).response()

    async def read_body(request: Request) -> bytes:
        """The whole body, at most ``max_body_bytes``, within ``body_timeout_s``."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            raise BadRequest(
                413,
                f"the request body is {int(length)} bytes, more than the limit of "
                f"{max_body_bytes}: send fewer instances per request",
                close=True,
            )
        chunks: list[bytes] = []
        size = 0
        receive = request.receive  # the ASGI messages themselves: no stream wrapper
        try:
            async with _deadline(body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientDisconnect()
                    if message["type"] != "http.request":
                        continue
                    chunk = message.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > max_body_bytes:
                            raise BadRequest(
                                413,
                                f"the request body is more than the limit of {max_body_bytes} "
                                "bytes: send fewer instances per request",
                                close=True,
                            )
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise BadRequest(
                408,
                f"the request body did not arrive within {body_timeout_s:g} s ({size} bytes "
                "received): send the whole body at once, and a Content-Length that matches it",
                close=True,
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def allowed(methods: str) -> Response:
        return Response(status_code=204, headers={"Allow": methods})

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()  # loads in a thread: the socket is bound and health answers meanwhile
        yield

    app = FastAPI(
        title="torchkfp prediction server",
        description="Vertex AI custom-container prediction server for a torchkfp model.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan if background else None,
    )
    app.state.model = state

    def ready(loaded: LoadedModel) -> None:
        app.state.predictor = loaded.predictor
        app.state.info = loaded.info

    state.on_ready = ready
    if not background:
        state.load()
        if state.status != ModelState.READY:
            raise ServeError(state.error or f"cannot load the model at {model_dir}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        path = quote_name(request.url.path)
        headers = exc.headers
        if exc.status_code == 404:
            message = f"no route {path}: the routes are {routes}"
        elif exc.status_code == 405:
            methods = (exc.headers or {}).get("Allow", "").replace(" ", "").split(",")
            allow = ", ".join(sorted(methods, key=lambda m: (_METHOD_ORDER.get(m, 99), m)))
            headers = {**(exc.headers or {}), "Allow": allow}
            message = f"{quote_name(request.method)} is not allowed on {path} (allowed: {allow})"
            if request.url.path == predict_path:
                message += f": POST JSON like {EXAMPLE} to {predict_path}"
        else:
            message = str(exc.detail)
        return BadRequest(exc.status_code, message, headers=headers).response()

    # plain Starlette routes (no FastAPI dependency solving: every route takes the Request)
    async def health(request: Request) -> Response:
        """200 ``{"status": "ok"}`` once the model is loaded; before, 503 ``{"status":
        "loading", "seconds": s}``; after a failed load, 503 ``{"status": "failed", "error":
        "..."}``."""
        if request.method == "OPTIONS":
            return allowed("GET, HEAD, OPTIONS")
        status = state.status
        if status == ModelState.READY:
            return Response(json_bytes({"status": "ok"}), media_type="application/json")
        if status == ModelState.FAILED:
            body: dict[str, Any] = {"status": "failed", "error": state.public_error()}
            headers = {}
        else:
            body = {"status": "loading", "seconds": round(time.monotonic() - state.started, 1)}
            headers = {"Retry-After": str(RETRY_AFTER_S)}
        return Response(
            json_bytes(body), status_code=503, media_type="application/json", headers=headers
        )

    async def metadata(request: Request) -> Response:
        if request.method == "OPTIONS":
            return allowed("GET, HEAD, OPTIONS")
        loaded = state.loaded
        if loaded is None or state.status != ModelState.READY:
            return state.unavailable().response()
        return Response(loaded.metadata_body, media_type="application/json")

    async def predict(request: Request) -> Response:
        if request.method == "OPTIONS":
            return allowed("POST, OPTIONS")
        if state.status != ModelState.READY:
            return state.unavailable().response()
        try:
            problem = _media_type_problem(request.headers)
            if problem is not None:
                raise problem
            body = await read_body(request)
        except BadRequest as e:
            return e.response()
        except ClientDisconnect:
            client = request.client
            log.info(
                "client %s hung up before sending the whole request body; nothing to answer",
                f"{client.host}:{client.port}" if client else "?",
            )
            return Response(status_code=400)  # nobody is listening
        if len(body) <= INLINE_BODY_BYTES:  # a few rows: a thread hand-off would cost more
            return predict_body(body)
        return await anyio.to_thread.run_sync(predict_body, body, limiter=limiter)

    app.add_route(health_path, health, methods=["GET", "HEAD", "OPTIONS"])
    app.add_route(METADATA_ROUTE, metadata, methods=["GET", "HEAD", "OPTIONS"])
    app.add_route(predict_path, predict, methods=["POST", "OPTIONS"])
    return app


def _deadline(seconds: float) -> contextlib.AbstractAsyncContextManager[Any]:
    """TimeoutError unless the block finishes within ``seconds`` (asyncio's own timeout where
    there is one: a few microseconds cheaper a request than anyio's cancel scope)."""
    timeout = getattr(asyncio, "timeout", None)  # Python 3.11+
    return timeout(seconds) if timeout is not None else _anyio_deadline(seconds)


@contextlib.asynccontextmanager
async def _anyio_deadline(seconds: float) -> AsyncIterator[None]:
    with anyio.fail_after(seconds):
        yield


def load_failure_exit_s() -> float:
    raw = os.environ.get(LOAD_FAILURE_EXIT_ENV)
    if raw is None or raw == "":
        return DEFAULT_LOAD_FAILURE_EXIT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ServeError(f"{LOAD_FAILURE_EXIT_ENV}={raw!r} must be a number of seconds >= 0")
    return value


def serve(
    model_dir: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    access_log: bool = False,
    keep_alive_timeout_s: float = DEFAULT_KEEP_ALIVE_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    runtime: str | None = None,
    **app_kwargs: Any,
) -> None:
    """Serve the model until SIGTERM/SIGINT (port None: AIP_HTTP_PORT or 8080).

    The socket is bound first and the model is loaded (downloaded, checked) in the
    background: meanwhile the health route answers 503 ``{"status": "loading"}``, and the
    predict and metadata routes 503 with ``Retry-After``; once loaded, health answers 200.
    A model that fails to load is logged (one ERROR line), health and predict answer 503 with
    the error for ``TORCHKFP_LOAD_FAILURE_EXIT_S`` seconds (default 10), then the server stops
    and this raises ServeError (``torchkfp serve`` exits with status 2): a serving container
    that cannot serve exits, so Vertex AI restarts it (a transient download fault heals) or
    fails the deployment with the error in the log, rather than waiting on an unhealthy
    replica until the deployment times out.

    ``keep_alive_timeout_s``: an idle keep-alive connection is closed after it;
    ``max_connections``: open connections (or requests in progress) at most, above it uvicorn
    answers 503 Service Unavailable and closes the connection; ``runtime``: ``torch`` or
    ``onnx`` (None: ``TORCHKFP_SERVING_RUNTIME``, else torch), with ``TORCHKFP_TORCH_THREADS``
    intra-op threads (default 1) either way; a model without an ONNX export on ``onnx`` fails
    to load as above; ``app_kwargs``: :func:`create_app`.
    A request head (request line and headers) over ``MAX_HEAD_BYTES`` gets uvicorn's plain 400.
    """
    import torch
    import uvicorn

    threads = runtime_threads()
    runtime = serving_runtime(runtime)
    if not keep_alive_timeout_s > 0:
        raise ServeError(f"keep_alive_timeout_s={keep_alive_timeout_s} must be > 0")
    if max_connections < 1:
        raise ServeError(f"max_connections={max_connections} must be >= 1")
    exit_after = load_failure_exit_s()
    torch.set_num_threads(threads)
    port = http_port() if port is None else port
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    app = create_app(
        model_dir, background=True, runtime=runtime, runtime_threads=threads, **app_kwargs
    )
    state: ModelState = app.state.model
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            access_log=access_log,
            log_level="info",
            timeout_keep_alive=keep_alive_timeout_s,  # type: ignore[arg-type]
            limit_concurrency=max_connections,
            http="h11",  # bounded request heads; the parser is not the bottleneck (inference is)
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        )
    )

    def stop_later(error: str) -> None:
        log.info(
            "the server answers 503 with this error and stops in %g s (%s)",
            exit_after,
            LOAD_FAILURE_EXIT_ENV,
        )
        timer = threading.Timer(exit_after, lambda: setattr(server, "should_exit", True))
        timer.daemon = True
        timer.start()

    state.on_failure = stop_later
    log.info(
        "serving %s on %s, http://%s:%d (predict: POST %s, health: GET %s, metadata: GET %s); "
        "health answers 503 until the model is loaded",
        model_dir,
        "ONNX Runtime" if runtime == "onnx" else "PyTorch",
        host,
        port,
        app_kwargs.get("predict_path") or predict_route(),
        app_kwargs.get("health_path") or health_route(),
        METADATA_ROUTE,
    )
    server.run()
    if state.status == ModelState.FAILED:
        raise ServeError(state.error or f"cannot load the model at {model_dir}")
