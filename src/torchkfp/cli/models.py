"""Model lifecycle on the registry: ``promote``, ``rollback`` and ``traffic`` (local and Vertex
AI), one library call each (:mod:`torchkfp.registry`)."""

from __future__ import annotations

from typing import Any

import typer

from torchkfp.cli.options import ConfigOpt, SetOpt, echo_json, fail, load_config


def _act(config: str | None, sets: list[str] | None, action: str) -> None:
    """Open the configured registry, run ``action`` on it and print the result as JSON; exit 2
    on a config problem, 1 when the registry refuses or a request fails."""
    from torchkfp.config import ConfigError
    from torchkfp.errors import USER_ERRORS
    from torchkfp.registry import open_registry

    cfg = load_config(config, sets)
    if cfg.deploy.registry == "vertex":
        from torchkfp.cli._vertex import _sdk_logs_to_stderr

        _sdk_logs_to_stderr()  # stdout carries only the JSON result
    try:
        registry = open_registry(cfg.deploy, cfg.vertex)
        result: Any = getattr(registry, action)()
    except ConfigError as e:
        fail(f"{action}: {e}", 2)
    except USER_ERRORS as e:
        fail(f"{action}: {e}", 1)
    except Exception as e:  # a failed Google Cloud request: permission, quota, network
        if not type(e).__module__.startswith(("google.api_core", "google.auth")):
            raise
        from torchkfp.vertex import api_error_message

        fail(api_error_message(f"{action} on the {cfg.deploy.registry} registry", e), 1)
    echo_json(result)


def promote(config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Shift the canary to 100% of the traffic and make it the champion.

    The canary is the newest version serving next to the champion (published with
    vertex.traffic_percentage below 100). It takes all traffic, the champion alias
    (deploy.alias) moves to it, the old champion is undeployed and becomes the previous
    champion (what `torchkfp rollback` returns to). Exits 1 when there is no canary.

    Prints the result as JSON: the version promoted, the champion and previous champion, and
    the deployed versions with their traffic after the change.

    The registry is deploy.registry: the local folder (deploy.registry_dir) by default, or
    Vertex AI with a Vertex config (the model deploy.model_name, the endpoint
    vertex.endpoint_display_name).

    Examples:\n
      torchkfp promote\n
      torchkfp promote --config configs/vertex.yaml
    """
    _act(config, set_, "promote")


def rollback(config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Return to the previous champion.

    The previous champion (alias previous-<deploy.alias>, recorded whenever a version takes
    over from a champion) serves 100% again and takes back the champion alias; the version
    rolled back from, and any canary, are undeployed. The previous-champion alias is used up:
    a second rollback in a row exits 1, as does a rollback with none recorded.

    Prints the result as JSON, as `torchkfp promote` does.

    The registry is deploy.registry: the local folder (deploy.registry_dir) by default, or
    Vertex AI with a Vertex config (the model deploy.model_name, the endpoint
    vertex.endpoint_display_name).

    Examples:\n
      torchkfp rollback\n
      torchkfp rollback -c configs/vertex.yaml
    """
    _act(config, set_, "rollback")


def traffic(config: str = ConfigOpt, set_: list[str] = SetOpt) -> None:
    """Show the champion, the previous champion and what serves with which share (JSON).

    The registry is deploy.registry: the local folder (deploy.registry_dir) by default, or
    Vertex AI with a Vertex config (the model deploy.model_name, the endpoint
    vertex.endpoint_display_name).

    Examples:\n
      torchkfp traffic\n
      torchkfp traffic -c configs/vertex.yaml
    """
    _act(config, set_, "status")


def register(app: typer.Typer) -> None:
    """Add the model lifecycle commands to ``app``."""
    app.command("promote")(promote)
    app.command("rollback")(rollback)
    app.command("traffic")(traffic)
