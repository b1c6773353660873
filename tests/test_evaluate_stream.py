"""The evaluate stage streams the test split: the same result as scoring it read whole (the
computation evaluate_candidate made before it streamed, rebuilt here from the module's
in-memory pieces), on a test split written as several shards and read in batches smaller
than a shard, with a champion that reads other columns than the candidate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from torchkfp import evaluation
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.config import ConfigError, DataConfig
from torchkfp.errors import DataValidationError
from torchkfp.evaluation import (
    NO_CHAMPION,
    NO_USABLE_CHAMPION,
    GateRules,
    SliceCodes,
    SliceCollector,
    SliceGate,
    evaluate_candidate,
    gate,
    score,
    stream_scores,
)
from torchkfp.predictor import Predictor

SHARD_ROWS = 700
SLICES = ["carrier", "manufacturer", "bucket", "flight", "flight_date", "flag"]


def _reshard(src: str, dst: Path, edit=None) -> Path:
    """A copy of the dataset ``src`` whose test split is shards of SHARD_ROWS rows, with two
    more columns: ``bucket`` (int64, NULL only in the last shard) and ``flag`` (bool);
    ``edit(table) -> table`` changes the test rows before they are written."""
    shutil.copytree(src, dst)
    test = dataset_artifact.read_split(dst, "test")
    n = test.num_rows
    bucket = pa.array([None if i >= n - 50 and i % 3 == 0 else i % 7 for i in range(n)], pa.int64())
    test = test.append_column("bucket", bucket).append_column(
        "flag", pa.array([i % 5 == 0 for i in range(n)])
    )
    if edit is not None:
        test = edit(test)
    shutil.rmtree(dst / "test")
    dataset_artifact.write_split(dst, "test", test, SHARD_ROWS)
    return dst


@pytest.fixture(scope="module")
def sharded(stage_outputs, tmp_path_factory) -> Path:
    out = _reshard(stage_outputs["dataset"], tmp_path_factory.mktemp("sharded") / "dataset")
    assert len(dataset_artifact.split_files(out, "test")) >= 5
    return out


@pytest.fixture(scope="module")
def other_champion(stage_outputs, tmp_path_factory) -> str:
    """A model trained on other columns than the candidate: numbers the candidate does not
    read (origin_hour_flights, origin_day_flights) and ``flight`` (int64) as a category."""
    from torchkfp.preprocess import preprocess
    from torchkfp.training import launch

    cfg = stage_outputs["config"]
    root = tmp_path_factory.mktemp("champion")
    data = DataConfig.from_dict(
        {
            **cfg.data.to_dict(),
            "numeric_features": [
                "dep_hour",
                "distance",
                "origin_hour_flights",
                "origin_day_flights",
            ],
            "categorical_features": ["carrier", "origin", "flight"],
        }
    )
    preprocess(data, cfg.preprocess, stage_outputs["dataset"], root / "t", root / "f")
    tc = cfg.train.model_copy(update={"epochs": 1, "nproc_per_node": 1, "export_onnx": False})
    launch(tc, root / "f", root / "t", root / "model", tensorboard=False)
    return str(root / "model")


def whole_frame(ec, model_dir, dataset_dir, champion_dir=None) -> dict:
    """What evaluate_candidate computed before it streamed: the test split read whole into
    pandas, each model scored on all of it (reasons and slices as the result has them)."""
    cand = Predictor(model_dir)
    rules = GateRules.for_task(ec, cand.task)
    test = dataset_artifact.read_split(dataset_dir, "test").to_pandas()
    cols = evaluation.check_slice_columns(ec.slice_columns, list(test.columns))
    scored = score(cand, test, ec.threshold)
    champ_scored, notes = None, []
    if champion_dir is not None:
        try:
            champ_scored = score(Predictor(champion_dir), test, ec.threshold)
        except (KeyError, ValueError) as e:
            notes.append(f"champion at {champion_dir} cannot score this test set ({e})")
    champ_metrics = champ_scored["metrics"] if champ_scored else None
    promote, reasons = gate(rules, scored["metrics"], champ_metrics)
    if notes:
        reasons = [NO_USABLE_CHAMPION if r == NO_CHAMPION else r for r in reasons]
    slices, slice_notes, blocking = SliceGate.for_rules(ec, rules, cand.task).table(
        test,
        cols,
        (scored["y"], scored["pred"]),
        (champ_scored["y"], champ_scored["pred"]) if champ_scored else None,
    )
    if blocking:
        if promote:
            reasons.remove("promote")
        promote = False
        reasons += blocking
    return {
        "scored": scored,
        "champ": champ_scored,
        "promote": promote,
        "reasons": reasons + notes,
        "slices": slices,
        "slice_notes": slice_notes,
    }


def assert_same(r, old) -> None:
    assert r.metrics == old["scored"]["metrics"]
    assert r.confusion == old["scored"].get("confusion")
    assert r.roc == old["scored"].get("roc", [])
    assert r.champion_metrics == (old["champ"]["metrics"] if old["champ"] else None)
    assert (r.promote, r.reasons) == (old["promote"], old["reasons"])
    # the slices as the JSON report writes them (types included: an int stays an int)
    assert json.dumps(r.slices) == json.dumps(old["slices"])
    assert r.slice_notes == old["slice_notes"]
    d = r.report_data
    assert np.array_equal(d.y, old["scored"]["y"]) and d.y.dtype == old["scored"]["y"].dtype
    assert np.array_equal(d.candidate.pred, old["scored"]["pred"])
    if old["champ"] is not None:
        assert np.array_equal(d.champion.pred, old["champ"]["pred"])


def test_streaming_equals_the_whole_frame_with_a_champion_on_other_columns(
    stage_outputs, sharded, other_champion, monkeypatch
):
    # network calls of 1000 rows (the test split has ~4k): several scoring chunks, each
    # gathered from batches of 256 rows read from shards of 700
    monkeypatch.setattr("torchkfp.predictor.CHUNK", 1000)
    ec = stage_outputs["config"].evaluate.model_copy(
        update={"slice_columns": SLICES, "slice_min_examples": 100, "slice_tolerance": 0.001}
    )
    model = stage_outputs["model"]
    old = whole_frame(ec, model, sharded, other_champion)
    r = evaluate_candidate(ec, model, sharded, other_champion, batch_rows=256)
    assert_same(r, old)
    # the comparison is not vacuous: a real champion, slices that block, NULLs, the cap
    assert r.champion_metrics is not None and r.metrics != r.champion_metrics
    assert not r.promote and r.blocked_slices()
    values = {(s["column"], s["value"]) for s in r.slices}
    assert ("manufacturer", None) in values and ("bucket", None) in values
    assert ("bucket", 3.0) in values  # NULLs in the last shard only: floats, as pandas makes
    assert any(s["column"] == "flight_date" for s in r.slices)
    assert any(n.startswith("flight: ") for n in r.slice_notes)
    assert r.html().count('<tr class="blocked">') == len(r.blocked_slices())


def test_batches_smaller_than_a_shard_at_the_default_chunk(stage_outputs, sharded):
    ec = stage_outputs["config"].evaluate.model_copy(
        update={"slice_columns": ["carrier", "bucket"]}
    )
    model = stage_outputs["model"]
    old = whole_frame(ec, model, sharded)
    for batch_rows in (100, SHARD_ROWS + 1):
        assert_same(evaluate_candidate(ec, model, sharded, batch_rows=batch_rows), old)


def test_only_the_needed_columns_are_read(stage_outputs, sharded, other_champion, monkeypatch):
    seen = []
    real = dataset_artifact.iter_split

    def spy(path, split, columns=None, batch_rows=65536):
        seen.append(list(columns))
        return real(path, split, columns, batch_rows)

    monkeypatch.setattr(dataset_artifact, "iter_split", spy)
    cand, champ = Predictor(stage_outputs["model"]), Predictor(other_champion)
    stream_scores([cand, champ], sharded, slice_columns=["bucket"])
    [columns] = seen
    want = {*cand.feature_names, *champ.feature_names, cand.target.label, "bucket"}
    assert set(columns) == want and len(columns) == len(want)
    assert "flight_date" not in columns and "flag" not in columns


def test_a_champion_missing_columns_is_no_usable_champion_as_before(
    stage_outputs, other_champion, tmp_path
):
    ds = _reshard(
        stage_outputs["dataset"], tmp_path / "ds", lambda t: t.drop(["origin_day_flights"])
    )
    ec = stage_outputs["config"].evaluate
    r = evaluate_candidate(ec, stage_outputs["model"], ds, other_champion, batch_rows=300)
    [note] = r.notes
    assert note == (
        f"champion at {other_champion} cannot score this test set "
        """("missing feature column(s): ['origin_day_flights']")"""
    )
    assert r.promote and r.reasons[:2] == ["promote", NO_USABLE_CHAMPION]
    assert note == whole_frame(ec, stage_outputs["model"], ds, other_champion)["reasons"][-1]
    # the candidate itself missing a column: an error naming it, not a KeyError traceback
    with pytest.raises(
        DataValidationError, match=r"the test split lacks column\(s\) \['origin_day"
    ):
        evaluate_candidate(ec, other_champion, ds)
    # a slice column the split lacks: as before
    bad = ec.model_copy(update={"slice_columns": ["nope"]})
    with pytest.raises(ConfigError, match=r"evaluate.slice_columns: \['nope'\] not column"):
        evaluate_candidate(bad, stage_outputs["model"], ds)


def test_label_problems_are_counted_over_the_whole_split(stage_outputs, tmp_path, monkeypatch):
    """A label problem in several chunks: the error names what the whole split holds, as
    scoring it read whole does (unseen classes from two shards; every missing label)."""
    monkeypatch.setattr("torchkfp.predictor.CHUNK", 500)
    n = dataset_artifact.read_split(stage_outputs["dataset"], "test").num_rows

    def labels(values):
        return lambda t: t.set_column(
            t.schema.get_field_index("is_late"), "is_late", pa.array(values, pa.int32())
        )

    unseen = [7 if i == 10 else 9 if i == n - 10 else i % 2 for i in range(n)]
    missing = [None if i in (5, 2000, n - 1) else i % 2 for i in range(n)]
    model = stage_outputs["model"]
    ec = stage_outputs["config"].evaluate
    for name, values, words in (
        ("unseen", unseen, r"value\(s\) \['7', '9'\] in the test split never seen"),
        ("missing", missing, r"has 3 missing value\(s\) in the test split"),
    ):
        ds = _reshard(stage_outputs["dataset"], tmp_path / name, labels(values))
        with pytest.raises(DataValidationError, match=words) as streamed:
            evaluate_candidate(ec, model, ds, batch_rows=256)
        with pytest.raises(DataValidationError) as whole:
            whole_frame(ec, model, ds)
        assert str(streamed.value) == str(whole.value)


def test_slice_codes_group_as_the_whole_column_whatever_the_chunks():
    rng = np.random.default_rng(0)
    n = 3000
    ints = [
        None if rng.random() < 0.01 and i > 2500 else int(rng.integers(0, 60)) for i in range(n)
    ]
    table = pa.table(
        {
            "i": pa.array(ints, pa.int64()),
            "s": pa.array([None if i % 97 == 0 else f"v{i % 13}" for i in range(n)]),
            "NULLtext": pa.array(["NULL" if i % 2 else None for i in range(n)]),
            "d": pa.array([float(i % 4) if i % 11 else None for i in range(n)]),
            "b": pa.array([bool(i % 3) for i in range(n)]),
        }
    )
    gate = SliceGate("binary", "roc_auc", True, 0.5, 10, 0.01, max_values=50)
    whole = table.to_pandas()
    for size in (1, 7, 250, 2600, n):
        for name in table.column_names:
            c = SliceCollector(name)
            for start in range(0, n, size):
                part = table.slice(start, size)
                c.add(part.column(name).to_pandas(), part.schema.field(name).type)
            codes = c.result()
            assert isinstance(codes, SliceCodes) and codes.codes.dtype == np.int32
            got, note = gate.groups(codes)
            want, want_note = gate.groups(whole[name].rename(name))
            assert note == want_note
            assert json.dumps([v for v, _ in got]) == json.dumps([v for v, _ in want])
            assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))


def test_tuning_scores_the_streamed_validation_split_as_the_whole_frame(stage_outputs):
    from torchkfp.tuning import SplitRows, validation_rows, validation_score

    rows = validation_rows(stage_outputs["dataset"])
    assert isinstance(rows, SplitRows) and rows.rows > 0
    frame = dataset_artifact.read_split(stage_outputs["dataset"], "validation").to_pandas()
    assert rows.rows == len(frame)
    for metric in ("roc_auc", "log_loss", "accuracy"):
        streamed = validation_score(stage_outputs["model"], rows, metric)
        assert streamed == validation_score(stage_outputs["model"], frame, metric)
