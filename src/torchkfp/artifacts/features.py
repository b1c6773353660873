"""The Features artifact: ``<split>.pt`` per split, each
``{"x_num": float32 [N, F], "x_cat": int64 [N, C], "y": float32 [N]}`` (pre-built tensors, so
training reads no per-row Python objects), plus ``metadata.json`` (rows, cardinalities, data
fingerprint, unknown-category rates) and the ``_SUCCESS`` marker."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from torchkfp.artifacts.folder import require

KIND = "features"


def write_split(out: Path, split: str, x_num: np.ndarray, x_cat: np.ndarray, y: np.ndarray) -> None:
    tensors = {
        "x_num": torch.from_numpy(x_num),
        "x_cat": torch.from_numpy(x_cat),
        "y": torch.from_numpy(y),
    }
    torch.save(tensors, out / f"{split}.pt")


def read_split(path: str | os.PathLike, split: str) -> dict[str, torch.Tensor]:
    require(path, KIND)
    return torch.load(Path(path) / f"{split}.pt", weights_only=True)
