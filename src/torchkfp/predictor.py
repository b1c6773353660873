"""Turn raw feature values into predictions with a model artifact
(format: :mod:`torchkfp.artifacts.model`).

Used by evaluation, batch prediction and the HTTP server: all apply the artifact's own fitted
transform. What comes out follows the task kind:

- binary: the probability of the positive class (``classes[1]``), ``[N]``;
- multiclass: class probabilities ``[N, K]`` in ``classes`` order;
- regression: the predicted value in the label's own units, ``[N]``.

Runtimes: ``torch`` (the network built from the weights; the built-in network runs as
:class:`~torchkfp.model.FoldedPrediction`, the same function with fewer operator calls) or
``onnx`` (the artifact's ONNX export on ONNX Runtime, CPU; an artifact without one is an
ArtifactError naming the reason training recorded). Both answer alike to within the parity
tolerance checked at training time (1e-5), the folding adding float32 rounding (a maximum of
1.8e-7 on 4,096 random rows of the default network).

Paths: a DataFrame goes through the vectorized pandas transform; a list of instances (dicts)
of at most :data:`FAST_PATH_MAX_ROWS` rows goes through the row-wise transform
(:meth:`~torchkfp.transform.FittedTransform.transform_values`: the same arrays, bit for bit,
without building a DataFrame, which costs over a millisecond whatever the row count), larger
lists through pandas. :meth:`Predictor.predict_columns` is the server's entry (values already
validated), :meth:`Predictor.predict_arrays` runs the network on transformed arrays.

Loading checks the artifact (:meth:`ModelArtifact.load` verifies its files against each other
and their checksums; ``module()`` reads the weights weights-only and fits them to the spec),
then predicts one all-missing row: a network whose output does not have the shape the task
needs (a user factory ignoring ``output_size``) or is not finite is an ArtifactError at load,
not an error on every request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from torchkfp.artifacts.model import ModelArtifact
from torchkfp.errors import ArtifactError
from torchkfp.model import FoldedPrediction, output_logits
from torchkfp.onnx_export import probabilities

CHUNK = 65536
RUNTIMES = ("torch", "onnx")
FAST_PATH_MAX_ROWS = 256
"""Up to this many rows the row-wise transform runs instead of pandas. Measured on the default
features (15 numeric, 7 categorical; ``bench/bench_serving.py --crossover``, 2 shared cores): the
row-wise transform costs about 3.3 us a row (0.013 ms for 1 row, 0.85 ms for 256), the pandas
one about 1.6 ms plus 1.5 us a row (2.2 ms for 256); they cross near 1,000 rows, so 256 keeps the
row-wise path where it clearly wins and leaves large requests to the vectorized path."""
_EXACT_INT = 2**53


class Predictor:
    def __init__(
        self,
        model_dir: str | os.PathLike,
        runtime: str = "torch",
        *,
        threads: int | None = None,
    ):
        """``runtime``: ``torch`` or ``onnx``; ``threads``: ONNX Runtime's intra-op threads
        (None: its default, every core; torch's are set with ``torch.set_num_threads``)."""
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime={runtime!r}: use one of {', '.join(RUNTIMES)}")
        self.artifact = ModelArtifact.load(model_dir)
        self.path = self.artifact.path
        self.metadata = self.artifact.metadata
        self.transform = self.artifact.transform
        self.target = self.transform.target
        self.task = self.target.task
        self.runtime = runtime
        self.model: torch.nn.Module | None = None
        self._folded: FoldedPrediction | None = None
        self._onnx: Any = None
        if runtime == "onnx":
            self._onnx = self._onnx_model(threads)
        else:
            self.model = self.artifact.module()
            self._folded = FoldedPrediction.build(self.model)
        self._probe()

    def _onnx_model(self, threads: int | None) -> Any:
        from torchkfp.onnx_export import OnnxModel

        data = self.artifact.onnx_model()  # ArtifactError: none, or not the one committed
        try:
            return OnnxModel(data, threads)
        except Exception as e:  # checksummed, so written by training: a runtime problem
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise ArtifactError(
                f"model artifact {str(self.path)!r}: ONNX Runtime cannot load model.onnx "
                f"({type(e).__name__}: {first}); serve it on PyTorch (--runtime torch)"
            ) from None

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

    def predict(self, rows: pd.DataFrame | list[dict[str, Any]]) -> np.ndarray:
        """Probabilities (classification) or values (regression), as the module docstring says."""
        if not isinstance(rows, pd.DataFrame):
            if isinstance(rows, list | tuple) and len(rows) <= FAST_PATH_MAX_ROWS:
                cols = self._plain_columns(rows)
                if cols is not None:
                    arrays = self.transform.transform_values(cols)
                    return self.predict_arrays(arrays["x_num"], arrays["x_cat"])
            rows = pd.DataFrame.from_records(rows)
        if len(rows) == 0:
            return self._empty()
        arrays = self.transform.transform(rows)
        return self.predict_arrays(arrays["x_num"], arrays["x_cat"])

    def _plain_columns(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]] | None:
        """The instances as columns for the row-wise transform, or None when a value is of a
        kind for which a DataFrame would give other arrays (pandas changes some column types:
        a categorical integer beyond 2**53 beside a float or a null becomes an inexact float;
        a NumPy scalar may change width) or a row lacks a feature (pandas fills in NaN): those
        take the pandas path, so ``predict`` answers alike whatever the row count."""
        cols: dict[str, list[Any]] = {}
        try:
            for name in self.transform.numeric:
                col = cols[name] = [r[name] for r in rows]
                for x in col:
                    t = type(x)
                    if t is int:
                        if not -_EXACT_INT <= x <= _EXACT_INT:
                            return None
                    elif x is not None and t is not float:
                        return None
            for name in self.transform.vocab:
                col = cols[name] = [r[name] for r in rows]
                for x in col:
                    t = type(x)
                    if t is int:
                        if not -_EXACT_INT <= x <= _EXACT_INT:
                            return None
                    elif x is not None and t not in (str, float, bool):
                        return None
        except (KeyError, TypeError):
            return None
        return cols

    def predict_columns(
        self, columns: Mapping[str, Sequence[Any]], n: int, *, fast: bool | None = None
    ) -> np.ndarray:
        """The server's entry: ``n`` instances as columns of validated values (numeric: a float
        or NaN; categorical: a string, number, boolean or None), through the row-wise transform
        for at most :data:`FAST_PATH_MAX_ROWS` rows, else pandas (float64 numeric columns,
        object categorical columns: every value keyed as it is); ``fast`` True or False picks
        the path whatever the row count (both give the same arrays)."""
        if n == 0:
            return self._empty()
        if fast if fast is not None else n <= FAST_PATH_MAX_ROWS:
            arrays = self.transform.transform_values(columns)
        else:
            data: dict[str, np.ndarray] = {
                k: np.asarray(columns[k], dtype=np.float64) for k in self.transform.numeric
            }
            for k in self.transform.vocab:
                data[k] = np.empty(n, dtype=object)
                data[k][:] = columns[k]
            arrays = self.transform.transform(pd.DataFrame(data, copy=False))
        return self.predict_arrays(arrays["x_num"], arrays["x_cat"])

    def _empty(self) -> np.ndarray:
        k = self.target.output_size
        return np.zeros((0, k) if self.task == "multiclass" else 0, dtype=np.float64)

    def predict_arrays(self, x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        """The network on transformed inputs (``x_num`` float32 [N, F], ``x_cat`` int64 [N, C]),
        in chunks of :data:`CHUNK` rows; what :meth:`predict` returns."""
        n = len(x_num)
        if n == 0:
            return self._empty()
        if self._onnx is not None:
            parts = [
                probabilities(self._onnx(x_num[s : s + CHUNK], x_cat[s : s + CHUNK]), self.task)
                for s in range(0, n, CHUNK)
            ]
            raw = parts[0] if len(parts) == 1 else np.concatenate(parts)
        else:
            raw = self._torch_forward(torch.from_numpy(x_num), torch.from_numpy(x_cat))
        return self.target.decode_regression(raw) if self.task == "regression" else raw

    @torch.inference_mode()
    def _torch_forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> np.ndarray:
        assert self.model is not None
        out = []
        for start in range(0, len(x_num), CHUNK):
            sl = slice(start, start + CHUNK)
            if self._folded is not None:
                out.append(self._folded(x_num[sl], x_cat[sl]))
                continue
            logits = output_logits(self.model, x_num[sl], x_cat[sl])
            if self.task == "binary":
                out.append(torch.sigmoid(logits))
            elif self.task == "multiclass":
                out.append(torch.softmax(logits, dim=1))
            else:
                out.append(logits)
        return (out[0] if len(out) == 1 else torch.cat(out)).double().numpy()

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
