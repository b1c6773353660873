"""The fitted preprocessing transform: fitted on the training split only, saved as JSON, and
applied unchanged by the trainer, the evaluator, batch prediction and the HTTP predictor.

- numeric features: standardized with the training mean/std; a missing value becomes 0 (the
  mean) and, for features that had missing values in training, a 0/1 "is missing" column.
- categorical features: a vocabulary of training values (most frequent first, min count, max
  size); index 0 is the bucket for unknown, rare and missing values. Values are matched by
  their key (:func:`category_key`, the one rule for fitting and applying, whatever the column's
  type or the caller): a number's key is its decimal form with integral values written as
  integers, so ``1``, ``1.0``, ``np.int64(1)`` and the string ``"1"`` are the same category.
- the label: a :class:`~torchkfp.labels.Target` (classes, or the regression scale).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from torchkfp.labels import Target
from torchkfp.running import BoundedCounter, RunningMoments

VERSION = 3
"""3: vocabulary entries are category keys (:func:`category_key`); 2 added the target (task
kind, classes / scale); version 1 files are binary 0/1. Versions 1 and 2 still load: their
entries were pandas' string form of the training column (a float column gave ``"1.0"``), and a
number written as a float in one of them also matches its key (``"1.0"`` matches ``1``)."""
SUPPORTED_VERSIONS = (1, 2, VERSION)
_ONE_KIND = frozenset({"string", "empty", "integer", "floating", "boolean", "decimal"})
"""``pd.api.types.infer_dtype`` kinds of object columns whose values ``pd.factorize`` keeps
apart exactly as :func:`category_key` does (no ``1`` beside ``1.0`` or ``True``)."""
VOCAB_COUNTER_KEYS = 100_000
"""Distinct category keys a fit counts exactly per column (at least; 20 x max_vocab_size when
larger) before pruning the rarest (:class:`~torchkfp.running.BoundedCounter`)."""
_LEGACY_FLOAT = re.compile(r"[+-]?[0-9]*\.?[0-9]*(?:[eE][+-]?[0-9]+)?")


def _as_float(col: pd.Series) -> np.ndarray:
    try:
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):  # strings or mixed objects: parse, unparsable -> missing
        return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def category_key(x: object) -> str | None:
    """The vocabulary key of one categorical value; None: missing. The one rule that both
    :func:`fit` and :meth:`FittedTransform.transform` use (training data, batch prediction,
    HTTP requests alike):

    - missing (None, NaN, ``pd.NA``, ``NaT``) -> None;
    - booleans -> ``"True"`` / ``"False"`` (a boolean is not the number 1 or 0);
    - integers (Python, NumPy, nullable) -> decimal digits: ``1`` -> ``"1"``;
    - floats and decimals: integral values as integers (``1.0`` -> ``"1"``, ``-0.0`` -> ``"0"``),
      others by their shortest round-trip form (``1.5`` -> ``"1.5"``; a float32 ``0.1`` ->
      ``"0.1"``); infinities -> ``"inf"`` / ``"-inf"``;
    - dates and timestamps: the date (``"2013-01-01"``) at midnight, else ``str``;
    - strings as they are (``"1"`` is the key of ``1``; ``"1.0"`` and ``" 1"`` are other
      categories); anything else -> ``str(x)``.
    """
    if x is None or x is pd.NA or x is pd.NaT:
        return None
    if isinstance(x, str):
        return x
    if isinstance(x, (bool, np.bool_)):
        return "True" if x else "False"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if x != x:
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if float(x).is_integer():
            return str(int(x))
        return str(x) if isinstance(x, np.floating) else repr(float(x))
    if isinstance(x, decimal.Decimal):
        if x.is_nan():
            return None
        if x.is_finite() and x == x.to_integral_value():
            return str(int(x))
        return category_key(float(x))
    if isinstance(x, dt.datetime):
        if x.tzinfo is None and x.time() == dt.time(0):
            return x.date().isoformat()
        return str(x)
    if isinstance(x, dt.date):
        return x.isoformat()
    return str(x)


def _legacy_alias(entry: str) -> str | None:
    """The key a version 1/2 vocabulary entry stands for when it differs from the entry: a
    number pandas wrote as a float (``"1.0"``, ``"1e+20"``); None otherwise."""
    if not any(c in entry for c in ".eE") or not _LEGACY_FLOAT.fullmatch(entry):
        return None
    try:
        key = category_key(float(entry))
    except ValueError:
        return None
    return key if key != entry else None


def _keys_and_codes(col: pd.Series) -> tuple[list[str | None], np.ndarray]:
    """The distinct keys of ``col`` and, per row, the position of its key in them (-1:
    missing). Columns of one kind of value are keyed once per distinct value; object columns
    mixing kinds (``1``, ``1.0`` and ``True`` hash alike there) value by value."""
    n = len(col)
    if col.dtype == object and pd.api.types.infer_dtype(col, skipna=True) not in _ONE_KIND:
        keys: list[str | None] = []
        where: dict[str, int] = {}
        codes = np.empty(n, dtype=np.int64)
        for i, x in enumerate(col.to_numpy(dtype=object)):
            k = category_key(x)
            if k is None:
                codes[i] = -1
                continue
            j = where.get(k)
            if j is None:
                j = where[k] = len(keys)
                keys.append(k)
            codes[i] = j
        return keys, codes
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    return [category_key(u) for u in uniques], np.asarray(codes, dtype=np.int64)


def category_keys(col: pd.Series) -> pd.Series:
    """:func:`category_key` of every value of ``col`` (missing: ``pd.NA``), as a string Series
    with ``col``'s index."""
    keys, codes = _keys_and_codes(col)
    table = np.array([*keys, None], dtype=object)  # code -1 -> the trailing None
    return pd.Series(table[codes], index=col.index, dtype="string")


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
        version = d.get("version")
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(
                f"transform version {version!r} is not supported (this torchkfp reads versions "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}): it was written by a newer torchkfp; "
                "upgrade torchkfp, or rerun preprocessing and training with this one"
            )
        target = (
            Target.from_dict(d["target"])
            if "target" in d
            else Target("binary", d["label"], classes=[0, 1])
        )
        return cls(
            target=target,
            numeric={k: NumericStats(**v) for k, v in d["numeric"].items()},
            vocab={k: list(v) for k, v in d["vocab"].items()},
            version=version,
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
            lookup = self._lookup(name)
            keys, codes = _keys_and_codes(df[name])
            index = np.array([*(lookup.get(k, 0) for k in keys), 0], dtype=np.int64)
            cats.append(index[codes])
        x_cat = np.stack(cats, axis=1) if cats else np.zeros((n, 0), np.int64)
        return {"x_num": np.ascontiguousarray(x_num), "x_cat": np.ascontiguousarray(x_cat)}

    def transform_values(self, columns: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        """The row-wise fast path of :meth:`transform` for a few rows: the same arrays, bit for
        bit, without pandas (building a DataFrame and transforming it costs over a millisecond
        whatever the row count; this costs microseconds a row).

        ``columns``: feature name -> one value per row, numeric values None or a number
        (``float(x)``; None and NaN are missing), categorical values anything
        :func:`category_key` keys. It equals :meth:`transform` of a DataFrame holding the
        numeric columns as float64 and the categorical ones as object columns of these values
        (each value keyed exactly; a DataFrame column whose dtype pandas changed, e.g. an int
        column with a null made float64, was changed before the transform saw it). A missing
        feature is a KeyError, as in :meth:`transform`."""
        missing = [c for c in [*self.numeric, *self.vocab] if c not in columns]
        if missing:
            raise KeyError(f"missing feature column(s): {missing}")
        n = len(columns[next(iter(columns))]) if columns else 0
        if n <= 4:  # a few rows: row by row is cheaper than a list per column
            return self._transform_rows(columns, n)
        nan = math.nan
        rows: list[list[float]] = []
        flags: list[list[float]] = []
        for name, s in self.numeric.items():
            mean, std = s.mean, s.std
            values = [nan if x is None else float(x) for x in columns[name]]
            # (x - mean) / std in float64, as numpy computes it; NaN != NaN marks a missing value
            rows.append([(x - mean) / std if x == x else 0.0 for x in values])
            if s.add_missing_flag:
                flags.append([0.0 if x == x else 1.0 for x in values])
        if rows or flags:
            x_num = np.array(rows + flags, dtype=np.float32).T.copy()
        else:
            x_num = np.zeros((n, 0), np.float32)
        codes: list[list[int]] = []
        for name in self.vocab:
            lookup = self._lookup(name)
            keyed = [category_key(x) for x in columns[name]]
            codes.append([0 if k is None else lookup.get(k, 0) for k in keyed])
        x_cat = np.array(codes, dtype=np.int64).T.copy() if codes else np.zeros((n, 0), np.int64)
        return {"x_num": x_num, "x_cat": x_cat}

    def _transform_rows(
        self, columns: Mapping[str, Sequence[Any]], n: int
    ) -> dict[str, np.ndarray]:
        """:meth:`transform_values` row by row (the same arithmetic)."""
        plan = self.__dict__.get("_row_plan")
        if plan is None:
            names = list(self.numeric)
            plan = self.__dict__["_row_plan"] = (
                [(s.mean, s.std) for s in self.numeric.values()],
                [names.index(k) for k, s in self.numeric.items() if s.add_missing_flag],
            )
        stats, flagged = plan
        nan = math.nan
        num_cols = [columns[name] for name in self.numeric]
        cat_cols = [(columns[name], self._lookup(name)) for name in self.vocab]
        x_num: list[list[float]] = []
        x_cat: list[list[int]] = []
        for i in range(n):
            values = [nan if c[i] is None else float(c[i]) for c in num_cols]
            row = [
                (x - mean) / std if x == x else 0.0
                for x, (mean, std) in zip(values, stats, strict=True)
            ]
            row += [0.0 if values[j] == values[j] else 1.0 for j in flagged]
            x_num.append(row)
            keys = [(category_key(c[i]), lookup) for c, lookup in cat_cols]
            x_cat.append([0 if k is None else lookup.get(k, 0) for k, lookup in keys])
        width = len(stats) + len(flagged)
        return {
            "x_num": np.array(x_num, dtype=np.float32).reshape(n, width),
            "x_cat": np.array(x_cat, dtype=np.int64).reshape(n, len(cat_cols)),
        }

    def _lookup(self, name: str) -> dict[str, int]:
        """key -> position + 1 in the vocabulary of ``name`` (version 1/2 files: also the key
        of each entry written as a float, unless that key is an entry itself)."""
        cache = self.__dict__.setdefault("_lookups", {})
        if name not in cache:
            vocab = self.vocab[name]
            lookup = {v: i + 1 for i, v in enumerate(vocab)}
            if self.version < 3:
                for i, v in enumerate(vocab):
                    alias = _legacy_alias(v)
                    if alias is not None:
                        lookup.setdefault(alias, i + 1)
            cache[name] = lookup
        return cache[name]

    def labels(self, df: pd.DataFrame, where: str = "") -> np.ndarray:
        """The training targets of ``df``'s label column (see :meth:`Target.encode`)."""
        return self.target.encode(df[self.label], where)


class TransformFit:
    """Fits a :class:`FittedTransform` in one pass over the training rows, chunk by chunk, in
    memory bounded by the vocabularies, not the rows: running moments per numeric column and
    a :class:`~torchkfp.running.BoundedCounter` of category keys per categorical column
    (exact up to ``max(VOCAB_COUNTER_KEYS, 20 x max_vocab_size)`` distinct keys; beyond that
    the rarest are pruned, which only touches keys far below the vocabulary's cut). The result
    equals :func:`fit` on all the rows at once (numbers up to float64 rounding)."""

    def __init__(
        self,
        *,
        numeric_features: list[str],
        categorical_features: list[str],
        min_category_count: int = 5,
        max_vocab_size: int = 1000,
    ):
        self.min_category_count = min_category_count
        self.max_vocab_size = max_vocab_size
        self.moments = {name: RunningMoments() for name in numeric_features}
        self.missing = dict.fromkeys(numeric_features, 0)
        bound = max(VOCAB_COUNTER_KEYS, 20 * max_vocab_size)
        self.counters = {name: BoundedCounter(bound) for name in categorical_features}

    def add(self, chunk: pd.DataFrame) -> None:
        for name, m in self.moments.items():
            v = pd.to_numeric(chunk[name], errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
            self.missing[name] += int(np.isnan(v).sum())
            m.add(v)
        for name, counter in self.counters.items():
            counter.add(category_keys(chunk[name]))

    def result(self, target: Target) -> FittedTransform:
        numeric: dict[str, NumericStats] = {}
        for name, m in self.moments.items():
            mean = m.mean if m.count else 0.0
            std = m.std if m.count else 1.0
            numeric[name] = NumericStats(
                mean=mean, std=std if std > 1e-12 else 1.0, add_missing_flag=self.missing[name] > 0
            )
        vocab = {
            # most frequent first; ties broken by value so the vocabulary is deterministic
            name: c.most_common(self.min_category_count, self.max_vocab_size)
            for name, c in self.counters.items()
        }
        return FittedTransform(target=target, numeric=numeric, vocab=vocab)


def fit(
    train: pd.DataFrame,
    *,
    target: Target,
    numeric_features: list[str],
    categorical_features: list[str],
    min_category_count: int = 5,
    max_vocab_size: int = 1000,
) -> FittedTransform:
    """The transform fitted on ``train`` (all rows in memory; :class:`TransformFit` is the
    same fit chunk by chunk)."""
    f = TransformFit(
        numeric_features=numeric_features,
        categorical_features=categorical_features,
        min_category_count=min_category_count,
        max_vocab_size=max_vocab_size,
    )
    f.add(train)
    return f.result(target)
