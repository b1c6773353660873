"""Turn raw feature values into probabilities with a model artifact
(format: :mod:`torchkfp.artifacts.model`).

Used by evaluation, batch prediction and the HTTP server: all apply the artifact's own fitted
transform.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import torch

from torchkfp.artifacts.model import ModelArtifact


class Predictor:
    def __init__(self, model_dir: str | os.PathLike):
        self.artifact = ModelArtifact.load(model_dir)
        self.path = self.artifact.path
        self.metadata = self.artifact.metadata
        self.transform = self.artifact.transform
        self.model = self.artifact.module()

    @property
    def feature_names(self) -> list[str]:
        return self.transform.numeric_features + self.transform.categorical_features

    @torch.inference_mode()
    def predict_proba(self, rows: pd.DataFrame | list[dict[str, Any]]) -> np.ndarray:
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(rows)
        if len(df) == 0:
            return np.zeros(0, dtype=np.float64)
        arrays = self.transform.transform(df)
        x_num = torch.from_numpy(arrays["x_num"])
        x_cat = torch.from_numpy(arrays["x_cat"])
        out = []
        for start in range(0, len(df), 65536):
            sl = slice(start, start + 65536)
            out.append(torch.sigmoid(self.model(x_num[sl], x_cat[sl])))
        return torch.cat(out).double().numpy()
