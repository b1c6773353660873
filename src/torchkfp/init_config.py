"""``torchkfp init``: a runnable config for your own table, inferred from a Parquet or CSV file
(or a table of the DuckDB warehouse).

The file's schema and a few statistics per column (rows, non-null values, distinct values,
integer range) are read with DuckDB, then:

Features (the label, the split's column and the hash key are never features):

- floats and decimals -> numeric;
- integers -> numeric, except integers with few distinct values (<= ``FEW_DISTINCT`` = 20:
  codes, months, counts of a handful of things) -> categorical;
- strings and booleans -> categorical;
- left out: identifiers (a name ``id``, ``*_id``, ``*Id``; an integer column whose values are
  unique and a contiguous range, like a row number; a string column unique on every row of
  at least ``ID_MIN_ROWS`` rows), constant or empty columns, and types that are no feature
  (time of day, intervals, blobs, lists, structs);
- dates and timestamps are not features: the first one is offered as the temporal split
  column (``--split temporal``).

Task kind from the label (``--task`` overrides, and is checked):

- booleans and strings: ``binary`` with exactly 2 values, ``multiclass`` with 3 ..
  ``max_classes``;
- numbers with exactly 2 values -> ``binary``; integers with 3 .. ``FEW_DISTINCT`` values ->
  ``multiclass``; other numbers (floats, integers with many values) -> ``regression``;
- a label with fewer than 2 values, or of a date/other type, is an error.

Split: ``hash`` of the whole row (validation 10 %, test 20 %) unless told otherwise;
``--split hash --split-column KEY`` hashes a key column (all rows of one key land in one split);
``--split temporal`` uses ``--split-column`` or the first date/timestamp column, with boundaries
at the 70 % and 80 % points of the rows in time; ``--split column`` names a column holding
``train`` / ``validation`` / ``test``.

The written config reads the file as a DuckDB table (``warehouse.tables`` + ``warehouse.table``,
no query file); every other setting is at its default. This module never imports kfp.
"""

from __future__ import annotations

import datetime as dt
import glob
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from torchkfp.config import Config, ConfigError, WarehouseConfig

FEW_DISTINCT = 20
"""Integer columns (features and labels) with at most this many distinct values are treated
as categories (classes); more -> numbers."""
ID_MIN_ROWS = 20
"""A string column unique on every row counts as an identifier from this many rows on."""
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.2
SPLIT_VALUES = ("train", "validation", "test")

_NAME = re.compile(r"[a-z][a-z0-9\-]{0,62}")
_ID_NAME = re.compile(r"(?:.*[_\W])?(?:id|Id|ID|uuid|UUID)|.*[a-z0-9](?:Id|ID)")
"""Identifier names: ``id``, ``user_id``, ``USER-ID``, ``userId``, ``uuid`` (not ``humid``)."""


class InitError(ValueError):
    """The file, the label or an option cannot give a config (one line, for ``error:``)."""


# ---- reading the source ---------------------------------------------------------------------
@dataclass
class Column:
    name: str
    type: str
    """DuckDB's type name (``BIGINT``, ``DOUBLE``, ``VARCHAR``, ``DATE``, ...)."""
    kind: str
    """``integer`` | ``float`` | ``string`` | ``bool`` | ``temporal`` | ``other``."""
    non_null: int = 0
    distinct: int = 0
    min: Any = None
    max: Any = None


@dataclass
class Source:
    """Where the rows come from: read through the project's DuckDB warehouse, exactly as a run
    reads ``warehouse.table`` (same CSV/Parquet readers, so the same column types)."""

    description: str
    """For messages: the file (or the warehouse table)."""
    warehouse: Any
    """A :class:`torchkfp.warehouse.DuckDBWarehouse` holding the table."""
    relation: str
    """The FROM clause (DuckDB SQL) that reads the table."""
    rows: int = 0
    columns: dict[str, Column] = field(default_factory=dict)


def _kind(duck_type: str) -> str:
    t = duck_type.upper()
    if t in ("BOOLEAN", "BOOL"):
        return "bool"
    if re.fullmatch(r"U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|INT\d*|UHUGEINT", t):
        return "integer"
    if t in ("FLOAT", "DOUBLE", "REAL") or t.startswith("DECIMAL"):
        return "float"
    if t in ("VARCHAR", "UUID") or t.startswith("ENUM"):
        return "string"
    if t == "DATE" or t.startswith("TIMESTAMP"):
        return "temporal"
    return "other"  # TIME, INTERVAL, BLOB, LIST, STRUCT, MAP, ...


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def file_kind(path: str) -> str:
    """``parquet`` or ``csv`` from the file name (as the warehouse decides it); InitError for
    anything else."""
    from torchkfp.warehouse import CSV_SUFFIXES, PARQUET_SUFFIXES

    low = path.lower()
    if low.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if low.endswith(CSV_SUFFIXES):
        return "csv"
    suffix = "".join(Path(path).suffixes) or "(none)"
    raise InitError(
        f"{path}: unsupported file type {suffix}; use a Parquet (.parquet) or CSV (.csv) file"
    )


