"""The ``batch`` section: scoring a table or files in bulk with a registered model
(``torchkfp batch-predict`` and the batch-scoring pipeline), and how its input and output are
written (:func:`parse_location`).

Input (``batch.input``, ``--input``):

- a local Parquet file, a folder of Parquet files, or a glob of them (``data/*.parquet``);
  a CSV file (``.csv``, ``.tsv``, ``.txt``, optionally ``.gz`` / ``.zst``); ``gs://...`` for
  the same on Google Cloud Storage, read through the GCS FUSE mount (``/gcs/...``) that Vertex
  AI jobs have;
- ``duckdb:TABLE`` (a table of the configured DuckDB warehouse, ``warehouse.duckdb_path``, or a
  name from ``warehouse.tables``) or ``duckdb:FILE:TABLE`` (a table of another DuckDB file);
- ``bq:TABLE`` (``dataset.table`` in ``warehouse.project``, or ``project.dataset.table``);
- a query (text starting with ``SELECT`` or ``WITH``, in BigQuery's dialect) run on the
  configured warehouse (``warehouse.backend``), with ``warehouse.query_parameters``.

Output (``batch.output``, ``--output``): a path ending in ``.parquet`` (one file) or any other
path (a folder of Parquet shards, ``part-NNNNN.parquet``, committed with ``_SUCCESS``);
``duckdb:TABLE`` / ``duckdb:FILE:TABLE``; ``bq:TABLE``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from torchkfp.config.base import ConfigError, Float, Int, OptStr, _check, _Section

if TYPE_CHECKING:
    from typing_extensions import Self

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".csv.zst")
BIGQUERY_PREFIXES = ("bq:", "bigquery:")
DUCKDB_PREFIX = "duckdb:"
_DUCKDB_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")
_BQ_PART = r"[A-Za-z0-9_][A-Za-z0-9_\-]*"
_BQ_TABLE = re.compile(rf"(?:[a-z][a-z0-9.\-:]*[a-z0-9]\.)?{_BQ_PART}\.{_BQ_PART}")
_QUERY = re.compile(r"\s*(?:\(\s*)*(?:select|with)\b", re.I)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_COLUMN = re.compile(r"[^\x00-\x1f`\"]{1,300}")


@dataclass(frozen=True)
class Location:
    """Where batch prediction reads or writes, parsed from its text (:func:`parse_location`)."""

    kind: Literal["parquet", "csv", "parquet_file", "parquet_folder", "duckdb", "bigquery", "query"]
    """input: ``parquet`` (a file, folder or glob), ``csv``, ``duckdb``, ``bigquery`` or
    ``query``; output: ``parquet_file``, ``parquet_folder``, ``duckdb`` or ``bigquery``."""
    name: str
    """The path (or glob), the table name, or the SQL text."""
    database: str | None = None
    """``duckdb:FILE:TABLE``: the DuckDB file (None: ``warehouse.duckdb_path``)."""

    def describe(self) -> str:
        if self.kind == "duckdb":
            return f"duckdb:{self.database + ':' if self.database else ''}{self.name}"
        if self.kind == "bigquery":
            return f"bq:{self.name}"
        if self.kind == "query":
            text = " ".join(self.name.split())
            return "query: " + (text if len(text) <= 80 else text[:77] + "...")
        return self.name


def _suffix_kind(path: str, suffixes: tuple[str, ...]) -> bool:
    return path.lower().rstrip("/").endswith(suffixes)


def parse_location(text: Any, role: Literal["input", "output"], setting: str) -> Location:
    """What ``text`` names (see the module docstring); ConfigError naming ``setting`` and the
    accepted forms when it names nothing valid. Only the text is checked here: whether a file
    or table exists is checked when batch prediction starts."""
    forms = (
        "a Parquet file or folder, a CSV file, duckdb:TABLE, duckdb:FILE:TABLE, "
        "bq:DATASET.TABLE or a SELECT query"
        if role == "input"
        else "a .parquet file, a folder, duckdb:TABLE, duckdb:FILE:TABLE or bq:DATASET.TABLE"
    )
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{setting} is empty: give {forms}")
    raw = text.strip()
    lower = raw.lower()
    for prefix in BIGQUERY_PREFIXES:
        if lower.startswith(prefix):
            table = raw[len(prefix) :].strip().strip("`")
            if not _BQ_TABLE.fullmatch(table):
                raise ConfigError(
                    f"{setting}={raw!r}: {table!r} is not a BigQuery table; write "
                    "bq:DATASET.TABLE or bq:PROJECT.DATASET.TABLE"
                )
            return Location("bigquery", table)
    if lower.startswith(DUCKDB_PREFIX):
        rest = raw[len(DUCKDB_PREFIX) :].strip()
        database, _, table = rest.rpartition(":")
        if not _DUCKDB_TABLE.fullmatch(table):
            raise ConfigError(
                f"{setting}={raw!r}: {table!r} is not a DuckDB table name; write "
                "duckdb:TABLE, duckdb:SCHEMA.TABLE or duckdb:FILE.duckdb:TABLE"
            )
        return Location("duckdb", table, database.strip() or None)
    if _QUERY.match(raw):
        if role == "output":
            raise ConfigError(f"{setting} is a query; the output must be {forms}")
        return Location("query", raw)
    if _SCHEME.match(raw) and not lower.startswith("gs://"):
        raise ConfigError(
            f"{setting}={raw!r}: only local paths and gs:// URIs are read as files; give {forms}"
        )
    if role == "input":
        if _suffix_kind(raw, CSV_SUFFIXES):
            return Location("csv", raw)
        return Location("parquet", raw)
    if _suffix_kind(raw, PARQUET_SUFFIXES):
        return Location("parquet_file", raw)
    if _suffix_kind(raw, CSV_SUFFIXES):
        raise ConfigError(
            f"{setting}={raw!r}: batch prediction writes Parquet; name a .parquet file or a "
            "folder (or a duckdb: / bq: table)"
        )
    return Location("parquet_folder", raw)


class BatchConfig(_Section):
    section_name: ClassVar[str] = "batch"

    model: OptStr = None
    """The model artifact to score with: a folder or a gs:// URI (empty: the registry's version
    that ``alias`` names)."""
    alias: OptStr = None
    """The registry alias whose version scores (``deploy.registry``; empty: ``deploy.alias``,
    the champion). Ignored when ``model`` is set."""
    input: OptStr = None
    """The rows to score: a Parquet file, folder or glob, a CSV file, ``duckdb:TABLE``,
    ``duckdb:FILE:TABLE``, ``bq:DATASET.TABLE`` or a ``SELECT`` query on the configured
    warehouse (see :mod:`torchkfp.config.batch`). Required to run."""
    output: OptStr = None
    """Where the predictions go: a ``.parquet`` file, a folder of Parquet shards,
    ``duckdb:TABLE``, ``duckdb:FILE:TABLE`` or ``bq:DATASET.TABLE``. Required to run."""
    key_columns: list[str] | None = None
    """Input columns copied next to the predictions (e.g. ``[flight_id]``). Empty (null): every
    input column that is not a model feature; ``[]``: none (predictions only)."""
    chunk_rows: Int = Field(65536, ge=1)
    """Rows read, scored and written at a time: memory stays bounded by a chunk, whatever the
    input's size."""
    if_exists: Literal["fail", "replace", "append"] = "fail"
    """An output that exists already: ``fail`` (refuse before scoring), ``replace`` it (BigQuery
    ``WRITE_TRUNCATE``) or ``append`` to it (tables only: DuckDB ``INSERT``, BigQuery
    ``WRITE_APPEND``). The output is never left half-written: it changes in one step at the
    end, or not at all."""
    threshold: Float | None = None
    """binary: the positive-class probability at or above which ``label`` is the positive class
    (empty: ``evaluate.threshold``, as the server uses)."""
    rows_per_shard: Int = Field(1_000_000, ge=1)
    """Folder output: rows per Parquet shard."""

    @model_validator(mode="after")
    def _check_fields(self) -> Self:
        for name, role in (("input", "input"), ("output", "output")):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_location(value, role, f"batch.{name}")
                except ConfigError as e:
                    _check(False, str(e))
        _check(
            not (self.model and self.alias),
            f"set one of batch.model ({self.model!r}) and batch.alias ({self.alias!r}), not both",
        )
        _check(
            self.model is None or "://" not in self.model or self.model.startswith("gs://"),
            f"batch.model={self.model!r}: give a local folder or a gs:// URI",
        )
        _check(
            self.alias is None or bool(re.fullmatch(r"[a-z][a-z0-9\-]{0,62}", self.alias)),
            f"batch.alias={self.alias!r}: use lowercase letters, digits and '-'",
        )
        _check(
            self.threshold is None or 0 < self.threshold < 1,
            f"batch.threshold={self.threshold} must be in (0, 1)",
        )
        keys = self.key_columns or []
        bad = [k for k in keys if not _COLUMN.fullmatch(k)]
        _check(not bad, f"batch.key_columns: {bad} are not column names")
        dup = sorted({k for k in keys if keys.count(k) > 1})
        _check(not dup, f"batch.key_columns lists {dup} twice")
        if self.output is not None and self.if_exists == "append":
            out = parse_location(self.output, "output", "batch.output")
            _check(
                out.kind in ("duckdb", "bigquery"),
                f"batch.if_exists=append works for duckdb: and bq: tables; batch.output="
                f"{self.output!r} is Parquet: write a new file or folder, or use replace",
            )
        return self

    def require_io(self) -> None:
        """ConfigError unless ``input`` and ``output`` are set (a run needs both)."""
        missing = [n for n in ("input", "output") if not getattr(self, n)]
        if missing:
            raise ConfigError(
                f"batch.{' and batch.'.join(missing)} must be set to score: e.g. "
                "batch.input: bq:my_dataset.flights_today, batch.output: bq:my_dataset.scores "
                "(or --input / --output)"
            )


