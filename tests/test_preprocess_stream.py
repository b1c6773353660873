"""Preprocessing in bounded memory: the one-pass fit (running moments, bounded counters, the
label's target) and the chunk-by-chunk apply give what the whole-table fit gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from torchkfp import preprocess as preprocess_module
from torchkfp.artifacts import features as features_artifact
from torchkfp.errors import DataValidationError
from torchkfp.labels import TargetFit, fit_target
from torchkfp.running import BoundedCounter, RunningMoments
from torchkfp.transform import TransformFit, fit


def test_running_moments_equal_numpy_whatever_the_chunks():
    rng = np.random.default_rng(0)
    x = rng.normal(1e3, 5.0, 100_003)
    x[::17] = np.nan
    for size in (1, 7, 1000, len(x)):
        m = RunningMoments()
        for start in range(0, len(x), size if size > 1 else 10_007):
            m.add(x[start : start + (size if size > 1 else 10_007)])
        ok = x[~np.isnan(x)]
        assert m.count == ok.size
        assert m.mean == pytest.approx(float(ok.mean()), rel=1e-12)
        assert m.std == pytest.approx(float(ok.std()), rel=1e-9)


def test_bounded_counter_is_exact_under_its_bound_and_keeps_the_frequent_keys_beyond():
    c = BoundedCounter(max_keys=100)
    c.add(pd.Series(["a", "b", "a", None], dtype="string"))
    c.add(pd.Series(["a", "c"], dtype="string"))
    assert c.counts == {"a": 3, "b": 1, "c": 1} and not c.pruned
    assert c.most_common(min_count=1, limit=2) == ["a", "b"]  # ties by key
    # an ID-like column: thousands of singletons beside two frequent keys
    for i in range(50):
        c.add(pd.Series([*(f"id{i}-{j}" for j in range(40)), "a", "a", "z"], dtype="string"))
    assert c.pruned and len(c.counts) <= 100
    assert c.most_common(min_count=5, limit=10) == ["a", "z"]
    assert c.counts["a"] == 3 + 100 and c.counts["z"] == 50


def test_the_chunked_fit_equals_the_whole_table_fit():
    rng = np.random.default_rng(1)
    n = 5000
    df = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "gap": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
            "cat": rng.choice(["a", "b", "c", "rare"], size=n, p=[0.5, 0.3, 0.1995, 0.0005]),
            "code": rng.integers(0, 30, size=n).astype(float),
            "y": rng.integers(0, 2, size=n),
        }
    )
    target = fit_target(df["y"], "binary", "y")
    kwargs = dict(numeric_features=["x", "gap"], categorical_features=["cat", "code"])
    whole = fit(df, target=target, min_category_count=3, max_vocab_size=20, **kwargs)
    f = TransformFit(min_category_count=3, max_vocab_size=20, **kwargs)
    t = TargetFit("binary", "y")
    for start in range(0, n, 333):
        f.add(df.iloc[start : start + 333])
        t.add(df["y"].iloc[start : start + 333])
    chunked = f.result(t.result())
    assert chunked.vocab == whole.vocab and chunked.target == whole.target
    for name, s in whole.numeric.items():
        got = chunked.numeric[name]
        assert got.add_missing_flag == s.add_missing_flag
        assert got.mean == pytest.approx(s.mean, rel=1e-12)
        assert got.std == pytest.approx(s.std, rel=1e-12)


def test_a_label_check_fails_the_same_in_any_chunk():
    t = TargetFit("multiclass", "lbl", max_classes=3)
    for part in ([0, 1], [1, 2], [3, 0]):
        t.add(pd.Series(part))
    with pytest.raises(DataValidationError, match="more than data.max_classes=3"):
        t.result()
    t = TargetFit("regression", "lbl")
    t.add(pd.Series([1.0, 2.0]))
    t.add(pd.Series([None, 3.0]))
    with pytest.raises(DataValidationError, match="1 missing value"):
        t.result()


def test_preprocess_in_small_chunks_writes_the_same_features(tmp_path, stage_outputs, monkeypatch):
    """The session's features (the default chunk size) against a run in chunks of 1000 rows
    over the same dataset: the same transform and the same arrays, byte for byte."""
    cfg = stage_outputs["config"]
    monkeypatch.setattr(preprocess_module, "CHUNK_ROWS", 1000)
    r = preprocess_module.preprocess(
        cfg.data, cfg.preprocess, stage_outputs["dataset"], tmp_path / "t", tmp_path / "f"
    )
    want = json.loads((tmp_path / "t" / "transform.json").read_text())
    got = json.loads((Path(stage_outputs["transform"]) / "transform.json").read_text())
    assert want["vocab"] == got["vocab"] and want["target"] == got["target"]
    for name, s in got["numeric"].items():
        assert want["numeric"][name]["mean"] == pytest.approx(s["mean"], rel=1e-12)
    for split, rows in r.rows.items():
        a = features_artifact.load_raw(tmp_path / "f", split)
        b = features_artifact.load_raw(stage_outputs["features"], split)
        assert len(a["y"]) == rows > 1000 or split != "train"
        for k in a:
            assert a[k].dtype == b[k].dtype
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6)
