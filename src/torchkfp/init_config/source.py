"""Reading the source of ``torchkfp init``: a file's or a warehouse table's columns and a few
statistics per column, with DuckDB."""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchkfp.config import ConfigError, WarehouseConfig

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
