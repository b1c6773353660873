"""Load a self-contained model artifact and turn raw feature values into probabilities.

Used by the evaluator, batch prediction and the HTTP server: all apply the artifact's own
fitted transform.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from torchkfp import artifacts
from torchkfp.model import ModelSpec, TabularMLP
from torchkfp.transform import FittedTransform

MODEL_KIND = "model"


class Predictor:
    def __init__(self, model_dir: str | os.PathLike):
        self.path = Path(model_dir)
        self.metadata = artifacts.require(self.path, MODEL_KIND)
        self.transform = FittedTransform.load(self.path / "transform.json")
        spec = ModelSpec(**json.loads((self.path / "model_spec.json").read_text()))
        self.model = TabularMLP(spec)
        self.model.load_state_dict(torch.load(self.path / "model.pt", weights_only=True))
        self.model.eval()

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


def load_predictor(model_dir: str | os.PathLike) -> Predictor:
    return Predictor(model_dir)
