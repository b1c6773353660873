"""The Features artifact: training-ready arrays per split, in a layout every DDP rank can
memory-map and read only its own rows of:

- ``<split>/x_num.npy``: float32 [N, F], the transformed numeric inputs;
- ``<split>/x_cat.npy``: int32 [N, C], category codes (0: unknown);
- ``<split>/y.npy``: [N] float32 for binary and regression, int64 class indices for multiclass;

plus ``metadata.json`` (``format: 2``, rows, cardinalities, data fingerprint, unknown-category
rates) and the ``_SUCCESS`` marker. Plain ``.npy`` files, read with ``allow_pickle=False``:
nothing in them is executed. Preprocessing fills them shard by shard (:class:`SplitWriter`);
readers map them (:func:`open_split`) and check the rows they read against the metadata before
training sees them: dtypes, shapes, row counts, finite numbers, category codes inside each
embedding table, labels of the task; an ArtifactError names the file and what is wrong.

Format 1 (``<split>.pt``, one weights-only tensor file per split, int64 codes) still reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkfp.artifacts.folder import require
from torchkfp.errors import ArtifactError

KIND = "features"
FORMAT = 2
ARRAYS = ("x_num", "x_cat", "y")
DTYPES = {
    "x_num": (np.dtype(np.float32),),
    "x_cat": (np.dtype(np.int32), np.dtype(np.int64)),
    "y": (np.dtype(np.float32), np.dtype(np.int64)),
}
NDIMS = {"x_num": 2, "x_cat": 2, "y": 1}
CHECK_ROWS = 1 << 20
"""Rows checked at a time (bounded memory whatever the split's size)."""


class SplitWriter:
    """Fills one split's arrays in order, chunk by chunk (:meth:`write`), for a row count known
    up front: each ``.npy`` file gets its header (the final shape) first, then every chunk is
    appended with a plain file write, so what was written does not stay in the writer's
    memory (no mapping). :meth:`close` checks every row was written. The files are only valid
    once the artifact is committed (the ``_SUCCESS`` marker), so a failure midway leaves
    nothing that passes for a result."""

    def __init__(
        self, out: Path, split: str, rows: int, num_width: int, cat_width: int, y_dtype: Any
    ):
        self.dir = Path(out) / split
        self.dir.mkdir()
        self.split, self.rows, self.pos = split, rows, 0
        shapes = {"x_num": (rows, num_width), "x_cat": (rows, cat_width), "y": (rows,)}
        self.dtypes = {
            "x_num": np.dtype(np.float32),
            "x_cat": np.dtype(np.int32),
            "y": np.dtype(y_dtype),
        }
        self.files = {}
        for name in ARRAYS:
            f = open(self.dir / f"{name}.npy", "wb")  # noqa: SIM115 (closed on exit / close())
            header = {"descr": self.dtypes[name].str, "fortran_order": False, "shape": shapes[name]}
            np.lib.format.write_array_header_2_0(f, header)
            self.files[name] = f

    def write(self, x_num: np.ndarray, x_cat: np.ndarray, y: np.ndarray) -> None:
        n = len(y)
        if self.pos + n > self.rows:
            raise ArtifactError(
                f"the {self.split} split has more rows than the dataset's metadata.json says "
                f"({self.rows}); rerun ingestion"
            )
        for name, a in (("x_num", x_num), ("x_cat", x_cat), ("y", y)):
            self.files[name].write(np.ascontiguousarray(a, dtype=self.dtypes[name]).data)
        self.pos += n

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Closes the files; checks the row count only when no error is on its way."""
        if exc_type is None:
            self.close()
        else:
            self._close_files()

    def _close_files(self) -> None:
        for f in self.files.values():
            f.close()
        self.files = {}

    def close(self) -> None:
        self._close_files()
        if self.pos != self.rows:
            raise ArtifactError(
                f"the {self.split} split has {self.pos} rows, the dataset's metadata.json says "
                f"{self.rows}; rerun ingestion"
            )


def write_split(out: Path, split: str, x_num: np.ndarray, x_cat: np.ndarray, y: np.ndarray) -> None:
    """One split's arrays, written at once (:class:`SplitWriter` for chunks)."""
    with SplitWriter(out, split, len(y), x_num.shape[1], x_cat.shape[1], y.dtype) as w:
        w.write(x_num, x_cat, y)


@dataclass
class SplitArrays:
    """One split's arrays, memory-mapped read-only (format 1: loaded). Index them (a slice or
    an index array) to read rows; :meth:`tensors` copies rows into torch tensors."""

    x_num: np.ndarray
    x_cat: np.ndarray
    y: np.ndarray
    what: str
    meta: dict[str, Any]
    split: str

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])

    def check(self, rows: slice | np.ndarray | None = None) -> None:
        """Check the values of ``rows`` (all by default) in chunks: finite numbers, codes
        inside the embedding tables, labels of the task."""
        if rows is None or isinstance(rows, slice):
            start, stop, step = (rows or slice(None)).indices(self.rows)
            for at in range(start, stop, CHECK_ROWS * step):
                sel = slice(at, min(stop, at + CHECK_ROWS * step), step)
                _check_values(self.x_num[sel], self.x_cat[sel], self.y[sel], self.meta, self.what)
            return
        index = np.asarray(rows)
        for start in range(0, len(index), CHECK_ROWS):
            sel = index[start : start + CHECK_ROWS]
            _check_values(self.x_num[sel], self.x_cat[sel], self.y[sel], self.meta, self.what)

    def tensors(self, rows: slice | np.ndarray | None = None, int64_codes: bool = False):
        """Copies of ``rows`` (all by default) as torch tensors ``x_num``, ``x_cat``, ``y``;
        codes stay int32 unless ``int64_codes``."""
        sel = slice(None) if rows is None else rows
        out = {name: torch.from_numpy(np.array(getattr(self, name)[sel])) for name in ARRAYS}
        if int64_codes:
            out["x_cat"] = out["x_cat"].long()
        return out


