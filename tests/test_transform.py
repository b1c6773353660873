"""torchkfp.transform: the preprocessing transform, fitted on the training split only."""

import json

import numpy as np
import pandas as pd
import pytest

from torchkfp.labels import Target
from torchkfp.transform import FittedTransform, fit


def test_transform_fits_on_train_only_and_handles_missing_and_unknown():
    train = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0, np.nan], "c": ["a", "a", "b", None], "y": [0, 1, 0, 1]}
    )
    tf = fit(
        train,
        target=Target("binary", "y", classes=[0, 1]),
        numeric_features=["x"],
        categorical_features=["c"],
        min_category_count=2,
    )
    assert tf.numeric["x"].mean == pytest.approx(2.0)
    assert tf.numeric["x"].add_missing_flag
    assert tf.vocab["c"] == ["a"]  # "b" is rarer than min_category_count
    out = tf.transform(pd.DataFrame({"x": [2.0, None], "c": ["a", "zzz"]}))
    np.testing.assert_allclose(out["x_num"], [[0.0, 0.0], [0.0, 1.0]], atol=1e-6)
    assert out["x_cat"].tolist() == [[1], [0]]  # unknown -> bucket 0
    round_trip = FittedTransform.from_dict(json.loads(json.dumps(tf.to_dict())))
    assert round_trip == tf
    with pytest.raises(KeyError, match="missing feature column"):
        tf.transform(pd.DataFrame({"x": [1.0]}))


def test_vocabulary_is_most_frequent_first_and_capped():
    train = pd.DataFrame({"c": ["b", "b", "a", "a", "c", "c", "c", "d"], "y": [0] * 8})
    tf = fit(
        train,
        target=Target("binary", "y", classes=[0, 1]),
        numeric_features=[],
        categorical_features=["c"],
        min_category_count=1,
        max_vocab_size=3,
    )
    assert tf.vocab["c"] == ["c", "a", "b"]  # ties broken by value, "d" cut by the cap
    assert tf.cardinalities == [4]  # + the unknown bucket


def test_small_and_large_batches_encode_alike():
    """Serving (a few rows: dict lookups) and batch scoring (pandas) give the same codes."""
    train = pd.DataFrame({"c": ["1", "1", "x", "x", "y"], "n": [1.0, 2.0, 3.0, 4.0, 5.0]})
    train["y"] = 0
    tf = fit(
        train,
        target=Target("binary", "y", classes=[0, 1]),
        numeric_features=["n"],
        categorical_features=["c"],
        min_category_count=1,
    )
    rows = pd.DataFrame(
        {
            "c": [1, "1", "x", None, float("nan"), "zzz", "y"] * 50,
            "n": ["2", 3, None, 1.5, "bad", 2.5, -1] * 50,
        }
    )
    large = tf.transform(rows)  # > 256 rows
    small = [tf.transform(rows.iloc[i : i + 7]) for i in range(0, len(rows), 7)]
    np.testing.assert_array_equal(large["x_cat"], np.concatenate([s["x_cat"] for s in small]))
    np.testing.assert_array_equal(large["x_num"], np.concatenate([s["x_num"] for s in small]))
    assert large["x_cat"][:7, 0].tolist() == [1, 1, 2, 0, 0, 0, 3]
