"""torchkfp.content_hash: the order-independent, batch-by-batch fingerprint of a table's rows."""

import datetime as dt
import decimal

import numpy as np
import pyarrow as pa
import pytest

from torchkfp.content_hash import ContentHash, column_words, row_hashes


def _table(n: int = 3000) -> pa.Table:
    rng = np.random.default_rng(7)
    ints = rng.integers(-(10**12), 10**12, n)
    return pa.table(
        {
            "i": pa.array(ints, pa.int64()),
            "small": pa.array(rng.integers(0, 5, n), pa.int32()),
            "f": pa.array([None if k % 11 == 0 else float(x) / 7 for k, x in enumerate(ints)]),
            "s": pa.array([None if k % 13 == 0 else f"v{x % 97}" for k, x in enumerate(ints)]),
            "d": pa.array([dt.date(2013, 1, 1) + dt.timedelta(days=k % 365) for k in range(n)]),
            "ts": pa.array(
                [dt.datetime(2013, 1, 1) + dt.timedelta(minutes=k) for k in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "b": pa.array([None if k % 17 == 0 else bool(k % 2) for k in range(n)]),
            "dec": pa.array([decimal.Decimal(k) / 8 for k in range(n)], pa.decimal128(20, 3)),
            "cat": pa.array([f"c{k % 4}" for k in range(n)]).dictionary_encode(),
            "lst": pa.array([[k, k + 1] if k % 5 else None for k in range(n)]),
        }
    )


def _digest(batches, schema, context=None) -> str:
    h = ContentHash(schema, context)
    for b in batches:
        h.update(b)
    return h.hexdigest()


def test_same_rows_in_any_order_and_any_batches_give_the_same_fingerprint():
    t = _table()
    base = _digest(t.to_batches(), t.schema)
    assert len(base) == 64
    shuffled = t.take(np.random.default_rng(1).permutation(t.num_rows))
    assert _digest(shuffled.to_batches(max_chunksize=257), t.schema) == base
    reversed_ = t.take(np.arange(t.num_rows)[::-1].copy())
    assert _digest(reversed_.to_batches(max_chunksize=1000), t.schema) == base
    # zero-copy slices (buffers with offsets) hash as their copies do
    sliced = [t.slice(s, 700) for s in range(0, t.num_rows, 700)]
    assert _digest([s.combine_chunks().to_batches()[0] for s in sliced], t.schema) == base
    assert np.array_equal(row_hashes(t.slice(1234, 10)), row_hashes(t)[1234:1244])


@pytest.mark.parametrize("column", ["i", "small", "f", "s", "d", "ts", "b", "dec", "cat", "lst"])
def test_one_changed_value_changes_the_fingerprint(column):
    t = _table()
    base = _digest(t.to_batches(), t.schema)
    values = t.column(column).to_pylist()
    k = 1  # a row with a value in every column
    old = values[k]
    new = {
        int: lambda v: v + 1,
        float: lambda v: float(np.nextafter(v, np.inf)),  # the smallest change
        str: lambda v: v + "x",
        bool: lambda v: not v,
        dt.date: lambda v: v + dt.timedelta(days=1),
        dt.datetime: lambda v: v + dt.timedelta(microseconds=1),
        decimal.Decimal: lambda v: v + decimal.Decimal("0.001"),
        list: lambda v: [*v, 0],
    }[type(old)](old)
    for changed in (new, None):  # another value; NULL
        values[k] = changed
        col = pa.array(values, t.schema.field(column).type.value_type) if column == "cat" else None
        col = (
            col.dictionary_encode() if col is not None else pa.array(values, t.column(column).type)
        )
        other = t.set_column(t.schema.get_field_index(column), column, col)
        assert _digest(other.to_batches(), t.schema) != base, (column, changed)


def test_rows_are_hashed_as_rows_not_as_columns():
    # the same values in each column, paired differently: other rows, another fingerprint
    a = pa.table({"x": [1, 2], "y": ["a", "b"]})
    b = pa.table({"x": [1, 2], "y": ["b", "a"]})
    assert _digest(a.to_batches(), a.schema) != _digest(b.to_batches(), b.schema)
    # a duplicated row counts
    c = pa.table({"x": [1, 2, 2], "y": ["a", "b", "b"]})
    assert _digest(c.to_batches(), c.schema) != _digest(a.to_batches(), a.schema)
    # NULL is not 0 nor ''; sign flips in two columns do not cancel out
    n = pa.table({"x": pa.array([None, 2], pa.int64()), "y": [None, "b"]})
    z = pa.table({"x": [0, 2], "y": ["", "b"]})
    assert _digest(n.to_batches(), n.schema) != _digest(z.to_batches(), z.schema)
    p = pa.table({"u": [1.0], "v": [2.0]})
    m = pa.table({"u": [-1.0], "v": [-2.0]})
    assert _digest(p.to_batches(), p.schema) != _digest(m.to_batches(), m.schema)
    # strings are not cut alike: ('ab', 'c') is not ('a', 'bc')
    s1 = pa.table({"a": ["ab"], "b": ["c"]})
    s2 = pa.table({"a": ["a"], "b": ["bc"]})
    assert _digest(s1.to_batches(), s1.schema) != _digest(s2.to_batches(), s2.schema)


def test_names_types_and_context_are_part_of_the_fingerprint():
    t = pa.table({"x": pa.array([1, 2], pa.int64())})
    base = _digest(t.to_batches(), t.schema, {"sql": "q"})
    renamed = t.rename_columns(["y"])
    assert _digest(renamed.to_batches(), renamed.schema, {"sql": "q"}) != base
    narrow = t.cast(pa.schema([pa.field("x", pa.int32())]))
    assert _digest(narrow.to_batches(), narrow.schema, {"sql": "q"}) != base
    assert _digest(t.to_batches(), t.schema, {"sql": "q2"}) != base
    assert _digest([], t.schema, {"sql": "q"}) != base  # no rows


def test_string_words_are_the_same_for_string_and_large_string_and_dictionary():
    values = ["", "a", None, "héllo", "a" * 1000]
    words = column_words(pa.array(values))
    assert np.array_equal(words, column_words(pa.array(values, pa.large_string())))
    assert np.array_equal(words, column_words(pa.array(values).dictionary_encode()))
    assert len(set(words.tolist())) == 5


def test_a_batch_with_other_columns_is_refused():
    h = ContentHash(pa.schema([("x", pa.int64())]))
    with pytest.raises(ValueError, match=r"batch columns \['y'\] are not the schema's \['x'\]"):
        h.update(pa.table({"y": [1]}))