def _split_files(path: Path, split: str, what: str) -> dict[str, Path]:
    files = {name: path / split / f"{name}.npy" for name in ARRAYS}
    for f in [path / split, *files.values()]:
        if f.is_symlink():
            raise ArtifactError(
                f"{what}: {f.relative_to(path)} is a symbolic link; artifact files must be "
                "regular files"
            )
    return files


def open_split(path: str | os.PathLike, split: str, check: bool = True) -> SplitArrays:
    """One split of a complete Features artifact, memory-mapped; its shapes and dtypes are
    checked against the metadata, and with ``check`` every row's values too (pass False and
    call :meth:`SplitArrays.check` on the rows you read, e.g. one DDP rank's share)."""
    meta = require(path, KIND)
    path = Path(path)
    what = f"features artifact {str(path)!r}: {split}"
    if (path / f"{split}.pt").exists() and not (path / split).exists():
        data = _read_legacy(path, split, meta)
        arrays = SplitArrays(*(data[n].numpy() for n in ARRAYS), what, meta, split)
    else:
        files = _split_files(path, split, what)
        if not all(f.is_file() for f in files.values()):
            raise ArtifactError(f"{what} is missing (no {split} split); rerun preprocessing")
        loaded = {}
        for name, f in files.items():
            try:
                loaded[name] = np.load(f, mmap_mode="r")  # allow_pickle defaults to False
            except Exception as e:  # garbage, truncated, a pickled object array
                first = (str(e).strip().splitlines() or [""])[0][:200]
                raise ArtifactError(
                    f"{what}/{name}.npy is not a readable array file ({type(e).__name__}: "
                    f"{first}); rerun preprocessing"
                ) from None
        arrays = SplitArrays(loaded["x_num"], loaded["x_cat"], loaded["y"], what, meta, split)
    _check_shapes(arrays, meta, split, what)
    if check:
        arrays.check()
    return arrays


def read_split(path: str | os.PathLike, split: str) -> dict[str, torch.Tensor]:
    """One split, checked, loaded whole as tensors (``x_cat`` int64): for splits that fit in
    memory (export checks, benchmarks); training maps its share (:func:`open_split`)."""
    return open_split(path, split).tensors(int64_codes=True)


def has_split(path: str | os.PathLike, split: str) -> bool:
    return (Path(path) / split / "y.npy").is_file() or (Path(path) / f"{split}.pt").is_file()


def load_raw(path: str | os.PathLike, split: str) -> dict[str, np.ndarray]:
    """A split's arrays as they are on disk, unchecked (to inspect or alter in tests)."""
    return {n: np.load(Path(path) / split / f"{n}.npy") for n in ARRAYS}


