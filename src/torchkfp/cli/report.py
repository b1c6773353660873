"""``torchkfp report [RUN]``: the HTML evaluation report of a local run (the latest by default),
its path printed as JSON or opened in the browser (:func:`torchkfp.report.find_run_report`)."""

from __future__ import annotations

import typer

from torchkfp.cli.options import ConfigOpt, SetOpt, echo_json, fail, load_config


def report(
    run: str = typer.Argument(
        None,
        help="A run folder, or a run id under run.pipeline_root (run-<time>-<id>); default: "
        "the latest run that has a report.",
        show_default=False,
    ),
    open_: bool = typer.Option(False, "--open", help="Open the report in the web browser as well."),
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Print the path of a local run's HTML evaluation report (ROC, precision-recall,
    calibration or residual plots, the champion beside the candidate, training curves, the
    slices that blocked a promotion).

    Prints JSON: "report" (the HTML file) and "run" (the run's folder); "opened" with --open.
    Exits 1 when there is no such run or it has no report.

    Examples:\n
      torchkfp report\n
      torchkfp report --open\n
      torchkfp report run-20250101-120000-a1b2c3\n
      torchkfp report .runs/run-20250101-120000-a1b2c3 --open
    """
    from torchkfp.errors import ArtifactError
    from torchkfp.report import find_run_report

    cfg = load_config(config, set_)
    try:
        found = find_run_report(cfg.run.pipeline_root, run)
    except ArtifactError as e:
        fail(f"report: {e}", 1)
    result: dict[str, object] = dict(found)
    if open_:
        import webbrowser
        from pathlib import Path

        result["opened"] = webbrowser.open(Path(found["report"]).as_uri())
        if not result["opened"]:
            typer.echo("note: no web browser could be started; open the file named below", err=True)
    echo_json(result)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
