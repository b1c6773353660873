"""``torchkfp batch-predict``: score a file, a table or a query in chunks with a model artifact
(:mod:`torchkfp.batch_predict`) and write the key columns plus the predictions."""

from __future__ import annotations

import typer

from torchkfp.cli.options import ConfigOpt, SetOpt, echo_json, fail, load_config


def _key_columns(values: list[str] | None) -> list[str] | None:
    """``--key-columns a,b --key-columns c`` -> [a, b, c]; ``--key-columns ''`` -> [] (none);
    not given -> None (every input column that is not a feature)."""
    if not values:
        return None
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


KeyColumnsOpt = typer.Option(
    None,
    "--key-columns",
    "-k",
    help="Input columns copied next to the predictions (comma-separated or repeated). "
    "Default: every input column that is not a model feature; --key-columns '' for none.",
)


def batch_predict(
    input_: str = typer.Option(
        None,
        "--input",
        "-i",
        help="Rows to score: a Parquet file, folder or glob; a CSV file; duckdb:TABLE (the "
        "configured DuckDB warehouse) or duckdb:FILE.duckdb:TABLE; bq:DATASET.TABLE or "
        "bq:PROJECT.DATASET.TABLE; or a query (text starting with SELECT or WITH, BigQuery "
        "dialect) run on the configured warehouse (warehouse.backend). gs:// paths are read "
        "through the GCS FUSE mount (/gcs). Default: batch.input.",
    ),
    output: str = typer.Option(
        None,
        "--output",
        "-o",
        help="Where the predictions go: FILE.parquet (one file), any other path (a folder of "
        "Parquet shards with _SUCCESS), duckdb:TABLE, duckdb:FILE.duckdb:TABLE or "
        "bq:DATASET.TABLE. Default: batch.output.",
    ),
    model: str = typer.Option(
        None, "--model", "-m", help="Model artifact folder or gs:// URI to score with."
    ),
    alias: str = typer.Option(
        None,
        "--alias",
        "-a",
        help="Score with the registry's version that has this alias (default: batch.alias, "
        "else deploy.alias: the champion).",
    ),
    key_columns: list[str] = KeyColumnsOpt,
    chunk_rows: int = typer.Option(
        None,
        "--chunk-rows",
        min=1,
        help="Rows read, scored and written at a time (default: batch.chunk_rows, 65536).",
    ),
    threshold: float = typer.Option(
        None,
        "--threshold",
        help="binary: probability at or above which label is the positive class (default: "
        "batch.threshold, else evaluate.threshold).",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace an existing output (BigQuery: WRITE_TRUNCATE), in one step at the end.",
    ),
    append: bool = typer.Option(
        False,
        "--append",
        help="Append to an existing duckdb: or bq: table (BigQuery: WRITE_APPEND).",
    ),
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Score rows in chunks with a model and write key columns + predictions.

    Columns as the server answers: binary label, probability (of the positive class).

    Multiclass: label, probability_<class> per class; regression: value.

    The output appears in one step at the end, or not at all (never half-written).

    Prints one JSON line: rows, seconds, rows_per_second, output, model, ...

    Examples:\n
      torchkfp batch-predict --input flights.parquet --output scores.parquet\n
      torchkfp batch-predict -i duckdb:flights_today -o duckdb:scores -k flight,time_hour\n
      torchkfp batch-predict -m .runs/RUN/train/model -i "SELECT * FROM t" -o scores/\n
      torchkfp batch-predict -c my.yaml -i bq:ml.flights_today -o bq:ml.scores --overwrite
    """
    from torchkfp.batch_predict import run_batch
    from torchkfp.config import ConfigError
    from torchkfp.config.batch import BatchConfig, batch_section, with_absolute_paths

    cfg = load_config(config, set_)
    if model and alias:
        fail("give either --model or --alias, not both")
    if overwrite and append:
        fail("give either --overwrite or --append, not both")
    section = with_absolute_paths(batch_section(cfg))
    updates: dict = {}
    if input_ is not None:
        updates["input"] = input_
    if output is not None:
        updates["output"] = output
    if model:
        updates.update(model=model, alias=None)
    if alias:
        updates.update(alias=alias, model=None)
    keys = _key_columns(key_columns)
    if key_columns:
        updates["key_columns"] = keys
    if chunk_rows is not None:
        updates["chunk_rows"] = chunk_rows
    if threshold is not None:
        updates["threshold"] = threshold
    if overwrite:
        updates["if_exists"] = "replace"
    if append:
        updates["if_exists"] = "append"
    try:
        batch = BatchConfig.from_dict({**section.to_dict(), **updates})
        result = run_batch(batch, cfg.warehouse, cfg.deploy, cfg.vertex, cfg.evaluate.threshold)
    except ConfigError as e:
        fail(str(e), 2)
    except _work_errors() as e:
        fail(f"{type(e).__name__}: {e}" if not _ours(e) else str(e), 1)
    echo_json(result, indent=None)


def _ours(e: BaseException) -> bool:
    from torchkfp.errors import USER_ERRORS

    return isinstance(e, USER_ERRORS)


def _work_errors() -> tuple[type[BaseException], ...]:
    """What a batch prediction fails with when the input, the model or a service is at fault
    (exit 1 with one line; anything else is a bug and shows its traceback)."""
    import duckdb
    import pyarrow as pa
    from google.api_core.exceptions import GoogleAPIError

    from torchkfp.errors import USER_ERRORS

    return (*USER_ERRORS, OSError, duckdb.Error, pa.ArrowException, GoogleAPIError)


def register(app: typer.Typer) -> None:
    app.command("batch-predict")(batch_predict)
