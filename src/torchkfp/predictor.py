"""Turn raw feature values into predictions with a model artifact
(format: :mod:`torchkfp.artifacts.model`).

Used by evaluation, batch prediction and the HTTP server: all apply the artifact's own fitted
transform. What comes out follows the task kind:

- binary: the probability of the positive class (``classes[1]``), ``[N]``;
- multiclass: class probabilities ``[N, K]`` in ``classes`` order;
- regression: the predicted value in the label's own units, ``[N]``.

Loading checks the artifact (:meth:`ModelArtifact.load` verifies its files against each other
and their checksums; ``module()`` reads the weights weights-only and fits them to the spec),
then predicts one all-missing row: a network whose output does not have the shape the task
needs (a user factory ignoring ``output_size``) or is not finite is an ArtifactError at load,
not an error on every request.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import torch

from torchkfp.artifacts.model import ModelArtifact
from torchkfp.errors import ArtifactError
from torchkfp.model import output_logits

CHUNK = 65536


class Predictor:
    def __init__(self, model_dir: str | os.PathLike):
        self.artifact = ModelArtifact.load(model_dir)
        self.path = self.artifact.path
        self.metadata = self.artifact.metadata
        self.transform = self.artifact.transform
        self.target = self.transform.target
        self.task = self.target.task
        self.model = self.artifact.module()
        self._probe()

    def _probe(self) -> None:
        """Predict one row of missing values; ArtifactError unless the output has the task's
        shape and is finite."""
        row = pd.DataFrame([dict.fromkeys(self.feature_names)], columns=self.feature_names)
        want = (1, self.target.output_size) if self.task == "multiclass" else (1,)
        what = f"model artifact {str(self.path)!r}"
        try:
            out = self.predict(row)
        except Exception as e:  # the network itself (a user factory) fails on its input
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise ArtifactError(
                f"{what}: the network fails on one row of its own inputs "
                f"({type(e).__name__}: {first})"
            ) from None
        if out.shape != want:
            raise ArtifactError(
                f"{what}: the network returns shape {list(out.shape)} for one row; a "
                f"{self.task} model with {len(self.classes)} classes must return {list(want)}"
            )
        if not np.isfinite(out).all():
            raise ArtifactError(f"{what}: the network predicts NaN or infinity for one row")

    @property
    def feature_names(self) -> list[str]:
        return self.transform.numeric_features + self.transform.categorical_features

    @property
    def classes(self) -> list[Any]:
        return list(self.target.classes)

    @torch.inference_mode()
    def predict(self, rows: pd.DataFrame | list[dict[str, Any]]) -> np.ndarray:
        """Probabilities (classification) or values (regression), as the module docstring says."""
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(rows)
        k = self.target.output_size
        if len(df) == 0:
            return np.zeros((0, k) if self.task == "multiclass" else 0, dtype=np.float64)
        arrays = self.transform.transform(df)
        x_num = torch.from_numpy(arrays["x_num"])
        x_cat = torch.from_numpy(arrays["x_cat"])
        out = []
        for start in range(0, len(df), CHUNK):
            sl = slice(start, start + CHUNK)
            logits = output_logits(self.model, x_num[sl], x_cat[sl])
            if self.task == "binary":
                out.append(torch.sigmoid(logits))
            elif self.task == "multiclass":
                out.append(torch.softmax(logits, dim=1))
            else:
                out.append(logits)
        raw = torch.cat(out).double().numpy()
        return self.target.decode_regression(raw) if self.task == "regression" else raw

    def predict_proba(self, rows: pd.DataFrame | list[dict[str, Any]]) -> np.ndarray:
        """Classification: :meth:`predict` (binary: the positive class's probability)."""
        if self.task == "regression":
            raise ValueError("predict_proba is for classification models; use predict")
        return self.predict(rows)

    def labels(self, predictions: np.ndarray, threshold: float = 0.5) -> list[Any]:
        """Classification: the predicted class names (binary: positive when p >= threshold)."""
        c = self.target.classes
        if self.task == "binary":
            return [c[1] if p >= threshold else c[0] for p in predictions.tolist()]
        return [c[i] for i in predictions.argmax(axis=1).tolist()]
