"""torchkfp.transform: the preprocessing transform, fitted on the training split only."""

import decimal
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from torchkfp.labels import Target
from torchkfp.transform import VERSION, FittedTransform, category_key, fit


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


# ---- category keys: one rule for fitting and applying --------------------------------------
def _fit_cats(df: pd.DataFrame, *cats: str) -> FittedTransform:
    df = df.assign(y=0)
    return fit(
        df,
        target=Target("binary", "y", classes=[0, 1]),
        numeric_features=[],
        categorical_features=list(cats),
        min_category_count=1,
    )


def _codes(tf: FittedTransform, name: str, values: list) -> list[int]:
    """Codes of ``values`` for feature ``name`` (the only feature of ``tf``), through the
    per-value path (an object column) and the typed-column path where the values allow one."""
    col = np.empty(len(values), dtype=object)
    col[:] = values
    return tf.transform(pd.DataFrame({name: col}))["x_cat"][:, 0].tolist()


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (1, "1"),
        (np.int64(-3), "-3"),
        (1.0, "1"),
        (-0.0, "0"),
        (np.float32(2.0), "2"),
        (1e20, "100000000000000000000"),
        (1.5, "1.5"),
        (np.float32(0.1), "0.1"),
        (1e-5, "1e-05"),
        (float("inf"), "inf"),
        (True, "True"),
        (np.bool_(False), "False"),
        ("1", "1"),
        ("1.0", "1.0"),
        (" 1", " 1"),
        (decimal.Decimal("2.00"), "2"),
        (decimal.Decimal("1.50"), "1.5"),
        (pd.Timestamp("2013-01-01"), "2013-01-01"),
        (None, None),
        (float("nan"), None),
        (pd.NA, None),
        (pd.NaT, None),
    ],
)
def test_category_key(value, key):
    assert category_key(value) == key


def test_integral_numbers_match_whatever_their_type():
    """A column of integers with nulls reaches pandas as float64 (1.0, 2.0, NaN): its
    vocabulary holds "1", "2", and 1, 1.0, "1", NumPy ints and floats all match, on the
    per-value (serving) path and the typed-column (batch) path alike."""
    table = pa.table({"month": pa.array([1, 1, 2, 2, 2, None, 12], pa.int64())})
    train = table.to_pandas()
    assert train["month"].dtype == np.float64  # the nulls made it float
    tf = _fit_cats(train, "month")
    assert tf.vocab["month"] == ["2", "1", "12"]
    assert tf.to_dict()["version"] == VERSION == 3  # vocabularies of keys
    same = [1, 1.0, "1", np.int64(1), np.float32(1.0), decimal.Decimal("1.0")]
    assert _codes(tf, "month", same) == [2] * len(same)
    assert _codes(tf, "month", ["1.0", "01", 1.5, True, None, 13]) == [0] * 6
    for typed in (
        pd.Series([1, 12, 2], dtype="int64"),
        pd.Series([1.0, 12.0, 2.0], dtype="float32"),
        pd.Series([1, 12, None], dtype="Int64"),
        pd.Series(["1", "12", None], dtype="string"),
    ):
        got = tf.transform(pd.DataFrame({"month": typed}))["x_cat"][:, 0].tolist()
        assert got[:2] == [2, 3] and got[2] in (1, 0), typed.dtype
    # fitted on integers without nulls: the same vocabulary
    assert _fit_cats(pd.DataFrame({"month": [1, 1, 2, 2, 2, 12]}), "month").vocab == tf.vocab


