"""``torchkfp serve``: the prediction server (the same one the serving image runs on Vertex AI)."""

from __future__ import annotations

import typer

from torchkfp.cli.options import fail, load_config


def serve(
    model: str = typer.Option(
        None,
        "--model",
        "-m",
        help="Model artifact folder or gs:// URI to serve (default: the model with the "
        "configured alias in the local registry, or AIP_STORAGE_URI when set).",
    ),
    alias: str = typer.Option(
        None,
        "--alias",
        "-a",
        help="Serve the local registry's version with this alias (e.g. champion).",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 in a container)."
    ),
    port: int = typer.Option(
        None,
        "--port",
        "-p",
        help="Port (default: AIP_HTTP_PORT, else 8080).",
        min=1,
        max=65535,
    ),
    config: str = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML config for the registry (default: configs/local.yaml if present, else "
        "the embedded local defaults).",
    ),
    max_instances: int = typer.Option(
        1000,
        "--max-instances",
        min=1,
        help="Most instances accepted in one request; more get 413.",
    ),
    max_body_bytes: int = typer.Option(
        5_000_000,
        "--max-body-bytes",
        min=1,
        help="Largest request body in bytes; a larger one gets 413 (checked while reading).",
    ),
    body_timeout: float = typer.Option(
        30.0,
        "--body-timeout",
        min=0.001,
        help="Seconds to receive a whole request body; a client that stalls gets 408 and "
        "its connection is closed.",
    ),
    keep_alive_timeout: float = typer.Option(
        15.0,
        "--keep-alive-timeout",
        min=0.001,
        help="Seconds an idle keep-alive connection stays open.",
    ),
    max_connections: int = typer.Option(
        512,
        "--max-connections",
        min=1,
        help="Most open connections (or requests in progress) at once; above it the server "
        "answers 503 Service Unavailable and closes the connection, so a load balancer can "
        "retry elsewhere.",
    ),
    runtime: str = typer.Option(
        None,
        "--runtime",
        help="What runs the model: torch (PyTorch) or onnx (ONNX Runtime, on the model.onnx "
        "that training exported and checked; a model without one fails at startup). Default: "
        "TORCHKFP_SERVING_RUNTIME, else torch.",
    ),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
) -> None:
    """Serve a model over HTTP with the Vertex AI custom-container contract.

    POST {"instances": [{feature: value, ...}]} to /predict (AIP_PREDICT_ROUTE) and get
    {"predictions": [{"label": ..., "probability": p}]} (binary; see GET /metadata for
    the response of the model's task kind); GET /health
    (AIP_HEALTH_ROUTE) and GET /metadata (features and an example instance).

    Examples:\n
      torchkfp serve                   (the local registry's champion)\n
      torchkfp serve --alias champion --port 8081\n
      torchkfp serve --model .runs/RUN/train/model\n
      torchkfp serve --runtime onnx     (ONNX Runtime instead of PyTorch)\n
      AIP_STORAGE_URI=gs://BUCKET/model torchkfp serve --host 0.0.0.0
    """
    from torchkfp.serving import ServeError, resolve_model
    from torchkfp.serving import serve as run_server

    cfg = load_config(config)
    try:
        model_uri = resolve_model(model, alias, cfg)
        run_server(
            model_uri,
            host=host,
            port=port,
            access_log=access_log,
            keep_alive_timeout_s=keep_alive_timeout,
            max_connections=max_connections,
            runtime=runtime,
            max_instances=max_instances,
            max_body_bytes=max_body_bytes,
            body_timeout_s=body_timeout,
            threshold=cfg.evaluate.threshold,
        )
    except ServeError as e:
        fail(str(e))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
