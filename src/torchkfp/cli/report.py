"""``torchkfp report [RUN]``: the HTML evaluation report of a local run (the latest by default),
its path printed as JSON or opened in the browser (:func:`torchkfp.report.find_run_report`);
``--vertex``: of a Vertex AI pipeline run, fetched from Cloud Storage first
(:func:`torchkfp.vertex.report.find_vertex_report`)."""

from __future__ import annotations

import typer

from torchkfp.cli.options import (
    DEFAULT_VERTEX_CONFIG,
    ConfigOpt,
    SetOpt,
    echo_json,
    fail,
    load_config,
    load_vertex_config,
)


def report(
    run: str = typer.Argument(
        None,
        help="A run folder, or a run id under run.pipeline_root (run-<time>-<id>); with "
        "--vertex a pipeline job id or resource name. Default: the latest run that has a report.",
        show_default=False,
    ),
    vertex: bool = typer.Option(
        False,
        "--vertex",
        help="A Vertex AI pipeline run (in vertex.project / vertex.region): download its report "
        "into <run.pipeline_root>/vertex-reports/<job id>/. The config defaults to "
        f"{DEFAULT_VERTEX_CONFIG}.",
    ),
    open_: bool = typer.Option(False, "--open", help="Open the report in the web browser as well."),
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Print the path of a run's HTML evaluation report (ROC, precision-recall,
    calibration or residual plots, the champion beside the candidate, training curves, the
    slices that blocked a promotion).

    Prints JSON: "report" (the HTML file), "run" (the run's folder), "opened" with --open.

    --vertex: "run" is the job id; also "job", "uri" (gs://), "state" and "url" (console).

    Exits 1 when there is no such run or it has no report (yet), or the file is gone.

    Examples:\n
      torchkfp report\n
      torchkfp report --open\n
      torchkfp report run-20250101-120000-a1b2c3\n
      torchkfp report .runs/run-20250101-120000-a1b2c3 --open\n
      torchkfp report --vertex -c configs/vertex.yaml --open\n
      torchkfp report --vertex torchkfp-flights-delay-20250101120000-a1b2c3 -c configs/vertex.yaml
    """
    from torchkfp.errors import ArtifactError

    result: dict[str, object]
    if vertex:
        from torchkfp.cli._vertex import call
        from torchkfp.vertex.report import find_vertex_report

        cfg = load_vertex_config(config, set_)
        try:
            result = call(find_vertex_report, cfg, run).to_dict()
        except ArtifactError as e:
            fail(f"report: {e}", 1)
    else:
        from torchkfp.report import find_run_report

        cfg = load_config(config, set_)
        try:
            result = dict(find_run_report(cfg.run.pipeline_root, run))
        except ArtifactError as e:
            fail(f"report: {e}", 1)
    if open_:
        import webbrowser
        from pathlib import Path

        result["opened"] = webbrowser.open(Path(str(result["report"])).as_uri())
        if not result["opened"]:
            typer.echo("note: no web browser could be started; open the file named below", err=True)
    echo_json(result)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
