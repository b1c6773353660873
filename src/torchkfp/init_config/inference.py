"""The inference of ``torchkfp init``: features, task kind and split from the profiled columns
(the rules are in :mod:`torchkfp.init_config`)."""

from __future__ import annotations

import datetime as dt
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchkfp.config import WarehouseConfig
from torchkfp.init_config.source import (
    _ID_NAME,
    _NAME,
    FEW_DISTINCT,
    ID_MIN_ROWS,
    SPLIT_VALUES,
    TEST_FRACTION,
    VALIDATION_FRACTION,
    Column,
    InitError,
    Source,
    _q,
    _query,
    file_source,
    numbers_as_text,
    profile,
    warehouse_source,
)


# ---- inference ------------------------------------------------------------------------------
@dataclass
class Inference:
    """What ``init`` decided, and why (the config's header lists it)."""

    source: str
    rows: int
    label: str
    task: str
    task_reason: str
    numeric: list[str]
    categorical: list[str]
    excluded: dict[str, str]
    """Column -> why it is not a feature."""
    split: dict[str, Any]
    split_reason: str
    name: str
    table_name: str
    table_file: str | None
    """The file behind ``table_name`` (``warehouse.tables``); None: a table of ``database``."""
    warehouse: dict[str, Any]
    """The warehouse section's settings that init sets."""
    notes: list[str] = field(default_factory=list)
    """Things to check before running (missing label values, ...)."""


def default_name(path: str | None = None, *, table: str | None = None) -> str:
    """A valid model / pipeline name (lowercase letters, digits and '-', a letter first) from
    a file (``data/Palmer Penguins.csv`` -> ``palmer-penguins``) or a warehouse table
    (``nycflights13.weather`` -> ``weather``)."""
    from torchkfp.warehouse import CSV_SUFFIXES, PARQUET_SUFFIXES

    if table is not None:
        base = table.split(".")[-1]
    else:
        base = Path(str(path).replace("*", "")).name
        for suf in sorted(PARQUET_SUFFIXES + CSV_SUFFIXES, key=len, reverse=True):
            if base.lower().endswith(suf):
                base = base[: -len(suf)]
                break
    name = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"model-{name}".rstrip("-")
    return name[:50].rstrip("-")


def _feature_kind(c: Column, rows: int) -> tuple[str | None, str]:
    """('numeric' | 'categorical' | None, the reason)."""
    if c.kind == "temporal":
        return None, f"{c.type.lower()}: not a feature (a temporal split column)"
    if c.kind == "other":
        return None, f"type {c.type} is not a supported feature type"
    if c.non_null == 0:
        return None, "empty (all values missing)"
    if c.distinct <= 1:
        return None, "constant (one value)"
    if c.kind in ("integer", "string") and _ID_NAME.fullmatch(c.name):
        return None, "an identifier (by its name)"
    if (
        c.kind == "integer"
        and c.distinct == c.non_null > FEW_DISTINCT
        and c.max is not None
        and int(c.max) - int(c.min) + 1 == c.distinct
    ):
        return None, "an identifier (unique consecutive integers, like a row number)"
    if c.kind == "string" and c.distinct == c.non_null >= ID_MIN_ROWS:
        return None, "an identifier (a different value on every row)"
    if c.kind == "float":
        return "numeric", c.type.lower()
    if c.kind == "integer":
        if c.distinct <= FEW_DISTINCT:
            return "categorical", f"{c.type.lower()}, {c.distinct} values (<= {FEW_DISTINCT})"
        return "numeric", f"{c.type.lower()}, {c.distinct} values"
    return "categorical", f"{c.type.lower()}, {c.distinct} values"


