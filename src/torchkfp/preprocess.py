"""Stage 2: validate the dataset, fit the transform on the training split, and write
training-ready arrays for every split, streaming: memory is bounded by a chunk of rows and the
vocabularies, not by the table.

- Pass 1 reads the training split's shards chunk by chunk and fits the transform in one pass
  (:class:`~torchkfp.transform.TransformFit`: running moments per numeric column, bounded
  counters of category keys; :class:`~torchkfp.labels.TargetFit` for the label).
- Pass 2 reads every split chunk by chunk, checks its labels, applies the transform and fills
  the Features artifact's memory-mappable arrays (float32 numbers, int32 codes) in place.

Outputs: a Transform artifact and a Features artifact (formats:
:mod:`torchkfp.artifacts.transform`, :mod:`torchkfp.artifacts.features`); the transform is
written only once every split has passed its checks.

Settings: the ``data`` (label and feature columns) and ``preprocess`` sections only.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.artifacts import features as features_artifact
from torchkfp.artifacts import transform as transform_artifact
from torchkfp.config import DataConfig, PreprocessConfig
from torchkfp.errors import DataValidationError
from torchkfp.labels import TargetFit
from torchkfp.transform import FittedTransform, TransformFit

CHUNK_ROWS = 65_536
"""Rows converted to pandas and transformed at a time."""


@dataclass
class PreprocessResult:
    transform_path: str
    features_path: str
    rows: dict[str, int]
    label_stats: dict[str, dict[str, float]]
    seconds: float


def _split_rows(dataset_dir: str | os.PathLike, split: str, columns: list[str]) -> int:
    """The rows of one split, from the shards' Parquet footers, after checking it has
    ``columns``."""
    schema, rows = dataset_artifact.split_layout(dataset_dir, split)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DataValidationError(
            f"dataset {str(dataset_dir)!r} lacks column(s) {missing}; "
            "re-run ingestion or fix data.*_features/label in the config"
        )
    return rows


def _chunks(dataset_dir: str | os.PathLike, split: str, columns: list[str]):
    for batch in dataset_artifact.iter_split(dataset_dir, split, columns, CHUNK_ROWS):
        yield batch.to_pandas()


def fit_transform(
    d: DataConfig, settings: PreprocessConfig, dataset_dir: str | os.PathLike
) -> FittedTransform:
    """The transform fitted on the training split in one streaming pass."""
    target = TargetFit(d.task, d.label, d.max_classes)
    fit = TransformFit(
        numeric_features=d.numeric_features,
        categorical_features=d.categorical_features,
        min_category_count=settings.min_category_count,
        max_vocab_size=settings.max_vocab_size,
    )
    for df in _chunks(
        dataset_dir, "train", [d.label, *d.numeric_features, *d.categorical_features]
    ):
        target.add(df[d.label])
        fit.add(df)
    return fit.result(target.result())


def preprocess(
    d: DataConfig,
    settings: PreprocessConfig,
    dataset_dir: str | os.PathLike,
    transform_dir: str | os.PathLike,
    features_dir: str | os.PathLike,
    expected_fingerprint: str | None = None,
) -> PreprocessResult:
    """``expected_fingerprint`` (the pipeline passes ingest's output) must match the dataset's
    own: the fingerprint is an explicit input so that KFP cache keys follow the data."""
    t0 = time.perf_counter()
    ds_meta = artifacts.require(dataset_dir, dataset_artifact.KIND)
    artifacts.check_fingerprint(ds_meta, expected_fingerprint, dataset_dir)
    columns = [d.label, *d.numeric_features, *d.categorical_features]
    rows = {s: _split_rows(dataset_dir, s, columns) for s in dataset_artifact.SPLITS}
    if rows["train"] == 0:
        raise DataValidationError(
            "the training split is empty: change the split settings (split.*) or the query"
        )
    tf = fit_transform(d, settings, dataset_dir)

    fdir = artifacts.begin(features_dir)
    label_stats: dict[str, dict[str, float]] = {}
    unknown: dict[str, dict[str, float]] = {}
    y_dtype = np.int64 if tf.task == "multiclass" else np.float32
    for split in dataset_artifact.SPLITS:
        stats = _LabelStats(tf)
        unknown_rows = np.zeros(len(tf.vocab), dtype=np.int64)
        with features_artifact.SplitWriter(
            fdir, split, rows[split], tf.num_numeric_inputs, len(tf.vocab), y_dtype
        ) as writer:
            for df in _chunks(dataset_dir, split, columns):
                yy = tf.labels(df, split)  # checks the split's labels
                arrays = tf.transform(df)
                writer.write(arrays["x_num"], arrays["x_cat"].astype(np.int32), yy)
                unknown_rows += (arrays["x_cat"] == 0).sum(axis=0)
                stats.add(yy)
        unknown[split] = {
            name: float(unknown_rows[i] / rows[split]) if rows[split] else 0.0
            for i, name in enumerate(tf.categorical_features)
        }
        label_stats[split] = stats.result()
    tdir = transform_artifact.write(
        transform_dir,
        tf,
        {
            "fitted_on": "train",
            "task": tf.task,
            "classes": tf.target.classes,
            "num_numeric_inputs": tf.num_numeric_inputs,
            "cardinalities": tf.cardinalities,
            "data_fingerprint": ds_meta["fingerprint"],
        },
    )
    artifacts.commit(
        fdir,
        features_artifact.KIND,
        {
            "format": features_artifact.FORMAT,
            "rows": rows,
            "task": tf.task,
            "output_size": tf.target.output_size,
            "classes": tf.target.classes,
            "label_stats": label_stats,
            # share of values in the unknown bucket, per split and column: a column that is
            # mostly unknown outside training (e.g. month under a temporal split) shows here
            "unknown_category_rate": unknown,
            "num_numeric_inputs": tf.num_numeric_inputs,
            "cardinalities": tf.cardinalities,
            "data_fingerprint": ds_meta["fingerprint"],
        },
    )
    for split in ("validation", "test"):
        for name, rate in unknown[split].items():
            if rate > 0.5:
                print(
                    f"[preprocess] warning: {rate:.0%} of {split} rows have a {name!r} value "
                    "never seen in training (unknown bucket)",
                    file=sys.stderr,
                )
    return PreprocessResult(str(tdir), str(fdir), rows, label_stats, time.perf_counter() - t0)


class _LabelStats:
    """Per split, accumulated chunk by chunk: class shares (classification) or the label's
    mean (regression, in its own units), for the features metadata."""

    def __init__(self, tf: FittedTransform):
        self.tf = tf
        self.rows = 0
        self.total = 0.0
        self.counts = np.zeros(len(tf.target.classes), dtype=np.int64)

    def add(self, y: np.ndarray) -> None:
        self.rows += len(y)
        if self.tf.task == "regression":
            self.total += float(np.sum(self.tf.target.decode_regression(y)))
        else:
            self.counts += np.bincount(y.astype(np.int64), minlength=len(self.counts))

    def result(self) -> dict[str, float]:
        if not self.rows:
            return {}
        if self.tf.task == "regression":
            return {"mean": self.total / self.rows}
        classes = self.tf.target.classes
        return {str(c): float(n / self.rows) for c, n in zip(classes, self.counts, strict=True)}
