"""``torchkfp init``: write a config for your own Parquet / CSV file (or warehouse table) that
``torchkfp run -c CONFIG`` runs as is. The inference is :mod:`torchkfp.init_config`."""

from __future__ import annotations

from pathlib import Path

import typer

from torchkfp.cli.options import ConfigOpt, fail, load_config


def init(
    label: str = typer.Option(..., "--label", help="The label column (what the model predicts)."),
    out: str = typer.Option(..., "--out", "-o", help="The config file to write."),
    data: str = typer.Option(
        None, "--data", help="A Parquet (.parquet) or CSV (.csv) file (or a glob of them)."
    ),
    table: str = typer.Option(
        None,
        "--table",
        help="Instead of --data: a table of the DuckDB warehouse of --config (a name from "
        "warehouse.tables, or a table of its database file).",
    ),
    config: str = ConfigOpt,
    task: str = typer.Option(
        None, "--task", help="binary | multiclass | regression (default: from the label)."
    ),
    split: str = typer.Option(
        "hash", "--split", help="hash (default: of the whole row) | temporal | column."
    ),
    split_column: str = typer.Option(
        None,
        "--split-column",
        help="hash: a key column (default: the whole row); temporal: the date column (default: "
        "the first date/timestamp column); column: the column holding train/validation/test.",
    ),
    name: str = typer.Option(
        None,
        "--name",
        help="Model name (deploy.model_name; run.pipeline_name is torchkfp-NAME). Default: "
        "from the file or table name.",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Write a config for your own data: label, task kind, features and split, inferred.

    Features: floats and integers are numeric (integers with <= 20 values: categorical).

    Strings and booleans are categorical; dates, identifiers, constants are left out.

    Task: 2 label values -> binary; a few classes -> multiclass; numbers -> regression.

    The written file says what was inferred and why; edit it as you see fit.

    Examples:\n
      torchkfp init --data penguins.parquet --label species --out penguins.yaml\n
      torchkfp run -q -c penguins.yaml\n
      torchkfp init --data sales.csv --label revenue --split temporal --out sales.yaml\n
      torchkfp init --table weather --label temp --out weather.yaml  (DuckDB warehouse table)
    """
    from torchkfp.init_config import InitError, infer, render

    out_path = Path(out)
    if out_path.exists() and not force:
        fail(f"{out} exists; pass --force to overwrite it")
    if data is not None and table is not None:
        fail("give either --data FILE or --table NAME, not both")
    if data is None and table is None:
        fail("give --data FILE (Parquet or CSV) or --table NAME (a warehouse table)")
    warehouse = load_config(config).warehouse if table is not None else None
    try:
        inf = infer(
            label,
            data=data,
            table=table,
            warehouse=warehouse,
            task=task,
            split=split,
            split_column=split_column,
            name=name,
        )
        text = render(inf, out_path.parent)
    except InitError as e:
        fail(str(e))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    typer.echo(f"label {inf.label}: task {inf.task} ({inf.task_reason})")
    typer.echo(f"numeric features ({len(inf.numeric)}): {', '.join(inf.numeric) or '-'}")
    typer.echo(
        f"categorical features ({len(inf.categorical)}): {', '.join(inf.categorical) or '-'}"
    )
    if inf.excluded:
        typer.echo("not features: " + ", ".join(f"{k} ({v})" for k, v in inf.excluded.items()))
    typer.echo(f"split: {inf.split_reason}")
    for note in inf.notes:
        typer.secho(f"note: {note}", fg="yellow", err=True)
    typer.echo(f"wrote {out_path}; run it with: torchkfp run -c {out_path}")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
