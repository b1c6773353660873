"""The Features artifact: ``<split>.pt`` per split, each
``{"x_num": float32 [N, F], "x_cat": int64 [N, C], "y": [N]}`` (``y``: float32 for binary and
regression, int64 class indices for multiclass; pre-built tensors, so training reads no per-row
Python objects), plus ``metadata.json`` (rows, cardinalities, data fingerprint, unknown-category
rates) and the ``_SUCCESS`` marker.

``read_split`` loads weights-only (nothing pickled is executed) and checks the tensors against
the metadata before training sees them: names, dtypes, shapes, row counts, finite numbers,
category codes inside each embedding table, labels of the task; an ArtifactError names the
file and what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkfp.artifacts.folder import require
from torchkfp.errors import ArtifactError

KIND = "features"
DTYPES = {"x_num": (torch.float32,), "x_cat": (torch.int64,), "y": (torch.float32, torch.int64)}
NDIMS = {"x_num": 2, "x_cat": 2, "y": 1}


def write_split(out: Path, split: str, x_num: np.ndarray, x_cat: np.ndarray, y: np.ndarray) -> None:
    tensors = {
        "x_num": torch.from_numpy(x_num),
        "x_cat": torch.from_numpy(x_cat),
        "y": torch.from_numpy(y),
    }
    torch.save(tensors, out / f"{split}.pt")


def read_split(path: str | os.PathLike, split: str) -> dict[str, torch.Tensor]:
    meta = require(path, KIND)
    f = Path(path) / f"{split}.pt"
    what = f"features artifact {str(path)!r}: {f.name}"
    if f.is_symlink():
        raise ArtifactError(f"{what} is a symbolic link; artifact files must be regular files")
    if not f.is_file():
        raise ArtifactError(f"{what} is missing (no {split} split); rerun preprocessing")
    try:
        data = torch.load(f, weights_only=True, map_location="cpu")
    except Exception as e:  # garbage, truncated, empty, or a pickle that would run code
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ArtifactError(
            f"{what} is not a weights-only tensor file and was not loaded "
            f"({type(e).__name__}: {first}); rerun preprocessing"
        ) from None
    _check(data, meta, split, what)
    return data


def _check(data: Any, meta: dict[str, Any], split: str, what: str) -> None:
    if not isinstance(data, dict) or set(data) != set(DTYPES):
        got = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ArtifactError(f"{what} must hold tensors {sorted(DTYPES)}, got {got}")
    for name, t in data.items():
        if not isinstance(t, torch.Tensor):
            raise ArtifactError(f"{what}: {name} is a {type(t).__name__}, not a tensor")
        if t.dtype not in DTYPES[name] or t.dim() != NDIMS[name]:
            want = " or ".join(str(d).removeprefix("torch.") for d in DTYPES[name])
            raise ArtifactError(
                f"{what}: {name} is {str(t.dtype).removeprefix('torch.')} with shape "
                f"{list(t.shape)}, expected {want} with {NDIMS[name]} dimension(s)"
            )
    x_num, x_cat, y = data["x_num"], data["x_cat"], data["y"]
    n = {len(x_num), len(x_cat), len(y)}
    if len(n) != 1:
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
    if not bool(torch.isfinite(x_num).all()):
        raise ArtifactError(f"{what}: x_num holds NaN or infinite values; rerun preprocessing")
    cards = meta.get("cardinalities")
    if isinstance(cards, list):
        if x_cat.shape[1] != len(cards):
            raise ArtifactError(
                f"{what}: x_cat has {x_cat.shape[1]} columns, metadata.json has "
                f"{len(cards)} cardinalities"
            )
        if len(x_cat):
            lo, hi = x_cat.min(dim=0).values.tolist(), x_cat.max(dim=0).values.tolist()
            for i, (a, b, c) in enumerate(zip(lo, hi, cards, strict=True)):
                if a < 0 or not isinstance(c, int) or b >= c:
                    raise ArtifactError(
                        f"{what}: x_cat column {i} holds codes {a}..{b}, outside its "
                        f"embedding table of {c} rows (metadata.json cardinalities)"
                    )
    task = meta.get("task")
    if len(y) and task in ("binary", "multiclass", "regression"):
        if not bool(torch.isfinite(y.double()).all()):
            raise ArtifactError(f"{what}: y holds NaN or infinite values")
        k = 2 if task == "binary" else meta.get("output_size")
        if task != "regression" and isinstance(k, int):
            bad = (y < 0) | (y >= k) | (y != y.round())
            if bool(bad.any()):
                raise ArtifactError(
                    f"{what}: y holds values outside the {k} class indices of a {task} task"
                )
