"""An order-independent fingerprint of a table's rows, computed batch by batch.

Each row gets a 64-bit hash from its values (numpy over the Arrow buffers, no Python per row):
every column's values become 64-bit words (a number's bits; a string's polynomial hash and
length; NULL a fixed word of its own), folded into the row's state column by column with a
multiply-xorshift step that is a bijection in each value, then finished with splitmix64. The
row hashes are added up modulo 2**64 in two independently finished sums, and the rows counted.

So the same rows give the same fingerprint in any order and however they are cut into
batches (a sum does not care), and changing one value of a fixed-width column always changes
it (each step is a bijection, so the row's hash changes, so the sum does); for strings a
change goes unseen only when two different strings of a column hash alike (64-bit polynomial
hash: about one chance in 2**64 for ordinary data). Duplicate rows count as often as they
occur. Column names and types go into the fingerprint too (:meth:`ContentHash.hexdigest`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_U = np.uint64
_MASK = (1 << 64) - 1
_NULL = _U(0x6A09E667F3BCC908)  # NULL's word: the first 64 bits of sqrt(2)'s fraction
_STEP = _U(0x9E3779B97F4A7C15)
_BASE = 0x100000001B3 | 1  # the polynomial hash's base (odd: invertible modulo 2**64)
_BASE_INV = pow(_BASE, -1, 1 << 64)
_LEN = _U(0xC2B2AE3D27D4EB4F)


def _splitmix(x: np.ndarray, a: int, b: int) -> np.ndarray:
    """splitmix64's finisher (in place) with multipliers ``a``, ``b``."""
    x ^= x >> _U(30)
    x *= _U(a)
    x ^= x >> _U(27)
    x *= _U(b)
    x ^= x >> _U(31)
    return x


class _Powers:
    """BASE**k and BASE**-k modulo 2**64 for k < n, grown on demand."""

    def __init__(self) -> None:
        self.pow = np.ones(1, _U)
        self.inv = np.ones(1, _U)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pow) < n:
            size = max(n, 2 * len(self.pow))
            with np.errstate(over="ignore"):
                self.pow = np.cumprod(np.full(size, _BASE, _U), dtype=_U)
                self.pow = np.concatenate([np.ones(1, _U), self.pow[:-1]])
                self.inv = np.cumprod(np.full(size, _BASE_INV, _U), dtype=_U)
                self.inv = np.concatenate([np.ones(1, _U), self.inv[:-1]])
        return self.pow[:n], self.inv[:n]


_POWERS = _Powers()


def _string_words(arr: pa.Array) -> np.ndarray:
    """A 64-bit word per string (or binary): its polynomial hash, mixed with its length."""
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int64 if large else np.int32)[
        arr.offset : arr.offset + n + 1
    ]
    start, end = int(offsets[0]), int(offsets[-1])
    rel = (offsets - start).astype(np.int64)
    lengths = np.diff(rel).astype(_U)
    with np.errstate(over="ignore"):
        if end > start:
            data = np.frombuffer(bufs[2], np.uint8)[start:end].astype(_U)
            pw, inv = _POWERS.get(end - start + 1)
            data *= pw[: end - start]
            csum = np.empty(end - start + 1, _U)
            csum[0] = 0
            np.cumsum(data, out=csum[1:])
            # sum of byte_k * BASE**k over the string, shifted to start at BASE**0
            words = (csum[rel[1:]] - csum[rel[:-1]]) * inv[rel[:-1]]
        else:
            words = np.zeros(n, _U)
        words ^= lengths * _LEN
    return words


def _fixed_words(arr: pa.Array) -> np.ndarray:
    """A 64-bit word per value of a fixed-width column: its bits (sign-extended)."""
    t = arr.type
    width = t.bit_width
    if pa.types.is_boolean(t):
        return pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(_U)
    if width in (8, 16, 32, 64):
        # the values buffer as it is (what lies under a NULL is replaced by the caller)
        values = np.frombuffer(arr.buffers()[1], np.dtype(f"int{width}"))
        values = values[arr.offset : arr.offset + len(arr)]
        return values.view(_U) if width == 64 else values.astype(np.int64).view(_U)
    # wider fixed-size values (decimals, fixed_size_binary): fold their 64-bit words
    size = width // 8
    bufs = arr.buffers()
    raw = np.frombuffer(bufs[-1], np.uint8)[arr.offset * size : (arr.offset + len(arr)) * size]
    pad = (-size) % 8
    raw = raw.reshape(len(arr), size)
    if pad:
        raw = np.concatenate([raw, np.zeros((len(arr), pad), np.uint8)], axis=1)
    words64 = raw.copy().view(_U)
    out = np.zeros(len(arr), _U)
    with np.errstate(over="ignore"):
        for j in range(words64.shape[1]):
            out = (out ^ words64[:, j]) * _STEP
            out ^= out >> _U(29)
    return out