def _absolute(path: str, base: str) -> str:
    if "://" in path or os.path.isabs(os.path.expanduser(path)):
        return os.path.expanduser(path)
    return os.path.abspath(os.path.join(base, path))


def with_absolute_paths(section: BatchConfig, base: str | os.PathLike | None = None) -> BatchConfig:
    """``section`` with its local paths (model folder, input and output files, a DuckDB file
    named in ``duckdb:FILE:TABLE``) made absolute against ``base`` (default: the current
    directory), as ``Config.with_absolute_paths`` does for the other sections."""
    base_s = str(base) if base else os.getcwd()
    update: dict[str, Any] = {}
    if section.model:
        update["model"] = _absolute(section.model, base_s)
    for name, role in (("input", "input"), ("output", "output")):
        value = getattr(section, name)
        if not value:
            continue
        loc = parse_location(value, role, f"batch.{name}")
        if loc.kind == "duckdb" and loc.database:
            update[name] = f"duckdb:{_absolute(loc.database, base_s)}:{loc.name}"
        elif loc.kind in ("parquet", "csv", "parquet_file", "parquet_folder"):
            update[name] = _absolute(loc.name, base_s)
    return section.model_copy(update=update) if update else section


def batch_section(cfg: Any) -> BatchConfig:
    """The ``batch`` section of a ``Config`` (the defaults where the config has none)."""
    section = getattr(cfg, "batch", None)
    return section if isinstance(section, BatchConfig) else BatchConfig()
