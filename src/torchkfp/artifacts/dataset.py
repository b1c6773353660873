"""The Dataset artifact: ``<split>/part-NNNNN.parquet`` for each split (rows sorted by all their
columns, the split column dropped), plus ``metadata.json`` (rows per split, schema, fingerprint,
source, query parameters, the split strategy and its settings) and the ``_SUCCESS`` marker."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from torchkfp.artifacts.folder import require
from torchkfp.errors import ArtifactError

KIND = "dataset"
SPLITS = ("train", "validation", "test")


def write_split(out: Path, split: str, table: pa.Table, rows_per_shard: int) -> int:
    """Write ``table`` as Parquet shards of ``rows_per_shard`` rows under ``out/split``."""
    (out / split).mkdir()
    for i, start in enumerate(range(0, table.num_rows, rows_per_shard)):
        pq.write_table(table.slice(start, rows_per_shard), out / split / f"part-{i:05d}.parquet")
    return table.num_rows


def read_split(path: str | os.PathLike, split: str, columns: list[str] | None = None) -> pa.Table:
    """One split of a complete Dataset artifact as an Arrow table."""
    require(path, KIND)
    files = sorted((Path(path) / split).glob("part-*.parquet"))
    if not files:
        raise ArtifactError(f"dataset {str(path)!r} has no {split} shards")
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f, columns=columns))
        except (pa.ArrowException, OSError) as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise ArtifactError(
                f"dataset {str(path)!r}: {split}/{f.name} cannot be read as Parquet "
                f"({type(e).__name__}: {first}); rerun ingestion"
            ) from None
    try:
        return pa.concat_tables(tables)
    except pa.ArrowException as e:
        raise ArtifactError(
            f"dataset {str(path)!r}: the {split} shards have different schemas ({e}); rerun "
            "ingestion"
        ) from None