def _python_words(arr: pa.Array) -> np.ndarray:
    """Any other type (lists, structs, maps...): each value's canonical JSON text, hashed as a
    string (a Python loop: slow, for the rare nested column)."""
    texts = [
        None if v is None else json.dumps(v, sort_keys=True, default=str) for v in arr.to_pylist()
    ]
    return _string_words(pa.array(texts, pa.large_string()))


def _is_view(t: pa.DataType) -> bool:
    checks = (getattr(pa.types, "is_string_view", None), getattr(pa.types, "is_binary_view", None))
    return any(check is not None and check(t) for check in checks)


def column_words(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit word per value of ``arr``; NULL has its own word."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_dictionary(t):
        d = arr.dictionary
        strings = pa.types.is_string(d.type) or pa.types.is_large_string(d.type)
        strings = strings or pa.types.is_binary(d.type) or pa.types.is_large_binary(d.type)
        words = _string_words(d) if strings and not d.null_count else column_words(d)
        idx = pc.fill_null(arr.indices, 0).to_numpy().astype(np.intp)
        out = words[idx] if len(words) else np.zeros(len(arr), _U)
    elif pa.types.is_null(t):
        return np.full(len(arr), _NULL, _U)
    elif _is_view(t):  # pyarrow >= 16's string_view / binary_view
        target = pa.large_binary() if pa.types.is_binary_view(t) else pa.large_string()
        out = _string_words(arr.cast(target))
    elif (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        # each distinct value hashed once (a table's strings are mostly categories)
        return column_words(pc.dictionary_encode(arr))
    elif isinstance(t, pa.FixedSizeBinaryType) or (
        not pa.types.is_nested(t) and getattr(t, "bit_width", 0) and t.bit_width % 8 == 0
    ):
        out = _fixed_words(arr)
    elif pa.types.is_boolean(t):
        out = _fixed_words(arr)
    else:
        out = _python_words(arr)
    if arr.null_count:
        out = np.where(arr.is_null().to_numpy(zero_copy_only=False), _NULL, out)
    return out


def row_hashes(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """A 64-bit hash per row of ``batch`` (its columns in order)."""
    n = batch.num_rows
    h = np.full(n, _U(0x243F6A8885A308D3), _U)
    with np.errstate(over="ignore"):
        for col in batch.columns:
            h ^= column_words(col)
            h *= _STEP
            h ^= h >> _U(29)
        return _splitmix(h, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


class ContentHash:
    """The running fingerprint of a stream of record batches (see the module's docstring):
    ``update`` with each batch, in any order; ``hexdigest`` at the end."""

    def __init__(self, schema: pa.Schema, context: Any = None):
        self.schema = schema
        self.context = context
        self.rows = 0
        self._sum1 = 0
        self._sum2 = 0

    def update(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Add ``batch``'s rows (its columns as the schema's); returns their row hashes."""
        if batch.schema.names != self.schema.names:
            raise ValueError(
                f"batch columns {batch.schema.names} are not the schema's {self.schema.names}"
            )
        h = row_hashes(batch)
        with np.errstate(over="ignore"):
            h2 = _splitmix(h ^ _U(0x5851F42D4C957F2D), 0xD6E8FEB86659FD93, 0xCA5A826395121157)
            self._sum1 = (self._sum1 + int(h.sum(dtype=_U))) & _MASK
            self._sum2 = (self._sum2 + int(h2.sum(dtype=_U))) & _MASK
        self.rows += batch.num_rows
        return h

    def state(self) -> dict[str, Any]:
        return {
            "columns": [[f.name, str(f.type)] for f in self.schema],
            "rows": self.rows,
            "sums": [f"{self._sum1:016x}", f"{self._sum2:016x}"],
            "context": self.context,
        }

    def hexdigest(self) -> str:
        """64 hex digits (BLAKE2b-256) of the columns, the row count, the two sums and the
        context (e.g. the query and its parameters)."""
        text = json.dumps(self.state(), sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=32).hexdigest()