def test_non_integral_floats_and_booleans():
    train = pd.DataFrame(
        {"rate": [1.5, 1.5, 0.1, 2.0, np.nan], "flag": [True, True, False, True, False]}
    )
    tf = _fit_cats(train, "rate", "flag")
    assert tf.vocab == {"rate": ["1.5", "0.1", "2"], "flag": ["True", "False"]}
    rate = FittedTransform(target=tf.target, vocab={"rate": tf.vocab["rate"]})
    assert _codes(rate, "rate", [1.5, "1.5", np.float32(1.5), 0.1, np.float32(0.1), 2, "2"]) == [
        1,
        1,
        1,
        2,
        2,
        3,
        3,
    ]
    assert _codes(rate, "rate", [1.50000001, "1.50", "0.10", 2.5]) == [0, 0, 0, 0]
    flag = FittedTransform(target=tf.target, vocab={"flag": tf.vocab["flag"]})
    # booleans are categories of their own: 1 and 0 are not True and False
    assert _codes(flag, "flag", [True, np.bool_(True), "True", False, "False"]) == [1, 1, 1, 2, 2]
    assert _codes(flag, "flag", [1, 0, "true", 1.0, None]) == [0, 0, 0, 0, 0]
    large = tf.transform(pd.DataFrame({"rate": np.full(300, 2.0), "flag": np.full(300, False)}))
    assert set(large["x_cat"][:, 0]) == {3} and set(large["x_cat"][:, 1]) == {2}


def test_version_2_vocabulary_still_matches(tmp_path):
    """A version 2 file keyed a float column as pandas wrote it ("1.0"): it still loads, and
    1, 1.0, "1" and "1.0" all match that entry; entries that are not floats get no alias."""
    v2 = {
        "version": 2,
        "label": "y",
        "target": Target("binary", "y", classes=[0, 1]).to_dict(),
        "numeric": {},
        "vocab": {"month": ["1.0", "2.0", "1e+20"], "code": ["01", "7"]},
    }
    path = tmp_path / "transform.json"
    path.write_text(json.dumps(v2))
    tf = FittedTransform.load(path)
    assert tf.version == 2
    got = tf.transform(
        pd.DataFrame(
            {
                "month": pd.Series([1, 1.0, "1", "1.0", 2, 1e20, 3], dtype=object),
                "code": pd.Series([1, "01", 7, "7", 7.0, None, "1"], dtype=object),
            }
        )
    )["x_cat"]
    assert got[:, 0].tolist() == [1, 1, 1, 1, 2, 3, 0]
    assert got[:, 1].tolist() == [0, 1, 2, 2, 2, 0, 0]  # "01" is not the number 1
    tf.save(tmp_path / "again.json")  # its entries are not keys: it stays a version 2 file
    assert json.loads((tmp_path / "again.json").read_text())["version"] == 2
    assert FittedTransform.load(tmp_path / "again.json") == tf


def test_newer_transform_version_is_refused_clearly():
    with pytest.raises(ValueError, match=r"transform version 4 is not supported.*upgrade torchkfp"):
        FittedTransform.from_dict({"version": 4, "label": "y", "numeric": {}, "vocab": {}})


# ---- the row-wise fast path (serving) gives the pandas path's arrays, bit for bit -------------
def _rich_transform() -> FittedTransform:
    """Numeric features with and without missing values in training; categorical features
    fitted on strings, on integers with nulls (float64: "1", "2"), on non-integral floats and
    on booleans."""
    rng = np.random.default_rng(0)
    n = 400
    train = pd.DataFrame(
        {
            "a": rng.normal(10, 3, n),
            "b": np.where(rng.random(n) < 0.2, np.nan, rng.normal(-2, 0.5, n)),
            "s": rng.choice(["UA", "AA", "DL", "1", "1.0", "é"], n),
            "m": pd.array(rng.choice([1, 2, 3, 12, None], n), dtype="Int64").astype("float64"),
            "r": rng.choice([0.1, 1.5, 2.0, 1e20], n),
            "f": rng.choice([True, False], n),
            "y": 0,
        }
    )
    return fit(
        train,
        target=Target("binary", "y", classes=[0, 1]),
        numeric_features=["a", "b"],
        categorical_features=["s", "m", "r", "f"],
        min_category_count=1,
    )


