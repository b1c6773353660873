"""The shared ``torchkfp schedule`` command group.

Several command modules add commands to it (``create|list|pause|resume|delete`` for Vertex AI
schedules in :mod:`torchkfp.commands.vertex`, ``run-local`` elsewhere); the Vertex module
registers the group on the main app.
"""

import typer

schedule_app = typer.Typer(
    help="Run the pipeline on a schedule: Vertex AI schedules (create, list, pause, resume, "
    "delete) or locally (run-local).\n\nExample:  torchkfp schedule list --config "
    "configs/vertex.yaml",
    no_args_is_help=True,
)