def _infer_task(c: Column, task: str | None, max_classes: int, src: Source) -> tuple[str, str]:
    what = f"{c.type.lower()} with {c.distinct} distinct value(s)"
    if c.kind in ("temporal", "other"):
        raise InitError(
            f"label {c.name!r} is a {c.type} column: pick a number, string or boolean column"
        )
    if c.distinct < 2:
        values = [r[0] for r in _query(src, f"SELECT DISTINCT {_q(c.name)} FROM {{src}} LIMIT 2")]
        raise InitError(
            f"label {c.name!r} has {c.distinct} distinct value(s) {values} in {src.description}: "
            "nothing to learn; pick another label column"
        )
    classes_ok = c.distinct <= max_classes
    if task is not None:  # told: check it fits
        if task == "binary" and c.distinct != 2:
            raise InitError(
                f"--task binary: label {c.name!r} has {c.distinct} distinct values, not 2"
                + ("; use --task multiclass" if classes_ok else "; use --task regression")
            )
        if task == "multiclass" and not classes_ok:
            raise InitError(
                f"--task multiclass: label {c.name!r} has {c.distinct} distinct values, more "
                f"than data.max_classes={max_classes}"
            )
        if task == "regression" and c.kind not in ("integer", "float"):
            raise InitError(
                f"--task regression: label {c.name!r} is {c.type}, not a number; use "
                "--task binary or multiclass"
            )
        return task, f"{what} (--task {task})"
    if c.distinct == 2:
        return "binary", f"{what}: two classes"
    if c.kind in ("bool", "string"):
        if not classes_ok:
            raise InitError(
                f"label {c.name!r} is {c.type} with {c.distinct} distinct values, more than "
                f"data.max_classes={max_classes} classes; pick another label column"
            )
        return "multiclass", f"{what}: classes"
    if c.kind == "integer" and c.distinct <= min(FEW_DISTINCT, max_classes):
        return "multiclass", f"{what} (<= {FEW_DISTINCT}): classes"
    return "regression", f"{what}: a number"


def _temporal_bounds(src: Source, column: str) -> tuple[str, str]:
    """validation_start and test_start at the 70 % and 80 % points of the rows in time (train
    and test never empty)."""
    rows = _query(
        src,
        f"SELECT CAST({_q(column)} AS DATE) AS d, count(*) FROM {{src}} "
        f"WHERE {_q(column)} IS NOT NULL GROUP BY d ORDER BY d",
    )
    if len(rows) < 3:
        raise InitError(
            f"split column {column!r} has {len(rows)} distinct date(s): a temporal split needs "
            "at least 3; use --split hash"
        )
    total = sum(n for _, n in rows)
    before, cum = [], 0
    for _, n in rows:
        before.append(cum / total)
        cum += n
    train_end = 1 - VALIDATION_FRACTION - TEST_FRACTION
    iv = next((i for i in range(1, len(rows)) if before[i] >= train_end), len(rows) - 2)
    iv = min(max(iv, 1), len(rows) - 2)
    it = next((i for i in range(iv + 1, len(rows)) if before[i] >= 1 - TEST_FRACTION), iv + 1)
    it = min(max(it, iv + 1), len(rows) - 1)

    def day(v: Any) -> str:
        return v.isoformat() if isinstance(v, dt.date) else str(v)[:10]

    return day(rows[iv][0]), day(rows[it][0])


def _infer_split(
    src: Source, strategy: str, column: str | None
) -> tuple[dict[str, Any], str, str | None]:
    """(split settings, reason, a column to keep out of the features)."""
    cols = src.columns
    if column is not None and column not in cols:
        raise InitError(f"--split-column {column!r} is not a column; columns: {list(cols)}")
    if strategy == "hash":
        split = {
            "strategy": "hash",
            "column": column,
            "validation_fraction": VALIDATION_FRACTION,
            "test_fraction": TEST_FRACTION,
        }
        why = f"hash of column {column!r}" if column else "hash of the whole row"
        return split, why, column
    if strategy == "temporal":
        temporal = [c.name for c in cols.values() if c.kind == "temporal"]
        if column is None:
            if not temporal:
                raise InitError(
                    f"--split temporal needs a date or timestamp column; {src.description} has "
                    "none (use --split hash)"
                )
            column = temporal[0]
        elif cols[column].kind != "temporal":
            raise InitError(
                f"--split-column {column!r} is {cols[column].type}, not a date or timestamp "
                f"column (those: {temporal})"
            )
        v, t = _temporal_bounds(src, column)
        split = {"strategy": "temporal", "column": column, "validation_start": v, "test_start": t}
        return split, f"temporal on {column!r}: ~70/10/20 % of the rows in time", column
    if strategy == "column":
        if column is None:
            raise InitError("--split column needs --split-column (train / validation / test)")
        values = [
            r[0]
            for r in _query(
                src,
                f"SELECT DISTINCT CAST({_q(column)} AS VARCHAR) FROM {{src}} LIMIT 10",
            )
        ]
        if "train" not in values or not set(values) <= set(SPLIT_VALUES):
            raise InitError(
                f"--split-column {column!r} must hold {list(SPLIT_VALUES)} (at least 'train'); "
                f"its values include {sorted(map(str, values))}"
            )
        return {"strategy": "column", "column": column}, f"given by column {column!r}", column
    raise InitError(f"--split {strategy!r}: use hash, temporal or column")


