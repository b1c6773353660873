"""Model lifecycle on the registry: ``promote`` and ``rollback`` (local and Vertex AI)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the model lifecycle commands to ``app``."""
