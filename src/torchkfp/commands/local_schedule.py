"""CLI commands (registered on the main app by torchkfp.cli)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
