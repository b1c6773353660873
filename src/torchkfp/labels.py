"""The target: what the label column means for each task kind, fitted on the training split.

- ``binary``: exactly two classes; the model outputs one logit, the probability of
  ``classes[1]`` (the positive class: the larger value, e.g. ``1`` of 0/1, ``True``, ``"yes"``
  of no/yes in sorted order).
- ``multiclass``: 2..``max_classes`` classes (numbers or strings, kept as they are); the model
  outputs one logit per class, in ``classes`` order.
- ``regression``: a number, standardized with the training mean and standard deviation for
  training and turned back into the label's units at prediction.

Class names are JSON values (ints, floats, strings, booleans) so they go into the model
artifact and come back in predictions unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from torchkfp.errors import DataValidationError
from torchkfp.running import RunningMoments

TASKS = ("binary", "multiclass", "regression")


def _native(v: Any) -> Any:
    """numpy/pandas scalars -> plain JSON values."""
    return v.item() if hasattr(v, "item") else v


@dataclass
class Target:
    task: str
    label: str
    classes: list[Any] = field(default_factory=list)
    """Classification: the class values, sorted; the model's outputs follow this order."""
    mean: float = 0.0
    """Regression: the training mean of the label."""
    std: float = 1.0
    """Regression: the training standard deviation of the label."""

    @property
    def output_size(self) -> int:
        return len(self.classes) if self.task == "multiclass" else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        return cls(**d)

    # ---- training targets --------------------------------------------------------------
    def encode(self, values: pd.Series, where: str = "") -> np.ndarray:
        """Label values -> training targets: binary float32 0/1, multiclass int64 class index,
        regression float32 standardized. Missing values and (classification) classes never
        seen in training are errors naming the column and what to change."""
        where = f" in the {where} split" if where else ""
        missing = int(values.isna().sum())
        if missing:
            raise DataValidationError(
                f"label {self.label!r} has {missing} missing value(s){where}: filter them out in "
                "the query (WHERE label IS NOT NULL) or fill them"
            )
        if self.task == "regression":
            y = _numeric(values, self.label)
            return ((y - self.mean) / self.std).astype(np.float32)
        idx = pd.Index(self.classes).get_indexer(_natives(values))
        if (idx < 0).any():
            unseen = sorted({str(v) for v in values[idx < 0].unique()})[:10]
            raise DataValidationError(
                f"label {self.label!r} has value(s) {unseen}{where} never seen in the training "
                f"split (classes {self.classes[:20]}); every class must occur in training: "
                "change the split or filter those rows in the query"
            )
        return idx.astype(np.float32 if self.task == "binary" else np.int64)

    def values(self, values: pd.Series) -> np.ndarray:
        """Regression: the label as float64 in its own units (for metrics)."""
        return _numeric(values, self.label)

    # ---- predictions -------------------------------------------------------------------
    def decode_regression(self, standardized: np.ndarray) -> np.ndarray:
        return standardized.astype(np.float64) * self.std + self.mean


def _natives(values: pd.Series) -> np.ndarray:
    """``values`` as plain Python values (:func:`_native`), an object array. A column of one
    NumPy/pandas dtype is converted once per distinct value (a Python call per row costs a
    third of preprocessing); an object column value by value, as it may mix kinds."""
    if values.dtype == object or not len(values):
        return values.map(_native).to_numpy(dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return np.array([_native(u) for u in uniques] + [None], dtype=object)[codes]


def _numeric(values: pd.Series, label: str) -> np.ndarray:
    try:
        return values.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        bad = [str(v) for v in values.head(1000) if not _is_number(v)][:5]
        raise DataValidationError(
            f"label {label!r} is not numeric (e.g. {bad}): regression needs a number; use "
            "data.task: multiclass or binary for labels that name classes"
        ) from None


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


class TargetFit:
    """Fits the :class:`Target` of ``task`` on the training split's label values, chunk by
    chunk (:meth:`add`), in memory bounded by the classes, not the rows: regression keeps
    running moments, classification the distinct values (at most ``max_classes + 1``; more
    is an error either way)."""

    def __init__(self, task: str, label: str, max_classes: int = 100):
        if task not in TASKS:
            raise DataValidationError(f"data.task={task!r}: use one of {list(TASKS)}")
        self.task, self.label, self.max_classes = task, label, max_classes
        self.missing = 0
        self.rows = 0
        self.first: Any = None
        self.moments = RunningMoments()
        self.distinct: dict[Any, None] = {}
        self.too_many = False

    def add(self, values: pd.Series) -> None:
        self.missing += int(values.isna().sum())
        if self.missing or not len(values):
            return
        if self.task == "regression":
            y = _numeric(values, self.label)
            if not self.rows:
                self.first = y[0]
            self.moments.add(y)
        elif not self.too_many:
            for v in pd.unique(_natives(values)):
                self.distinct.setdefault(_native(v), None)
            self.too_many = len(self.distinct) > self.max_classes
        self.rows += len(values)

    def result(self) -> Target:
        task, label = self.task, self.label
        if self.missing:
            raise DataValidationError(
                f"label {label!r} has {self.missing} missing value(s) in the training split: "
                "filter them out in the query (WHERE label IS NOT NULL) or fill them"
            )
        if task == "regression":
            std = self.moments.std if self.rows else math.nan
            if not math.isfinite(std) or std < 1e-12:
                raise DataValidationError(
                    f"label {label!r} is constant ({self.first if self.rows else 'no rows'}) in "
                    "the training split: nothing to learn; check the label or the split"
                )
            return Target(task, label, mean=self.moments.mean, std=std)
        try:
            classes = sorted(self.distinct)
        except TypeError:  # mixed types: compare as strings
            classes = sorted(self.distinct, key=str)
        if len(classes) < 2:
            raise DataValidationError(
                f"label {label!r} has a single class ({classes[0] if classes else 'no rows'}) in "
                "the training split: nothing to learn; widen the data or check the label "
                "definition"
            )
        if task == "binary" and len(classes) != 2:
            raise DataValidationError(
                f"label {label!r} has {len(classes)} classes ({classes[:10]}...) but data.task "
                "is binary: set data.task: multiclass (or regression for a number)"
            )
        if self.too_many:
            raise DataValidationError(
                f"label {label!r} has {len(classes)} or more distinct values, more than "
                f"data.max_classes={self.max_classes}: raise data.max_classes, group the "
                "classes in the query, or set data.task: regression if it is a number"
            )
        return Target(task, label, classes=classes)


def fit_target(values: pd.Series, task: str, label: str, max_classes: int = 100) -> Target:
    """The target of ``task`` fitted on the training split's label values (all at once;
    :class:`TargetFit` is the same chunk by chunk)."""
    f = TargetFit(task, label, max_classes)
    f.add(values)
    return f.result()
