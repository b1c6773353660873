"""The ``warehouse`` group: load the default tables into a warehouse (``warehouse seed``)."""

from __future__ import annotations

import typer

from torchkfp.cli.options import echo_json, fail

warehouse_app = typer.Typer(
    help="The warehouse the pipeline queries.\n\nExample:  torchkfp warehouse seed --backend "
    "bigquery --project my-project --dataset nycflights13",
    no_args_is_help=True,
)


@warehouse_app.command("seed")
def seed(
    backend: str = typer.Option(
        "duckdb", "--backend", help="Where to load the tables: bigquery or duckdb."
    ),
    project: str = typer.Option(
        None, "--project", help="bigquery: the project that holds the dataset and runs the loads."
    ),
    dataset: str = typer.Option(
        "nycflights13",
        "--dataset",
        help="The dataset (bigquery) or schema (duckdb) to load the tables into.",
    ),
    location: str = typer.Option(
        "US",
        "--location",
        help="bigquery: where the dataset is created when missing (and where the loads run).",
    ),
    path: str = typer.Option(
        ".data/warehouse.duckdb", "--path", help="duckdb: the database file to (re)create."
    ),
    limit: int = typer.Option(
        None,
        "--limit",
        min=1,
        help="Load only the first N rows of each table (for trying things out).",
    ),
) -> None:
    """Load the default tables (nycflights13: flights, weather, planes, airports, airlines).

    Explicit schemas: integers INT64, measurements FLOAT64, time_hour TIMESTAMP; NA is NULL.

    Re-seeding replaces the tables (BigQuery: WRITE_TRUNCATE load jobs).

    BigQuery: the dataset is created in --location when missing.

    Prints a JSON summary (rows per table). Config: warehouse.source_dataset: PROJECT.DATASET.

    Examples:\n
      torchkfp warehouse seed --backend bigquery --project my-project --dataset nycflights13\n
      torchkfp warehouse seed --backend duckdb --path .data/warehouse.duckdb
    """
    from torchkfp.config import ConfigError
    from torchkfp.seed import seed_bigquery, seed_local

    try:
        if backend == "bigquery":
            if not project:
                fail("--backend bigquery needs --project (the Google Cloud project id)")
            result = _seed_bigquery(seed_bigquery, project, dataset, location, limit)
        elif backend == "duckdb":
            if project:
                fail("--project is for --backend bigquery; DuckDB takes --path")
            result = seed_local(path, dataset, limit=limit)
        else:
            fail(f"--backend={backend!r}: use bigquery or duckdb")
    except ConfigError as e:
        fail(str(e), 2)
    echo_json(result)


def _seed_bigquery(seed_bigquery, project: str, dataset: str, location: str, limit):
    from torchkfp.config import ConfigError
    from torchkfp.vertex import api_error_message

    try:
        return seed_bigquery(project, dataset, location, limit=limit)
    except ConfigError:
        raise
    except Exception as e:
        msg = api_error_message(f"seeding {project}.{dataset} in BigQuery", e)
        fail(msg.replace("use Vertex AI", "use BigQuery"), 1)


def register(app: typer.Typer) -> None:
    """Add the ``warehouse`` group to ``app``."""
    app.add_typer(warehouse_app, name="warehouse")
