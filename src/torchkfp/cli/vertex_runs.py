"""``torchkfp submit``: compile the Vertex AI pipeline and submit one run to Vertex AI Pipelines
(:mod:`torchkfp.vertex.runs`); kfp and google-cloud-aiplatform are imported inside the command
so ``torchkfp --help`` stays fast."""

from __future__ import annotations

import tempfile

import typer

from torchkfp.cli._vertex import call, pipeline_template
from torchkfp.cli.options import (
    DryRunOpt,
    TemplateOpt,
    VertexConfigOpt,
    VertexSetOpt,
    echo_json,
    load_vertex_config,
)


def submit(
    config: str = VertexConfigOpt,
    set_: list[str] = VertexSetOpt,
    dry_run: bool = DryRunOpt,
    wait: bool = typer.Option(
        False, "--wait", help="Follow the run until it ends; exit 1 unless it SUCCEEDED."
    ),
    template: str = TemplateOpt,
    display_name: str = typer.Option(None, "--display-name", help="Run display name."),
    poll_interval: float = typer.Option(
        15.0, "--poll-interval", help="--wait: seconds between state checks."
    ),
    timeout: float = typer.Option(
        None, "--timeout", help="--wait: give up (exit 1) after this many seconds."
    ),
    estimate: bool = typer.Option(
        None,
        "--estimate/--no-estimate",
        help="Dry-run the ingest query in BigQuery first: print its estimated bytes and refuse "
        "a query over warehouse.maximum_bytes_billed (default: on with --dry-run).",
        show_default=False,
    ),
) -> None:
    """Compile the Vertex AI pipeline and submit one run to Vertex AI Pipelines.

    Every config section is passed as the run's <section>_config parameter.

    Images: vertex.training_image / vertex.serving_image (else TORCHKFP_*_IMAGE, read now).

    --dry-run: checks offline, then a BigQuery dry run of the ingest query (bytes on stderr).

    Over warehouse.maximum_bytes_billed: exit 2. Stdout: the request, as JSON.

    Examples:\n
      torchkfp submit --config configs/vertex.yaml --dry-run\n
      torchkfp submit --config configs/vertex.yaml --wait\n
      torchkfp submit -c configs/vertex.yaml --set train.epochs=3 --set vertex.enable_caching=false
    """
    from torchkfp.vertex import runs

    cfg = load_vertex_config(config, set_)
    with tempfile.TemporaryDirectory(prefix="torchkfp-submit-") as tmp:
        path = call(pipeline_template, cfg, template, tmp)

        def show(state: str) -> None:
            typer.echo(f"state: {state}", err=True)

        result = call(
            runs.submit,
            cfg,
            path,
            display_name=display_name,
            dry_run=dry_run,
            wait=wait,
            poll_interval=poll_interval,
            timeout=timeout,
            on_state=show,
            estimate=estimate,
        )
    if result.query_estimate is not None:
        from torchkfp.vertex.estimate import QueryEstimate

        fields = {k: v for k, v in result.query_estimate.items() if k != "over_budget"}
        typer.echo(QueryEstimate(**fields).summary(), err=True)
    if dry_run:
        echo_json(result.request)
        return
    typer.echo(f"submitted: {result.job_name}", err=True)
    typer.echo(f"console:   {result.dashboard_url}", err=True)
    echo_json({"name": result.job_name, "state": result.state, "url": result.dashboard_url})


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
