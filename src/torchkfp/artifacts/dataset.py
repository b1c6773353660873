"""The Dataset artifact: ``<split>/part-NNNNN.parquet`` for each split (``rows_per_shard`` rows
each but the last, in the order the query returned them, the split column dropped), plus
``metadata.json`` (rows per split, schema, fingerprint, source, query parameters, the split
strategy and its settings) and the ``_SUCCESS`` marker.

Ingest writes the shards as the rows stream in (:class:`ShardWriter`); readers take the shards
in name order (:func:`read_split`)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
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


class ShardWriter:
    """Writes the splits' Parquet shards while the rows stream in.

    :meth:`write` takes a split's next rows; every ``rows_per_shard`` rows of a split become
    ``<split>/part-NNNNN.parquet``, written by a pool of ``threads`` writer threads (Parquet
    encoding releases the GIL, so it overlaps the reading). At most ``max_pending`` shards wait
    for or are in a writer: beyond that :meth:`write` blocks, so memory stays at about
    ``(max_pending + len(splits)) x rows_per_shard`` rows whatever the total. :meth:`close`
    writes the rest and returns the rows per split; :meth:`abort` stops (the caller removes
    the folder). A writer's error is raised by the next :meth:`write` or :meth:`close`."""

    def __init__(
        self,
        out: Path,
        schema: pa.Schema,
        rows_per_shard: int,
        splits: tuple[str, ...] = SPLITS,
        threads: int = 2,
        max_pending: int | None = None,
    ):
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard={rows_per_shard} must be at least 1")
        self.out = Path(out)
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.rows = dict.fromkeys(splits, 0)
        self._buffers: dict[str, list[pa.RecordBatch]] = {s: [] for s in splits}
        self._buffered = dict.fromkeys(splits, 0)
        self._shards = dict.fromkeys(splits, 0)
        for split in splits:
            (self.out / split).mkdir()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="shard-writer")
        self._slots = threading.BoundedSemaphore(max_pending or threads + 1)
        self._futures: list[Future] = []

    def write(self, split: str, batch: pa.RecordBatch | pa.Table) -> None:
        """Add ``batch`` (the artifact's columns) to ``split``."""
        self._raise_failed()
        if not batch.num_rows:
            return
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        if not batch.schema.equals(self.schema):
            batch = batch.cast(self.schema)
        self._buffers[split].extend(batch.to_batches())
        self._buffered[split] += batch.num_rows
        while self._buffered[split] >= self.rows_per_shard:
            self._flush(split, self.rows_per_shard)

    def _flush(self, split: str, n: int) -> None:
        table = pa.Table.from_batches(self._buffers[split], schema=self.schema)
        shard, rest = table.slice(0, n), table.slice(n)
        self._buffers[split] = rest.to_batches() if rest.num_rows else []
        self._buffered[split] = rest.num_rows
        path = self.out / split / f"part-{self._shards[split]:05d}.parquet"
        self._shards[split] += 1
        self.rows[split] += shard.num_rows
        self._slots.acquire()
        try:
            future = self._pool.submit(pq.write_table, shard, path)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)
        self._raise_failed()

    def _raise_failed(self) -> None:
        done = [f for f in self._futures if f.done()]
        self._futures = [f for f in self._futures if not f.done()]
        for f in done:
            f.result()  # raises the writer's error

    def close(self) -> dict[str, int]:
        """Write what is buffered, wait for the writers; the rows written per split."""
        for split, n in self._buffered.items():
            if n:
                self._flush(split, n)
        try:
            for f in self._futures:
                f.result()
        finally:
            self._futures = []
            self._pool.shutdown(wait=True)
        return dict(self.rows)

    def abort(self) -> None:
        """Stop: drop what is buffered, cancel shards not started, wait for the running ones
        (their errors are dropped: the artifact is being discarded)."""
        self._buffers = {s: [] for s in self._buffers}
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._futures = []


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
            raise _unreadable(path, split, f, e) from None
    try:
        return pa.concat_tables(tables)
    except pa.ArrowException as e:
        raise ArtifactError(
            f"dataset {str(path)!r}: the {split} shards have different schemas ({e}); rerun "
            "ingestion"
        ) from None


def _unreadable(path: str | os.PathLike, split: str, f: Path, e: Exception) -> ArtifactError:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return ArtifactError(
        f"dataset {str(path)!r}: {split}/{f.name} cannot be read as Parquet "
        f"({type(e).__name__}: {first}); rerun ingestion"
    )


def split_layout(path: str | os.PathLike, split: str) -> tuple[pa.Schema, int]:
    """One split's schema (its first shard's) and rows (every shard's Parquet footer), without
    reading any row; a shard that is not readable Parquet is an ArtifactError naming it."""
    schema, rows = None, 0
    for f in split_files(path, split):
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowException, OSError) as e:
            raise _unreadable(path, split, f, e) from None
        schema = schema or pf.schema_arrow
        rows += pf.metadata.num_rows
    assert schema is not None  # split_files: at least one shard
    return schema, rows


def split_files(path: str | os.PathLike, split: str) -> list[Path]:
    """The Parquet shards of one split of a complete Dataset artifact, in name order."""
    require(path, KIND)
    files = sorted((Path(path) / split).glob("part-*.parquet"))
    if not files:
        raise ArtifactError(f"dataset {str(path)!r} has no {split} shards")
    return files


def iter_split(
    path: str | os.PathLike,
    split: str,
    columns: list[str] | None = None,
    batch_rows: int = 65_536,
):
    """One split's rows as Arrow record batches of at most ``batch_rows`` rows, shard by
    shard in name order (memory: one batch, whatever the split's size). A shard that is not
    readable Parquet, or lacks a column, is an ArtifactError naming it."""
    for f in split_files(path, split):
        try:
            pf = pq.ParquetFile(f)
            missing = [c for c in columns or [] if c not in pf.schema_arrow.names]
            if missing:
                raise ArtifactError(
                    f"dataset {str(path)!r}: {split}/{f.name} lacks column(s) {missing}; "
                    "re-run ingestion or fix data.*_features/label in the config"
                )
            yield from pf.iter_batches(batch_size=batch_rows, columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise _unreadable(path, split, f, e) from None