def _random_values(rng: np.random.Generator, n: int) -> dict[str, list]:
    """Values a server's validator lets through (numeric: float or NaN; categorical: str,
    int, float, bool or None), mixing known, unknown and missing values and numbers written
    as strings and as other number types."""
    numeric = [1e-3, -7.25, 10.0, 0.0, -0.0, 1e6, 123456.789, float("nan")]
    cats = [
        "UA", "AA", "1", "1.0", "é", "zzz", "", " 1", "True", None, float("nan"),
        1, 2, 12, 13, -1, 2**60 + 1, 10**30, 1.0, 2.0, 12.0, 1.5, 0.1, 1e20, 1e-20, 2.5,
        True, False,
    ]  # fmt: skip
    pick = lambda pool: [pool[i] for i in rng.integers(0, len(pool), n)]  # noqa: E731
    return {
        "a": [float(x) for x in rng.normal(10, 3, n)],
        "b": pick(numeric),
        "s": pick(cats),
        "m": pick(cats),
        "r": pick(cats),
        "f": pick(cats),
    }


def _pandas_arrays(tf: FittedTransform, cols: dict[str, list]) -> dict[str, np.ndarray]:
    """The pandas path as the server runs it: float64 numeric columns, object categorical
    columns (each value keyed as it is)."""
    n = len(cols["a"])
    data: dict[str, np.ndarray] = {k: np.asarray(cols[k], dtype=np.float64) for k in tf.numeric}
    for k in tf.vocab:
        data[k] = np.empty(n, dtype=object)
        data[k][:] = cols[k]
    return tf.transform(pd.DataFrame(data))


@pytest.mark.parametrize("rows", [1, 2, 4, 5, 7, 64, 300])
def test_row_wise_transform_equals_the_pandas_transform(rows):
    tf = _rich_transform()
    rng = np.random.default_rng(rows)
    cols = _random_values(rng, 2000)
    fast = [
        tf.transform_values({k: v[i : i + rows] for k, v in cols.items()})
        for i in range(0, 2000, rows)
    ]
    slow = _pandas_arrays(tf, cols)
    for name in ("x_num", "x_cat"):
        got = np.concatenate([f[name] for f in fast])
        assert got.dtype == slow[name].dtype and got.shape == slow[name].shape
        np.testing.assert_array_equal(got, slow[name], err_msg=name)
    # every kind of value was seen: known and unknown codes, missing numbers (flag set)
    x_cat = slow["x_cat"]
    assert (x_cat == 0).any(axis=0).all() and (x_cat > 0).any(axis=0).all()
    assert set(np.unique(slow["x_num"][:, 2])) == {0.0, 1.0}  # b's missing-value flag


def test_row_wise_transform_numbers_as_categories_and_edge_rows():
    tf = _rich_transform()
    assert tf.vocab["m"][:4] and set(tf.vocab["m"]) == {"1", "2", "3", "12"}
    one = {"a": [None], "b": [None], "s": [1], "m": ["1"], "r": [2], "f": [True]}
    codes = tf.transform_values(one)["x_cat"][0].tolist()
    as_numbers = {**one, "m": [1.0], "r": ["2"], "f": ["True"]}
    assert tf.transform_values(as_numbers)["x_cat"][0].tolist() == codes
    s, m, r, f = codes
    assert s == tf.vocab["s"].index("1") + 1 and m == tf.vocab["m"].index("1") + 1
    assert r == tf.vocab["r"].index("2") + 1 and f == tf.vocab["f"].index("True") + 1
    x_num = tf.transform_values(one)["x_num"]
    assert x_num.tolist() == [[0.0, 0.0, 1.0]]  # imputed to the mean, b flagged missing
    empty = tf.transform_values({k: [] for k in one})
    assert empty["x_num"].shape == (0, 3) and empty["x_cat"].shape == (0, 4)
    with pytest.raises(KeyError, match=r"missing feature column\(s\): \['f'\]"):
        tf.transform_values({k: v for k, v in one.items() if k != "f"})
