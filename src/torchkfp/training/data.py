"""What one DDP rank reads of the features: its share of the training split, and its rows of
the validation split, in memory bounded by ``train.memory_budget_mb``.

**The share.** The training split's rows are cut into blocks of :data:`BLOCK_ROWS` rows; rank
``r`` of ``W`` owns blocks ``r, r + W, r + 2W, ...`` (so every rank sees rows from the whole
table: rows arrive in query order, e.g. by date); the last, incomplete round of blocks is cut
into ``W`` contiguous pieces of nearly equal size. So the shares are disjoint, cover every row,
and differ by at most one row; every rank trains ``per_rank = ceil(N / W)`` rows an epoch (the
same number of steps, as DDP needs), a short share padded by wrapping (as
``DistributedSampler`` pads). A rank maps the split's files (shapes and dtypes checked) and
reads and checks only the rows of its share (:meth:`SplitArrays.check
<torchkfp.artifacts.features.SplitArrays.check>`), never another rank's; it reads them with
plain file reads into its own buffers (:class:`RowReader`), so what it has read does not stay
resident in its memory as mapped pages.

**In memory** (:class:`InMemoryShare`) when ``per_rank`` rows of x_num, x_cat and y fit in
``train.memory_budget_mb``: the share is copied in (category codes stay int32, cast to int64
per batch) and shuffled whole every epoch with a seeded permutation. With one process this is
exactly the order training always had: ``torch.randperm(N)`` from a generator seeded
``seed * 1_000_003 + epoch``.

**Streamed** (:class:`StreamingShare`) beyond the budget: every epoch the share's pieces (a
block cut into ``shuffle_buffer_rows / 8`` rows at most, so a buffer mixes at least 8 pieces
from anywhere in the share) are read from the split's files in a seeded shuffled order,
through a shuffle buffer of ``train.shuffle_buffer_rows`` rows: fill it, permute it, emit
batches from it, carry the rows short of a batch into the next buffer. Memory: about one buffer,
whatever the share's size.

Both orders are pure functions of ``(seed, epoch, rank)`` and the settings (exact resume);
:func:`data_order` is what a checkpoint records of them.

**Validation.** Rank ``r`` holds validation rows ``r, r + W, ...`` (the ROC AUC gathers them
back in that order), read in chunks and checked, only those rows kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torchkfp.artifacts import features as features_artifact
from torchkfp.artifacts.features import SplitArrays
from torchkfp.errors import ArtifactError, TrainingError

BLOCK_ROWS = 65_536
"""Rows of one block of the training split: the unit a rank's share is made of."""
PIECES_PER_BUFFER = 8
"""Streaming: a shuffle buffer holds at least this many pieces of the share."""
CHUNK_ROWS = 65_536
"""Rows read (and checked) at a time where a whole range is not kept."""
MIB = 1 << 20

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""x_num (float32), x_cat (int64), y of one training batch."""


# ---- reading rows ----------------------------------------------------------------------
class RowReader:
    """Reads rows of one split's arrays into buffers the caller owns, with plain file reads
    (``preadv``) where the array is a whole ``.npy`` file mapped by :func:`open_split
    <torchkfp.artifacts.features.open_split>`: no page of the file is mapped into the process,
    so its resident memory is its buffers, not the files it has read (a copy out of the
    memory map would leave every page it touched resident). Other arrays (format 1, loaded):
    copied by slicing."""

    def __init__(self, arrays: SplitArrays):
        self.arrays = arrays
        self.files: dict[str, tuple[int, int, int]] = {}  # name -> (fd, offset, row bytes)
        for name in features_artifact.ARRAYS:
            a = getattr(arrays, name)
            if not (isinstance(a, np.memmap) and a.flags.c_contiguous and a.filename):
                continue
            try:
                if a.offset + a.nbytes != os.path.getsize(a.filename):
                    continue  # not the whole file: read through the map
                fd = os.open(a.filename, os.O_RDONLY)
            except OSError:
                continue
            weakref.finalize(self, os.close, fd)
            self.files[name] = (fd, a.offset, a.nbytes // max(1, a.shape[0]))

    def read(self, name: str, start: int, stop: int, out: np.ndarray) -> None:
        """Rows ``[start, stop)`` of array ``name`` into ``out`` (C-contiguous, their size)."""
        if name not in self.files or not out.flags.c_contiguous:
            out[...] = getattr(self.arrays, name)[start:stop]
            return
        fd, offset, row_bytes = self.files[name]
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos, want = offset + start * row_bytes, (stop - start) * row_bytes
        done = 0
        while done < want:
            n = os.preadv(fd, [view[done:want]], pos + done)
            if n <= 0:
                raise ArtifactError(
                    f"{self.arrays.what}/{name}.npy ended while reading rows {start}..{stop}; "
                    "rerun preprocessing"
                )
            done += n

    def rows(self, start: int, stop: int, out: dict[str, np.ndarray] | None = None):
        """Rows ``[start, stop)`` of every array, into ``out`` (arrays of at least that many
        rows, filled from their start) or new arrays; returns the filled rows."""
        got = {}
        for name in features_artifact.ARRAYS:
            a = getattr(self.arrays, name)
            dst = (
                out[name][: stop - start]
                if out is not None
                else np.empty((stop - start, *a.shape[1:]), dtype=a.dtype)
            )
            self.read(name, start, stop, dst)
            got[name] = dst
        return got

    def check(self, start: int, stop: int, buffer: dict[str, np.ndarray] | None = None) -> None:
        """Read rows ``[start, stop)`` in chunks and check their values (an ArtifactError
        names the file and the problem)."""
        for a in range(start, stop, CHUNK_ROWS):
            b = min(stop, a + CHUNK_ROWS)
            dataclasses.replace(self.arrays, **self.rows(a, b, buffer)).check()


def _buffers(arrays: SplitArrays, rows: int) -> dict[str, np.ndarray]:
    return {
        k: np.empty((rows, *getattr(arrays, k).shape[1:]), dtype=getattr(arrays, k).dtype)
        for k in features_artifact.ARRAYS
    }


# ---- the share ---------------------------------------------------------------------------
def share_ranges(
    n: int, rank: int, world: int, block_rows: int = BLOCK_ROWS
) -> list[tuple[int, int]]:
    """Rank ``rank``'s rows of an ``n``-row split, as ``[start, stop)`` ranges in row order
    (module docstring): blocks ``rank, rank + world, ...``, then its piece of the last,
    incomplete round. Adjacent ranges are merged."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    round_rows = block_rows * world
    full = n // round_rows
    starts = [k * round_rows + rank * block_rows for k in range(full)]
    ranges = [(a, a + block_rows) for a in starts]
    tail = full * round_rows
    base, extra = divmod(n - tail, world)
    start = tail + rank * base + min(rank, extra)
    size = base + (1 if rank < extra else 0)
    if size:
        ranges.append((start, start + size))
    merged: list[tuple[int, int]] = []
    for a, b in ranges:
        if merged and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def share_indices(n: int, rank: int, world: int, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    """The rows of :func:`share_ranges` as one int64 array (for tests and small splits)."""
    parts = [np.arange(a, b, dtype=np.int64) for a, b in share_ranges(n, rank, world, block_rows)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def rows_per_rank(n: int, world: int) -> int:
    """Rows every rank trains an epoch: its share, padded to ``ceil(n / world)``."""
    return math.ceil(n / world)


def order_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a rank's data order in an epoch. Rank 0 keeps the seed training always
    used, ``seed * 1_000_003 + epoch`` (so one process shuffles exactly as before); other ranks
    get a hash of ``(seed, epoch, rank)``, so ranks do not shuffle in lockstep."""
    if rank == 0:
        return seed * 1_000_003 + epoch
    digest = hashlib.sha256(f"torchkfp-order:{seed}:{epoch}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(order_seed(seed, epoch, rank))


def _numpy_rng(seed: int, epoch: int, rank: int) -> np.random.Generator:
    digest = hashlib.sha256(f"torchkfp-stream:{seed}:{epoch}:{rank}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _as_batch(x_num, x_cat, y, device: torch.device) -> Batch:
    return (
        torch.as_tensor(x_num).to(device),
        torch.as_tensor(x_cat).to(device).long(),
        torch.as_tensor(y).to(device),
    )


def _row_bytes(arrays: Any) -> int:
    """Bytes of one row of x_num, x_cat and y."""
    return sum(
        int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize
        for a in (arrays.x_num, arrays.x_cat, arrays.y)
    )


def _check_empty(n: int, world: int) -> None:
    if n == 0:
        raise TrainingError("the features' train split has no rows: nothing to train on")
    if n < world:
        raise TrainingError(
            f"the features' train split has {n} rows, fewer than the {world} training "
            "processes: lower train.nproc_per_node (or the replica count), or train on more rows"
        )


class InMemoryShare:
    """A rank's share held in memory (tensors on the training device), shuffled whole each
    epoch."""

    mode = "memory"

    def __init__(
        self, x_num: torch.Tensor, x_cat: torch.Tensor, y: torch.Tensor, per_rank: int, seed: int
    ):
        self.x_num, self.x_cat, self.y = x_num, x_cat, y
        self.rows, self.per_rank, self.seed = int(y.shape[0]), per_rank, seed
        self.num_numeric = int(x_num.shape[1])
        self.nbytes = sum(t.element_size() * t.numel() for t in (x_num, x_cat, y))
        """Bytes held: the share."""
        self.data_bytes = per_rank * self.nbytes // max(1, self.rows)
        """Bytes of ``per_rank`` rows (what the budget is compared with)."""

    @classmethod
    def from_split(cls, tensors: dict[str, torch.Tensor], rank: int, world: int, seed: int):
        """A rank's share of a whole split already in memory (tensors ``x_num``, ``x_cat``,
        ``y``): no copy with one process."""
        n = int(tensors["y"].shape[0])
        _check_empty(n, world)
        ranges = share_ranges(n, rank, world)
        if len(ranges) == 1:  # one process: the split itself
            pick = {k: v[ranges[0][0] : ranges[0][1]] for k, v in tensors.items()}
        else:
            rows = torch.from_numpy(share_indices(n, rank, world))
            pick = {k: v[rows] for k, v in tensors.items()}
        return cls(pick["x_num"], pick["x_cat"], pick["y"], rows_per_rank(n, world), seed)

    def to(self, device: torch.device) -> InMemoryShare:
        self.x_num, self.x_cat, self.y = (t.to(device) for t in (self.x_num, self.x_cat, self.y))
        return self

    def order(self, epoch: int, rank: int) -> torch.Tensor:
        """This epoch's rows (positions in the share): a seeded permutation, padded by
        wrapping to ``per_rank`` rows."""
        if self.rows == 0:
            raise TrainingError("a training process has no rows to train on")
        perm = torch.randperm(self.rows, generator=_generator(self.seed, epoch, rank))
        pad = self.per_rank - self.rows
        while pad > 0:  # at most one row with a split's shares; any count for a given share
            perm = torch.cat([perm, perm[:pad]])
            pad = self.per_rank - perm.shape[0]
        return perm[: self.per_rank]

    def batches(self, epoch: int, rank: int, batch_size: int, device: torch.device):
        idx = self.order(epoch, rank).to(self.x_num.device)
        for start in range(0, idx.shape[0], batch_size):
            b = idx[start : start + batch_size]
            yield self.x_num[b], self.x_cat[b].long(), self.y[b]


class StreamingShare:
    """A rank's share read from the split's files each epoch: pieces in a seeded shuffled
    order through a shuffle buffer (module docstring). Holds about one buffer."""

    mode = "stream"

    def __init__(
        self,
        arrays: SplitArrays,
        ranges: list[tuple[int, int]],
        per_rank: int,
        seed: int,
        buffer_rows: int,
        block_rows: int = BLOCK_ROWS,
    ):
        self.arrays, self.per_rank, self.seed = arrays, per_rank, seed
        self.reader = RowReader(arrays)
        self.buffer_rows = int(buffer_rows)
        self.piece_rows = max(1, min(block_rows, self.buffer_rows // PIECES_PER_BUFFER))
        self.pieces = [
            (a, min(a + self.piece_rows, hi))
            for lo, hi in ranges
            for a in range(lo, hi, self.piece_rows)
        ]
        self.rows = sum(b - a for a, b in ranges)
        self.num_numeric = int(arrays.x_num.shape[1])
        self.nbytes = (self.buffer_rows + self.piece_rows) * _row_bytes(arrays)
        """Bytes held: the shuffle buffer (its arrays are filled a piece at a time)."""
        self.data_bytes = per_rank * _row_bytes(arrays)
        """Bytes of ``per_rank`` rows (what the budget is compared with)."""

    def _buffers(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, ...]]:
        """The epoch's shuffle buffers, each (x_num, x_cat, y, permutation); the arrays are
        reused from one buffer to the next."""
        cap = self.buffer_rows + self.piece_rows
        held = _buffers(self.arrays, cap)
        buf = [held[k] for k in features_artifact.ARRAYS]
        filled = 0
        for i in rng.permutation(len(self.pieces)):
            lo, hi = self.pieces[i]
            for name in features_artifact.ARRAYS:
                self.reader.read(name, lo, hi, held[name][filled : filled + hi - lo])
            filled += hi - lo
            if filled >= self.buffer_rows:
                yield (*buf, rng.permutation(filled))
                filled = 0
        if filled:
            yield (*buf, rng.permutation(filled))

    def row_chunks(self, epoch: int, rank: int, batch_size: int):
        """The epoch's rows as numpy (x_num, x_cat, y) chunks of ``batch_size`` rows (the last
        may be shorter), ``per_rank`` rows in all: the share once, then the padding (the
        epoch's first rows again)."""
        rng = _numpy_rng(self.seed, epoch, rank)
        carry: list[tuple[np.ndarray, ...]] = []  # rows short of a batch, in order
        carried = 0
        head: list[tuple[np.ndarray, ...]] = []  # the epoch's first rows, for the padding
        pad = self.per_rank - self.rows
        headed = 0
        for x_num, x_cat, y, perm in self._buffers(rng):
            pos = 0
            while pos < len(perm):
                take = perm[pos : pos + batch_size - carried]
                rows = (x_num[take], x_cat[take], y[take])  # gathered copies
                pos += len(take)
                if headed < pad:
                    k = min(pad - headed, len(take))
                    head.append(tuple(r[:k] for r in rows))
                    headed += k
                carry.append(rows)
                carried += len(take)
                if carried == batch_size:
                    yield _concat(carry)
                    carry, carried = [], 0
        while pad > 0:  # wrap: the epoch's first rows again (a share shorter than per_rank)
            rows = _concat(head) if head else None
            if rows is None or len(rows[2]) == 0:
                raise TrainingError("a training process has no rows to pad its share with")
            k = min(pad, len(rows[2]))
            carry.append(tuple(r[:k] for r in rows))
            carried += k
            pad -= k
        if carried:
            rows = _concat(carry)
            for start in range(0, carried, batch_size):
                yield tuple(r[start : start + batch_size] for r in rows)

    def batches(self, epoch: int, rank: int, batch_size: int, device: torch.device):
        for x_num, x_cat, y in self.row_chunks(epoch, rank, batch_size):
            yield _as_batch(x_num, x_cat, y, device)


def _concat(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate(cols) for cols in zip(*parts, strict=True))


def rows_view(arrays: SplitArrays, sel: slice | np.ndarray) -> SplitArrays:
    """The rows ``sel`` of ``arrays`` (a view of the mapped files where ``sel`` is a slice, a
    copy of those rows where it is an index array), to check (``check()`` with no rows: in
    chunks, never an index of the whole split) or copy (``tensors()``)."""
    return dataclasses.replace(
        arrays, **{k: getattr(arrays, k)[sel] for k in features_artifact.ARRAYS}
    )


def train_share(
    features: str | os.PathLike,
    rank: int,
    world: int,
    seed: int,
    memory_budget_mb: int,
    shuffle_buffer_rows: int,
    device: torch.device,
    block_rows: int = BLOCK_ROWS,
) -> InMemoryShare | StreamingShare:
    """Rank ``rank``'s share of the training split, its rows checked: in memory (on
    ``device``) when ``ceil(N / world)`` rows fit ``memory_budget_mb``, else streamed."""
    arrays = features_artifact.open_split(features, "train", check=False)
    n = arrays.rows
    _check_empty(n, world)
    ranges = share_ranges(n, rank, world, block_rows)
    per_rank = rows_per_rank(n, world)
    reader = RowReader(arrays)
    if per_rank * _row_bytes(arrays) <= memory_budget_mb * MIB:
        held = _buffers(arrays, sum(b - a for a, b in ranges))
        at = 0
        for a, b in ranges:
            for k in features_artifact.ARRAYS:
                reader.read(k, a, b, held[k][at : at + b - a])
            at += b - a
        dataclasses.replace(arrays, **held).check()  # the copy: each row read once
        share = InMemoryShare(
            *(torch.from_numpy(held[k]) for k in features_artifact.ARRAYS), per_rank, seed
        )
        return share.to(device)
    chunk = _buffers(arrays, CHUNK_ROWS)
    for a, b in ranges:  # chunk by chunk: memory stays bounded
        reader.check(a, b, chunk)
    return StreamingShare(arrays, ranges, per_rank, seed, shuffle_buffer_rows, block_rows)


def describe(share: InMemoryShare | StreamingShare, budget_mb: int, world: int) -> str:
    """One line for the training log: rows an epoch, in memory or streamed, and why."""
    mib = share.data_bytes / MIB
    if isinstance(share, InMemoryShare):
        how = f"in memory ({mib:.1f} MiB <= train.memory_budget_mb={budget_mb})"
    else:
        how = (
            f"streamed from the features ({mib:.1f} MiB > train.memory_budget_mb={budget_mb}; "
            f"shuffle buffer of {share.buffer_rows} rows, {share.nbytes / MIB:.1f} MiB)"
        )
    return f"each of {world} process(es) trains {share.per_rank} rows an epoch, {how}"


def data_order(share: InMemoryShare | StreamingShare) -> dict[str, Any] | None:
    """What a checkpoint records of how a share is ordered, beyond the seed: None in memory
    (the order of every checkpoint before streaming existed), the buffer and piece sizes when
    streamed (they shape the order)."""
    if isinstance(share, StreamingShare):
        return {
            "mode": "stream",
            "shuffle_buffer_rows": share.buffer_rows,
            "piece_rows": share.piece_rows,
        }
    return None


# ---- validation --------------------------------------------------------------------------
@dataclass
class ValidationShare:
    """Rank ``r``'s validation rows ``r, r + world, ...`` (tensors; ``x_cat`` as stored) and
    the split's row count."""

    tensors: dict[str, torch.Tensor]
    rows: int

    @classmethod
    def from_split(cls, tensors: dict[str, torch.Tensor], rank: int, world: int):
        return cls({k: v[rank::world] for k, v in tensors.items()}, int(tensors["y"].shape[0]))


def validation_share(features: str | os.PathLike, rank: int, world: int) -> ValidationShare:
    """This rank's validation rows ``rank, rank + world, ...``, read in chunks (file reads,
    not the memory map) and checked; only they are kept."""
    arrays = features_artifact.open_split(features, "validation", check=False)
    n = arrays.rows
    reader = RowReader(arrays)
    mine = _buffers(arrays, len(range(rank, n, world)))
    step = CHUNK_ROWS * world  # a multiple of world: every chunk starts at a rank-0 row
    chunk = _buffers(arrays, min(step, n))
    at = 0
    for a in range(0, n, step):
        rows = reader.rows(a, min(n, a + step), chunk)
        k = len(range(rank, len(rows["y"]), world))
        for name in features_artifact.ARRAYS:
            mine[name][at : at + k] = rows[name][rank::world]
        at += k
    dataclasses.replace(arrays, **mine).check()
    return ValidationShare({k: torch.from_numpy(v) for k, v in mine.items()}, n)