def infer(
    label: str,
    *,
    data: str | Path | None = None,
    table: str | None = None,
    warehouse: WarehouseConfig | None = None,
    task: str | None = None,
    split: str = "hash",
    split_column: str | None = None,
    name: str | None = None,
    max_classes: int = 100,
) -> Inference:
    """Profile ``data`` (a Parquet or CSV file) or ``table`` (of the DuckDB ``warehouse``) and
    infer the task, the features and the split for ``label``. Raises InitError."""
    if (data is None) == (table is None):
        raise InitError("give either a data file (--data) or a warehouse table (--table)")
    if task is not None and task not in ("binary", "multiclass", "regression"):
        raise InitError(f"--task {task!r}: use binary, multiclass or regression")
    if name is not None and not _NAME.fullmatch(name):
        raise InitError(f"--name {name!r}: use lowercase letters, digits and '-' (a letter first)")
    if data is not None:
        path = str(data) if glob.has_magic(str(data)) else str(Path(data).resolve())
        name = name or default_name(path)
        table_name = re.sub(r"[^A-Za-z0-9_]", "_", name)
        src = file_source(path, table_name)
        table_file: str | None = path
        wh_settings: dict[str, Any] = {
            "backend": "duckdb",
            "tables": {table_name: path},
            "table": table_name,
            "query_parameters": {},  # a whole table: no query, no parameters
        }
    else:
        wc = warehouse or WarehouseConfig()
        src = warehouse_source(wc, table)
        table_file = wc.tables.get(table)
        name = name or default_name(table=table)
        table_name = table
        wh_settings = {
            "backend": "duckdb",
            "duckdb_path": wc.duckdb_path,
            "source_dataset": wc.source_dataset,
            "tables": dict(wc.tables),
            "table": table,
            "query_parameters": {},
        }
    profile(src)
    cols = src.columns
    if src.rows == 0:
        raise InitError(f"{src.description} has no rows")
    if label not in cols:
        raise InitError(
            f"label column {label!r} is not in {src.description}; columns: {list(cols)}"
        )
    as_text = numbers_as_text(src)
    try:
        task_kind, task_reason = _infer_task(cols[label], task, max_classes, src)
    except InitError as e:
        if label in as_text:
            raise InitError(f"{e} ({_as_text_note(label, as_text[label])})") from None
        raise
    split_cfg, split_reason, split_col = _infer_split(src, split, split_column)

    numeric: list[str] = []
    categorical: list[str] = []
    excluded: dict[str, str] = {label: "the label"}
    if split_col is not None:
        excluded[split_col] = f"the split's column ({split_cfg['strategy']})"
    for c in cols.values():
        if c.name in excluded:
            continue
        kind, why = _feature_kind(c, src.rows)
        if kind == "numeric":
            numeric.append(c.name)
        elif kind == "categorical":
            categorical.append(c.name)
        else:
            excluded[c.name] = why
    if not numeric and not categorical:
        raise InitError(
            f"no usable feature column in {src.description} besides the label: "
            + "; ".join(f"{k}: {v}" for k, v in excluded.items() if k != label)
        )
    notes = []
    text_cols = [c for c in as_text if c != label]
    if text_cols:
        markers = sorted({m for c in text_cols for m in as_text[c]})
        notes.append(
            f"column(s) {text_cols} hold numbers but read as text because of {markers}, so "
            "they are categorical (or left out) as they are: "
            + _AS_TEXT_FIX.format(column=text_cols[0])
        )
    missing = src.rows - cols[label].non_null
    if missing:
        notes.append(
            f"label {label!r} is missing on {missing} of {src.rows} rows: those rows fail the "
            "run; filter them out (a query: warehouse.query_file) or fill them"
        )
    return Inference(
        source=src.description,
        rows=src.rows,
        label=label,
        task=task_kind,
        task_reason=task_reason,
        numeric=numeric,
        categorical=categorical,
        excluded={k: v for k, v in excluded.items() if k != label},
        split=split_cfg,
        split_reason=split_reason,
        name=name,
        table_name=table_name,
        table_file=table_file,
        warehouse=wh_settings,
        notes=notes,
    )


_AS_TEXT_FIX = (
    "save the file with empty cells for missing values (or as Parquet with nulls), or read it "
    "with a query (warehouse.query_file) that casts them: SAFE_CAST({column} AS FLOAT64)"
)


def _as_text_note(column: str, markers: list[str]) -> str:
    return f"column {column!r} holds numbers but reads as text because of {markers}: " + (
        _AS_TEXT_FIX.format(column=column)
    )
