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

from pathlib import Path

from torchkfp.config import WarehouseConfig
from torchkfp.init_config.inference import Inference, default_name, infer
from torchkfp.init_config.render import config_dict, render
from torchkfp.init_config.source import InitError, Source, file_source, profile

__all__ = [
    "InitError",
    "Inference",
    "Source",
    "config_dict",
    "default_name",
    "file_source",
    "infer",
    "init_config",
    "profile",
    "render",
]


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
