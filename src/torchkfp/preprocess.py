"""Stage 2: validate the dataset, fit the transform on the training split, and write
training-ready tensors for every split.

Outputs: a Transform artifact and a Features artifact (formats:
:mod:`torchkfp.artifacts.transform`, :mod:`torchkfp.artifacts.features`).

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
from torchkfp.labels import fit_target
from torchkfp.transform import fit


@dataclass
class PreprocessResult:
    transform_path: str
    features_path: str
    rows: dict[str, int]
    label_stats: dict[str, dict[str, float]]
    seconds: float


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
    frames = {}
    for split in dataset_artifact.SPLITS:
        table = dataset_artifact.read_split(dataset_dir, split)
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DataValidationError(
                f"dataset {str(dataset_dir)!r} lacks column(s) {missing}; "
                "re-run ingestion or fix data.*_features/label in the config"
            )
        frames[split] = table.select(columns).to_pandas()
    train = frames["train"]
    if len(train) == 0:
        raise DataValidationError(
            "the training split is empty: change the split settings (split.*) or the query"
        )
    target = fit_target(train[d.label], d.task, d.label, d.max_classes)
    tf = fit(
        train,
        target=target,
        numeric_features=d.numeric_features,
        categorical_features=d.categorical_features,
        min_category_count=settings.min_category_count,
        max_vocab_size=settings.max_vocab_size,
    )
    labels = {split: tf.labels(df, split) for split, df in frames.items()}  # checks every split
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

    fdir = artifacts.begin(features_dir)
    rows: dict[str, int] = {}
    label_stats: dict[str, dict[str, float]] = {}
    unknown: dict[str, dict[str, float]] = {}
    for split, df in frames.items():
        arrays = tf.transform(df)
        yy = labels[split]
        features_artifact.write_split(fdir, split, arrays["x_num"], arrays["x_cat"], yy)
        rows[split] = int(len(df))
        unknown[split] = {
            name: float((arrays["x_cat"][:, i] == 0).mean()) if len(df) else 0.0
            for i, name in enumerate(tf.categorical_features)
        }
        label_stats[split] = _label_stats(tf, yy)
    artifacts.commit(
        fdir,
        features_artifact.KIND,
        {
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


def _label_stats(tf, y: np.ndarray) -> dict[str, float]:
    """Per split: class shares (classification) or the label's mean (regression, in its own
    units), for the features metadata."""
    if not len(y):
        return {}
    if tf.task == "regression":
        return {"mean": float(np.mean(tf.target.decode_regression(y)))}
    counts = np.bincount(y.astype(np.int64), minlength=len(tf.target.classes))
    return {str(c): float(n / len(y)) for c, n in zip(tf.target.classes, counts, strict=True)}
