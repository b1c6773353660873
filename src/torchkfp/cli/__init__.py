"""The ``torchkfp`` command line: argument parsing, then one library call per command.

The top layer (cli -> pipelines -> components -> library). One module per command family, each
with a ``register(app)`` that adds its commands to the app:

- :mod:`~torchkfp.cli.init`: ``init`` (a config for your own Parquet / CSV data)
- :mod:`~torchkfp.cli.local_runs`: ``run`` (the whole DAG locally) and ``compile``
- :mod:`~torchkfp.cli.vertex_runs`: ``submit`` (one run on Vertex AI Pipelines)
- :mod:`~torchkfp.cli.schedules`: the ``schedule`` group (Vertex AI schedules, ``run-local``)
- :mod:`~torchkfp.cli.stages`: the ``component`` group (one DAG stage on its own)
- :mod:`~torchkfp.cli.serve`: ``serve`` (the prediction server)
- :mod:`~torchkfp.cli.models`: ``promote`` and ``rollback`` (the registry's champion)
- :mod:`~torchkfp.cli.batch`: ``batch-predict`` (score a file or table with a model)
- :mod:`~torchkfp.cli.report`: ``report`` (a local run's HTML evaluation report)
- :mod:`~torchkfp.cli.tune`: ``tune`` (hyperparameter search, local or Vertex AI)
- :mod:`~torchkfp.cli.warehouse`: the ``warehouse`` group (``warehouse seed``)

What they share (options, config loading, the error exit, JSON output) is in
:mod:`~torchkfp.cli.options`; command modules never import this package. kfp, torch and the
cloud SDKs are imported inside the commands, so ``torchkfp --help`` stays fast.
"""

from __future__ import annotations

import typer

from torchkfp.cli import (
    batch,
    init,
    local_runs,
    models,
    report,
    schedules,
    serve,
    stages,
    tune,
    vertex_runs,
    warehouse,
)

__all__ = ["app", "main"]

app = typer.Typer(
    help="torchkfp: a PyTorch model from a BigQuery table to a prediction endpoint, as one "
    "Kubeflow Pipelines DAG.\n\nStart with:  torchkfp run   (whole DAG locally, embedded "
    "defaults)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (
    init,
    local_runs,
    vertex_runs,
    models,
    serve,
    batch,
    report,
    schedules,
    stages,
    tune,
    warehouse,
):
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="torchkfp")
