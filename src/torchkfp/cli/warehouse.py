"""The ``warehouse`` group: load the default tables into a warehouse (``warehouse seed``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``warehouse`` group to ``app``."""
