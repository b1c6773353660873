"""The HTTP app (FastAPI) and ``serve``; routes and port from the Vertex AI custom-container
environment (``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``, ``AIP_PREDICT_ROUTE``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from torchkfp.serving.location import ServeError, localize_model
from torchkfp.serving.requests import METADATA_ROUTE, BadRequest, InstanceValidator, parse_body

log = logging.getLogger("torchkfp.serving")

DEFAULT_PORT = 8080
DEFAULT_HEALTH_ROUTE = "/health"
DEFAULT_PREDICT_ROUTE = "/predict"


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
        "task": predictor.task,
        "classes": predictor.classes or None,
        "example_instance": {
            **{k: round(s.mean, 3) for k, s in tf.numeric.items()},
            **{k: (v[0] if v else None) for k, v in tf.vocab.items()},
        },
        "request": {
            "routes": {"predict": predict_path, "health": health_path},
            "max_instances": max_instances,
            "max_body_bytes": max_body_bytes,
            "threshold": threshold if predictor.task == "binary" else None,
            "response": {"predictions": [response_shape(predictor)]},
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
            preds = predictions(predictor, predictor.predict(df), t)
        except Exception:  # a bug, not bad input: the input was validated above
            log.exception("prediction failed")
            return JSONResponse(
                {"error": "prediction failed inside the server; see the server log"},
                status_code=500,
            )
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