def save_raw(path: str | os.PathLike, split: str, arrays: dict[str, np.ndarray]) -> None:
    """Write a split's arrays as given, unchecked (the counterpart of :func:`load_raw`)."""
    (Path(path) / split).mkdir(exist_ok=True)
    for n, a in arrays.items():
        np.save(Path(path) / split / f"{n}.npy", a, allow_pickle=False)


def _read_legacy(path: Path, split: str, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    f = path / f"{split}.pt"
    what = f"features artifact {str(path)!r}: {f.name}"
    if f.is_symlink():
        raise ArtifactError(f"{what} is a symbolic link; artifact files must be regular files")
    try:
        data = torch.load(f, weights_only=True, map_location="cpu")
    except Exception as e:  # garbage, truncated, empty, or a pickle that would run code
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ArtifactError(
            f"{what} is not a weights-only tensor file and was not loaded "
            f"({type(e).__name__}: {first}); rerun preprocessing"
        ) from None
    if not isinstance(data, dict) or set(data) != set(ARRAYS):
        got = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ArtifactError(f"{what} must hold tensors {sorted(ARRAYS)}, got {got}")
    for name, t in data.items():
        if not isinstance(t, torch.Tensor):
            raise ArtifactError(f"{what}: {name} is a {type(t).__name__}, not a tensor")
    return data


def _check_shapes(a: SplitArrays, meta: dict[str, Any], split: str, what: str) -> None:
    for name in ARRAYS:
        arr = getattr(a, name)
        if arr.dtype not in DTYPES[name] or arr.ndim != NDIMS[name]:
            want = " or ".join(str(d) for d in DTYPES[name])
            raise ArtifactError(
                f"{what}: {name} is {arr.dtype} with shape {list(arr.shape)}, expected {want} "
                f"with {NDIMS[name]} dimension(s)"
            )
    x_num, x_cat, y = a.x_num, a.x_cat, a.y
    if len({len(x_num), len(x_cat), len(y)}) != 1:
        raise ArtifactError(
            f"{what}: x_num, x_cat and y have {len(x_num)}, {len(x_cat)} and {len(y)} rows"
        )
    rows = meta.get("rows", {}).get(split) if isinstance(meta.get("rows"), dict) else None
    if rows is not None and rows != len(y):
        raise ArtifactError(f"{what} has {len(y)} rows, metadata.json says {rows}")
    width = meta.get("num_numeric_inputs")
    if width is not None and x_num.shape[1] != width:
        raise ArtifactError(
            f"{what}: x_num has {x_num.shape[1]} columns, metadata.json says {width} numeric inputs"
        )
    cards = meta.get("cardinalities")
    if isinstance(cards, list) and x_cat.shape[1] != len(cards):
        raise ArtifactError(
            f"{what}: x_cat has {x_cat.shape[1]} columns, metadata.json has "
            f"{len(cards)} cardinalities"
        )


def _check_values(
    x_num: np.ndarray, x_cat: np.ndarray, y: np.ndarray, meta: dict[str, Any], what: str
) -> None:
    if not np.isfinite(x_num).all():
        raise ArtifactError(f"{what}: x_num holds NaN or infinite values; rerun preprocessing")
    cards = meta.get("cardinalities")
    if isinstance(cards, list) and len(x_cat):
        lo, hi = x_cat.min(axis=0).tolist(), x_cat.max(axis=0).tolist()
        for i, (a, b, c) in enumerate(zip(lo, hi, cards, strict=True)):
            if a < 0 or not isinstance(c, int) or b >= c:
                raise ArtifactError(
                    f"{what}: x_cat column {i} holds codes {a}..{b}, outside its "
                    f"embedding table of {c} rows (metadata.json cardinalities)"
                )
    task = meta.get("task")
    if len(y) and task in ("binary", "multiclass", "regression"):
        if not np.isfinite(y.astype(np.float64)).all():
            raise ArtifactError(f"{what}: y holds NaN or infinite values")
        k = 2 if task == "binary" else meta.get("output_size")
        if task != "regression" and isinstance(k, int):
            bad = (y < 0) | (y >= k) | (y != np.round(y))
            if bad.any():
                raise ArtifactError(
                    f"{what}: y holds values outside the {k} class indices of a {task} task"
                )
