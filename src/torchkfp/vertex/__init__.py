"""Vertex AI through the google-cloud-aiplatform SDK: the session (``init``) shared by pipeline
runs (:mod:`torchkfp.vertex.runs`), schedules (:mod:`torchkfp.vertex.schedules`) and the Model
Registry (:mod:`torchkfp.registry.vertex`). The SDK is imported inside functions only, so
importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any

from torchkfp.config import ConfigError, VertexConfig


def init(v: VertexConfig, **kwargs: Any) -> None:
    """``aiplatform.init`` for the configured project, region, staging bucket and CMEK key."""
    from google.cloud import aiplatform

    if not v.project:
        raise ConfigError("vertex.project is required for Vertex AI; set it in the config")
    aiplatform.init(
        project=v.project,
        location=v.region,
        staging_bucket=v.pipeline_root,
        encryption_spec_key_name=v.encryption_key,
        **kwargs,
    )


API_HOST = "{region}-aiplatform.googleapis.com"
"""The regional REST host the SDK talks to (the requests a dry run shows name it)."""
CONSOLE = "https://console.cloud.google.com/vertex-ai/locations/{region}/pipelines"
"""Cloud console pages of pipeline runs (``/runs/ID``) and schedules (``/schedules/ID``)."""

_AUTH_ERRORS = (
    "Forbidden",
    "Unauthorized",
    "PermissionDenied",
    "Unauthenticated",
    "DefaultCredentialsError",
)


def api_error_message(what: str, e: Exception) -> str:
    """One line for a failed SDK call: what was attempted, the API's code and message, and how
    to log in when the caller lacks credentials or permission."""
    msg = getattr(e, "message", None) or str(e)
    code = getattr(e, "code", None)
    hint = ""
    if type(e).__name__ in _AUTH_ERRORS:
        hint = (
            " (check `gcloud auth application-default login` and that the caller may use "
            "Vertex AI in this project)"
        )
    return f"{what} failed: {code or type(e).__name__}: {msg}{hint}"