def file_source(path: str, table_name: str) -> Source:
    """The rows of a Parquet or CSV file (or a glob of them), registered as ``table_name`` of
    an in-memory DuckDB warehouse."""
    from torchkfp.warehouse import DuckDBWarehouse

    file_kind(path)
    if glob.has_magic(path):
        if not glob.glob(path, recursive=True):
            raise InitError(f"data file(s) {path!r}: no file matches")
    elif not Path(path).is_file():
        raise InitError(f"data file {path!r} does not exist")
    wh = DuckDBWarehouse(None, tables={table_name: path})
    return Source(description=path, warehouse=wh, relation=_q(table_name))


def warehouse_source(wc: WarehouseConfig, table: str) -> Source:
    """The rows of ``table`` in the configured DuckDB warehouse, read as a run reads
    ``warehouse.table``: a name from ``warehouse.tables`` (its file, with the same reader), or
    a table of the database file (``table`` resolved by the same SQL)."""
    from torchkfp.warehouse import DuckDBWarehouse, table_sql

    if wc.backend != "duckdb":
        raise InitError("--table reads the DuckDB warehouse; warehouse.backend is not 'duckdb'")
    if table in wc.tables:
        src = file_source(wc.tables[table], table)
        src.description = f"table {table!r} ({wc.tables[table]})"
        return src
    if not wc.duckdb_path:
        raise InitError(
            f"table {table!r} is not in warehouse.tables ({sorted(wc.tables)}) and the "
            "warehouse has no database file (warehouse.duckdb_path)"
        )
    # only the database: the other tables' files play no part in reading this one
    wh = DuckDBWarehouse(wc.duckdb_path, schema=wc.source_dataset.split(".")[-1])
    try:
        sql = wh.transpile(table_sql(table))
    except ConfigError as e:
        raise InitError(str(e)) from None
    return Source(f"table {table!r} of {wc.duckdb_path}", wh, f"({sql}) AS t")


def _connect(src: Source) -> Any:
    try:
        return src.warehouse.connect()
    except ConfigError as e:
        raise InitError(str(e)) from None


def _query(src: Source, sql: str) -> list[tuple]:
    """Run DuckDB ``sql`` with ``{src}`` standing for the table."""
    import duckdb

    con = _connect(src)
    try:
        return con.execute(sql.replace("{src}", src.relation)).fetchall()
    except duckdb.Error as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InitError(f"cannot read {src.description}: {first}") from None
    finally:
        con.close()


def profile(src: Source) -> Source:
    """Fill ``src.rows`` and ``src.columns`` (type and statistics of every column)."""
    described = _query(src, "DESCRIBE SELECT * FROM {src}")
    cols = [Column(name=r[0], type=str(r[1]), kind=_kind(str(r[1]))) for r in described]
    exprs = ["count(*)"]
    for c in cols:
        exprs += [f"count({_q(c.name)})"]
        if c.kind == "other":
            exprs += ["NULL", "NULL", "NULL"]
            continue
        exprs += [f"count(DISTINCT {_q(c.name)})"]
        if c.kind == "integer":
            exprs += [f"min({_q(c.name)})", f"max({_q(c.name)})"]
        else:
            exprs += ["NULL", "NULL"]
    [row] = _query(src, f"SELECT {', '.join(exprs)} FROM {{src}}")
    src.rows = int(row[0])
    for i, c in enumerate(cols):
        non_null, distinct, lo, hi = row[1 + 4 * i : 5 + 4 * i]
        c.non_null, c.distinct, c.min, c.max = int(non_null), int(distinct or 0), lo, hi
    src.columns = {c.name: c for c in cols}
    return src


_NA_TOKENS = ("NA", "N/A", "NaN", "nan", "null", "NULL", "None", "-", "?", ".")


def numbers_as_text(src: Source) -> dict[str, list[str]]:
    """Text columns that are numbers apart from markers like ``NA``: column -> those markers
    (a CSV's missing values that DuckDB reads as text; the column then is categorical)."""
    out = {}
    for c in src.columns.values():
        if c.kind != "string" or c.non_null == 0:
            continue
        rows = _query(
            src,
            f"SELECT DISTINCT {_q(c.name)} FROM {{src}} WHERE {_q(c.name)} IS NOT NULL "
            f"AND TRY_CAST({_q(c.name)} AS DOUBLE) IS NULL LIMIT 4",
        )
        markers = [r[0] for r in rows]
        if markers and len(markers) <= 3 and all(m.strip() in _NA_TOKENS for m in markers):
            numeric = _query(src, f"SELECT count(TRY_CAST({_q(c.name)} AS DOUBLE)) FROM {{src}}")[
                0
            ][0]
            if numeric:
                out[c.name] = markers
    return out


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


