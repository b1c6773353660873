"""The fitted preprocessing transform: fitted on the training split only, saved as JSON, and
applied unchanged by the trainer, the evaluator, batch prediction and the HTTP predictor.

- numeric features: standardized with the training mean/std; a missing value becomes 0 (the
  mean) and, for features that had missing values in training, a 0/1 "is missing" column.
- categorical features: a vocabulary of training values (most frequent first, min count, max
  size); index 0 is the bucket for unknown, rare and missing values.
- the label: a :class:`~torchkfp.labels.Target` (classes, or the regression scale).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from torchkfp.labels import Target

VERSION = 2
"""2 added the target (task kind, classes / scale); version 1 files are binary 0/1."""
_SMALL_BATCH = 256


def _as_float(col: pd.Series) -> np.ndarray:
    try:
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):  # strings or mixed objects: parse, unparsable -> missing
        return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _cat_key(x: object) -> str | None:
    if x is None or (isinstance(x, float) and x != x) or x is pd.NA:
        return None
    return str(x)


@dataclass
class NumericStats:
    mean: float
    std: float
    add_missing_flag: bool


@dataclass
class FittedTransform:
    target: Target
    numeric: dict[str, NumericStats] = field(default_factory=dict)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    version: int = VERSION

    @property
    def label(self) -> str:
        return self.target.label

    @property
    def task(self) -> str:
        return self.target.task

    # ---- shape of the model's inputs ---------------------------------------------------
    @property
    def numeric_features(self) -> list[str]:
        return list(self.numeric)

    @property
    def categorical_features(self) -> list[str]:
        return list(self.vocab)

    @property
    def num_numeric_inputs(self) -> int:
        return len(self.numeric) + sum(s.add_missing_flag for s in self.numeric.values())

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes: vocabulary plus the unknown bucket."""
        return [len(v) + 1 for v in self.vocab.values()]

    def feature_spec(self) -> dict[str, Any]:
        """What a caller must send: raw feature names and types."""
        return {
            "label": self.label,
            "task": self.task,
            "classes": self.target.classes or None,
            "numeric": self.numeric_features,
            "categorical": {k: v[:50] for k, v in self.vocab.items()},
        }

    # ---- (de)serialization -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "label": self.label,
            "target": self.target.to_dict(),
            "numeric": {k: asdict(v) for k, v in self.numeric.items()},
            "vocab": self.vocab,
        }

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FittedTransform:
        if d.get("version") not in (1, VERSION):
            raise ValueError(f"transform version {d.get('version')} is not supported ({VERSION})")
        target = (
            Target.from_dict(d["target"])
            if "target" in d
            else Target("binary", d["label"], classes=[0, 1])
        )
        return cls(
            target=target,
            numeric={k: NumericStats(**v) for k, v in d["numeric"].items()},
            vocab={k: list(v) for k, v in d["vocab"].items()},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> FittedTransform:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    # ---- apply -------------------------------------------------------------------------
    def transform(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Raw rows -> ``x_num`` (float32 [N, F]) and ``x_cat`` (int64 [N, C])."""
        missing = [c for c in [*self.numeric, *self.vocab] if c not in df.columns]
        if missing:
            raise KeyError(f"missing feature column(s): {missing}")
        n = len(df)
        cols: list[np.ndarray] = []
        flags: list[np.ndarray] = []
        for name, s in self.numeric.items():
            v = _as_float(df[name])
            isna = np.isnan(v)
            cols.append(np.where(isna, 0.0, (v - s.mean) / s.std))
            if s.add_missing_flag:
                flags.append(isna.astype(np.float64))
        x_num = (
            np.stack(cols + flags, axis=1).astype(np.float32)
            if cols
            else np.zeros((n, 0), np.float32)
        )
        cats: list[np.ndarray] = []
        for name in self.vocab:
            # position in the vocabulary + 1; unknown and missing values get 0
            if n <= _SMALL_BATCH:  # serving: a dict lookup beats pandas' per-call overhead
                lookup = self._lookup(name)
                codes = np.fromiter(
                    (lookup.get(_cat_key(x), 0) for x in df[name].to_numpy(dtype=object)),
                    dtype=np.int64,
                    count=n,
                )
            else:
                values = df[name].astype("string")
                codes = self._index(name).get_indexer(values).astype(np.int64) + 1
            cats.append(codes)
        x_cat = np.stack(cats, axis=1) if cats else np.zeros((n, 0), np.int64)
        return {"x_num": np.ascontiguousarray(x_num), "x_cat": np.ascontiguousarray(x_cat)}

    def _lookup(self, name: str) -> dict[str, int]:
        cache = self.__dict__.setdefault("_lookups", {})
        if name not in cache:
            cache[name] = {v: i + 1 for i, v in enumerate(self.vocab[name])}
        return cache[name]

    def _index(self, name: str) -> pd.Index:
        cache = self.__dict__.setdefault("_indexes", {})
        if name not in cache:
            cache[name] = pd.Index(self.vocab[name], dtype="string")
        return cache[name]

    def labels(self, df: pd.DataFrame, where: str = "") -> np.ndarray:
        """The training targets of ``df``'s label column (see :meth:`Target.encode`)."""
        return self.target.encode(df[self.label], where)


def fit(
    train: pd.DataFrame,
    *,
    target: Target,
    numeric_features: list[str],
    categorical_features: list[str],
    min_category_count: int = 5,
    max_vocab_size: int = 1000,
) -> FittedTransform:
    numeric: dict[str, NumericStats] = {}
    for name in numeric_features:
        v = pd.to_numeric(train[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        ok = v[~np.isnan(v)]
        mean = float(ok.mean()) if ok.size else 0.0
        std = float(ok.std()) if ok.size else 1.0
        numeric[name] = NumericStats(
            mean=mean, std=std if std > 1e-12 else 1.0, add_missing_flag=bool(ok.size < v.size)
        )
    vocab: dict[str, list[str]] = {}
    for name in categorical_features:
        counts = train[name].astype("string").value_counts(dropna=True)
        counts = counts[counts >= min_category_count]
        # most frequent first; ties broken by value so the vocabulary is deterministic
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_vocab_size]
        vocab[name] = [str(k) for k, _ in ordered]
    return FittedTransform(target=target, numeric=numeric, vocab=vocab)
