"""The Transform artifact: ``transform.json`` (a :class:`~torchkfp.transform.FittedTransform`,
fitted on the training split) plus ``metadata.json`` and the ``_SUCCESS`` marker. The model
artifact carries a copy of the same file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torchkfp.artifacts.folder import begin, commit, require
from torchkfp.transform import FittedTransform

KIND = "transform"
FILE = "transform.json"


def write(path: str | os.PathLike, tf: FittedTransform, metadata: dict[str, Any]) -> Path:
    out = begin(path)
    tf.save(out / FILE)
    commit(out, KIND, metadata)
    return out


def read(path: str | os.PathLike) -> FittedTransform:
    require(path, KIND)
    return FittedTransform.load(Path(path) / FILE)