# ---- the config -----------------------------------------------------------------------------
def _in_memory_warehouse_ok() -> bool:
    """Whether this version's config takes ``warehouse.duckdb_path: null`` (an in-memory
    DuckDB holding only ``warehouse.tables``)."""
    try:
        Config.from_dict(
            {"warehouse": {"duckdb_path": None, "query_file": None, "table": "t"}}
        ).with_absolute_paths()
    except (ConfigError, TypeError, AttributeError):
        return False
    return True


def config_dict(inf: Inference, config_dir: str | Path | None = None) -> dict[str, Any]:
    """The config's settings (validated): the inferred ones, every other one at its default.
    ``config_dir``: where the config is written; only used where this version's config cannot
    take an in-memory DuckDB (``duckdb_path: null``): then the warehouse is the default file
    under it (``<config_dir>/.data/warehouse.duckdb``, created on first use)."""
    wh = {"query_file": None, **inf.warehouse}
    if "duckdb_path" not in wh:
        if _in_memory_warehouse_ok():
            wh["duckdb_path"] = None
        else:
            base = Path(config_dir or ".").resolve()
            wh["duckdb_path"] = str(base / ".data" / "warehouse.duckdb")
    raw = {
        "warehouse": wh,
        "data": {
            "label": inf.label,
            "task": inf.task,
            "numeric_features": inf.numeric,
            "categorical_features": inf.categorical,
        },
        "split": inf.split,
        "deploy": {"model_name": inf.name},
        "run": {"pipeline_name": f"torchkfp-{inf.name}"},
    }
    try:
        cfg = Config.from_dict(raw)
    except ConfigError as e:
        raise InitError(f"the inferred config is not valid: {e}") from None
    return cfg.to_dict()


def _first_sentence(doc: str | None) -> str:
    text = " ".join((doc or "").split())
    m = re.search(r"(?<![a-z]\.[a-z])(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    return text[: m.start() + 1] if m else text


def _comment(text: str, indent: str) -> list[str]:
    return [
        f"{indent}# {ln}" for ln in textwrap.wrap(text, width=96 - len(indent) - 2) if ln.strip()
    ]


def _yaml_value(key: str, value: Any, indent: str) -> list[str]:
    # scalars: ``key: value``; lists and mappings of scalars in flow style: ``key: [a, b]``
    flow = None if isinstance(value, list | dict) else False
    text = yaml.safe_dump(
        {key: value}, default_flow_style=flow, sort_keys=False, width=96 - len(indent)
    )
    return [f"{indent}{ln}" for ln in text.rstrip("\n").splitlines()]


def render(inf: Inference, config_dir: str | Path | None = None) -> str:
    """The config file: a header saying what was inferred and why, then every section and
    setting with its meaning as a comment."""
    values = config_dict(inf, config_dir)
    set_by_init = {
        "warehouse": set(inf.warehouse) | {"query_file", "duckdb_path"},
        "data": {"label", "task", "numeric_features", "categorical_features"},
        "split": set(inf.split),
        "deploy": {"model_name"},
        "run": {"pipeline_name"},
    }
    lines = [
        f"# Written by `torchkfp init` from {inf.source} ({inf.rows} rows).",
        "# Run it:  torchkfp run -c THIS_FILE      (check the inferred settings first)",
        "#",
        f"# label:       {inf.label} -> task {inf.task} ({inf.task_reason})",
        f"# split:       {inf.split_reason}",
    ]
    lines += _comment("numeric:     " + (", ".join(inf.numeric) or "-"), "")
    lines += _comment("categorical: " + (", ".join(inf.categorical) or "-"), "")
    if inf.excluded:
        lines.append("# not features:")
        for col, why in inf.excluded.items():
            lines += _comment(f"  {col}: {why}", "")
    for note in inf.notes:
        lines += _comment(f"NOTE: {note}", "")
    lines += _comment(
        f"Rules: floats -> numeric; integers -> numeric, but categorical with <= {FEW_DISTINCT} "
        "values; strings, booleans -> categorical; dates, identifiers, constants -> left out. "
        "Edit the lists as you see fit; [init] marks the settings init chose.",
        "",
    )
    for section, info in Config.model_fields.items():
        model = info.annotation
        lines += ["", *_comment(f"---- {section}: {_first_sentence(info.description)}", "")]
        lines.append(f"{section}:")
        for fname, finfo in model.model_fields.items():
            if fname not in values[section]:
                continue
            doc = _first_sentence(finfo.description)
            if fname in set_by_init.get(section, ()):
                doc = f"[init] {doc}"
            lines += _comment(doc, "  ")
            lines += _yaml_value(fname, values[section][fname], "  ")
    return "\n".join(lines) + "\n"


def init_config(
    label: str,
    *,
    data: str | Path | None = None,
    table: str | None = None,
    warehouse: WarehouseConfig | None = None,
    task: str | None = None,
    split: str = "hash",
    split_column: str | None = None,
    name: str | None = None,
    config_dir: str | Path | None = None,
) -> str:
    """The text of a config that ``torchkfp run -c`` runs as is (see the module docstring for
    the inference rules). Raises InitError."""
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
    return render(inf, config_dir)
