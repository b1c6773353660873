"""What a DDP rank reads of the features (:mod:`torchkfp.training.data`): its block share of
the training split (disjoint, covering, equal step counts), in memory (one process: exactly
the permutation training always used) or streamed through a shuffle buffer (every row once per
epoch, seeded, in bounded memory), its validation rows, and only its own rows checked; then a
real 2-rank gloo training run streaming its shares."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from torchkfp import artifacts
from torchkfp.artifacts import features
from torchkfp.errors import ArtifactError, TrainingError
from torchkfp.training import data
from torchkfp.training.loop import CHECKPOINT_FILE, shard_indices

CPU = torch.device("cpu")
ROWS = 300_007  # 7.2 MB of x_num + x_cat + y: over a 1 MiB budget on any number of ranks
ROW_BYTES = 3 * 4 + 2 * 4 + 4


def make_features(path: Path, n: int, val: int = 1001, bad: dict | None = None) -> Path:
    """A committed format-2 features artifact of ``n`` training rows whose x_num column 0
    is the row's index (so a batch tells which rows it holds); ``bad``: {split: row} gets a
    NaN."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, rows in (("train", n), ("validation", val)):
        x_num = rng.standard_normal((rows, 3)).astype(np.float32)
        x_num[:, 0] = np.arange(rows)
        x_cat = rng.integers(0, 5, (rows, 2)).astype(np.int32)
        y = (rng.random(rows) < 0.3).astype(np.float32)
        if bad and split in bad:
            x_num[bad[split], 1] = np.nan
        features.write_split(path, split, x_num, x_cat, y)
    meta = {
        "format": features.FORMAT,
        "rows": {"train": n, "validation": val},
        "cardinalities": [5, 5],
        "num_numeric_inputs": 3,
        "task": "binary",
        "data_fingerprint": "f" * 64,
    }
    artifacts.commit(path, features.KIND, meta)
    return path


@pytest.fixture(scope="module")
def feats(tmp_path_factory) -> Path:
    return make_features(tmp_path_factory.mktemp("feats") / "f", ROWS)


def epoch_rows(share, epoch: int, rank: int, batch_size: int = 512) -> list[torch.Tensor]:
    """The row indices of every batch of an epoch."""
    return [b[0][:, 0].long() for b in share.batches(epoch, rank, batch_size, CPU)]


def streamed(path, rank, world, buffer_rows=4096, seed=3):
    share = data.train_share(path, rank, world, seed, 1, buffer_rows, CPU)
    assert share.mode == "stream"
    return share


# ---- the share --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n,world,block", [(101, 4, 8), (64, 2, 8), (1000, 3, 16), (5, 5, 8), (7, 1, 8), (9, 2, 100)]
)
def test_shares_are_strided_blocks_disjoint_covering_and_equal_to_a_row(n, world, block):
    shares = [data.share_indices(n, r, world, block) for r in range(world)]
    every = np.concatenate(shares)
    assert sorted(every.tolist()) == list(range(n))  # disjoint, covering
    per_rank = data.rows_per_rank(n, world)
    assert per_rank == math.ceil(n / world)
    assert all(per_rank - 1 <= len(s) <= per_rank for s in shares)
    for r, s in enumerate(shares):  # the full rounds: blocks r, r + world, ...
        full_rounds = n // (block * world)
        for k in range(full_rounds):
            start = (k * world + r) * block
            assert set(range(start, start + block)) <= set(s.tolist())
        assert np.all(np.diff(s) > 0)  # in row order


def test_one_process_shuffles_exactly_as_training_always_did(feats):
    """world=1, in memory: the epoch's rows are torch.randperm(N) from the generator seeded
    seed * 1_000_003 + epoch, i.e. shard_indices(N, 0, 1, seed, epoch)."""
    share = data.train_share(feats, 0, 1, 3, 1024, 4096, CPU)
    assert share.mode == "memory" and share.rows == share.per_rank == ROWS
    assert share.x_cat.dtype == torch.int32  # codes stay int32 in memory
    for epoch in (0, 2):
        batches = list(share.batches(epoch, 0, 512, CPU))
        assert all(b[1].dtype == torch.int64 for b in batches)  # cast per batch
        got = torch.cat([b[0][:, 0].long() for b in batches])
        assert torch.equal(got, shard_indices(ROWS, 0, 1, 3, epoch))


@pytest.mark.parametrize("budget", [1024, 1], ids=["memory", "stream"])
def test_two_ranks_train_disjoint_shares_of_the_whole_table(feats, budget):
    shares = [data.train_share(feats, r, 2, 0, budget, 4096, CPU) for r in range(2)]
    assert {s.mode for s in shares} == {"memory" if budget > 1 else "stream"}
    rows = [torch.cat(epoch_rows(s, 0, r)) for r, s in enumerate(shares)]
    steps = [len(epoch_rows(s, 0, r)) for r, s in enumerate(shares)]
    per_rank = math.ceil(ROWS / 2)
    assert steps[0] == steps[1] == math.ceil(per_rank / 512)  # DDP: the same steps
    assert len(rows[0]) == len(rows[1]) == per_rank
    mine = [set(r.tolist()) for r in rows]
    assert mine[0].isdisjoint(mine[1]) and len(mine[0] | mine[1]) == ROWS
    for r in (0, 1):  # every rank sees rows from the start and the end of the table
        assert min(mine[r]) < data.BLOCK_ROWS * 2 and max(mine[r]) > ROWS - data.BLOCK_ROWS * 2
    assert set(rows[0].tolist()) == set(data.share_indices(ROWS, 0, 2).tolist())
    raw = features.load_raw(feats, "train")  # every column of a row comes from that row
    for r, s in enumerate(shares):
        x_num, x_cat, y = next(iter(s.batches(1, r, 512, CPU)))
        ids = x_num[:, 0].long().numpy()
        assert np.array_equal(x_num.numpy(), raw["x_num"][ids])
        assert np.array_equal(x_cat.numpy(), raw["x_cat"][ids]) and x_cat.dtype == torch.int64
        assert np.array_equal(y.numpy(), raw["y"][ids])


@pytest.mark.parametrize("budget", [1024, 1], ids=["memory", "stream"])
def test_a_rank_checks_only_its_own_rows(tmp_path, budget):
    """A NaN in block 1 (rank 1's of 2): rank 0 trains, rank 1 is refused with the file."""
    path = make_features(tmp_path / "f", 200_000, bad={"train": data.BLOCK_ROWS + 5})
    share = data.train_share(path, 0, 2, 0, budget, 4096, CPU)
    assert data.BLOCK_ROWS + 5 not in set(torch.cat(epoch_rows(share, 0, 0)).tolist())
    with pytest.raises(ArtifactError, match=r"train: x_num holds NaN or infinite values"):
        data.train_share(path, 1, 2, 0, budget, 4096, CPU)


def test_fewer_rows_than_processes_is_refused(tmp_path):
    path = make_features(tmp_path / "f", 3, val=3)
    with pytest.raises(TrainingError, match="3 rows, fewer than the 4 training processes"):
        data.train_share(path, 0, 4, 0, 1024, 4096, CPU)


# ---- streaming ----------------------------------------------------------------------------
def test_streaming_yields_every_row_of_the_share_once_an_epoch_plus_padding(feats):
    """3 ranks (shares of 100003 and 100002 rows, per_rank 100003): each epoch every row of
    the share exactly once, the short shares one row more (the padding: a row of its own);
    full batches but the last; the same step count on every rank."""
    per_rank = math.ceil(ROWS / 3)
    for r in range(3):
        share = streamed(feats, r, 3)
        mine = data.share_indices(ROWS, r, 3)
        assert share.rows == len(mine)
        for epoch in (0, 1):
            batches = epoch_rows(share, epoch, r, 500)
            assert len(batches) == math.ceil(per_rank / 500)
            assert all(len(b) == 500 for b in batches[:-1])
            got = torch.cat(batches).numpy()
            assert len(got) == per_rank
            values, counts = np.unique(got, return_counts=True)
            assert np.array_equal(values, mine)  # nothing from another rank
            assert (counts - 1).sum() == per_rank - len(mine) == (0 if r == 0 else 1)


def test_streaming_order_is_seeded_per_epoch_and_rank_and_mixes_the_share(feats):
    a = torch.cat(epoch_rows(streamed(feats, 0, 1), 4, 0))
    again = torch.cat(epoch_rows(streamed(feats, 0, 1), 4, 0))  # a fresh reader: resume
    assert torch.equal(a, again)
    assert not torch.equal(a, torch.cat(epoch_rows(streamed(feats, 0, 1), 5, 0)))
    assert not torch.equal(a, torch.cat(epoch_rows(streamed(feats, 0, 1, seed=4), 4, 0)))
    # a batch mixes rows from far apart in the table (pieces from anywhere in the share)
    first = epoch_rows(streamed(feats, 0, 1), 4, 0)[0]
    assert len(set((first // (4096 // data.PIECES_PER_BUFFER)).tolist())) >= 4
    assert int(first.max() - first.min()) > ROWS // 4


def test_streaming_holds_about_one_buffer_not_the_share(feats):
    """Memory allocated while streaming an epoch of a 7.2 MB share through a 4096-row buffer
    stays under 0.5 MB (tracemalloc sees numpy's and torch's CPU buffers)."""
    share = streamed(feats, 0, 1)
    assert share.data_bytes == ROWS * ROW_BYTES > 7_000_000
    tracemalloc.start()
    try:
        steps = sum(1 for _ in share.batches(0, 0, 512, CPU))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert steps == math.ceil(ROWS / 512)
    assert peak < 500_000, peak


def rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


def test_what_a_rank_has_read_does_not_stay_resident(feats):
    """The share is read with file reads into the process's own buffers: an epoch over the
    7.2 MB share leaves no mapped file pages resident (a copy out of the memory map would
    add about 7 MB of RssFile)."""
    share = streamed(feats, 0, 1)
    before = rss_file_kib()
    assert sum(int(b[2].shape[0]) for b in share.batches(0, 0, 512, CPU)) == ROWS
    assert rss_file_kib() - before < 1024
    mapped = np.load(feats / "train" / "x_num.npy", mmap_mode="r")  # the contrast
    before = rss_file_kib()
    assert float(np.array(mapped[:]).sum()) != 0
    assert rss_file_kib() - before > 2000  # 3.6 MB of x_num


def test_data_order_is_recorded_only_when_streaming(feats):
    assert data.data_order(data.train_share(feats, 0, 1, 0, 1024, 4096, CPU)) is None
    assert data.data_order(streamed(feats, 0, 1, buffer_rows=8192)) == {
        "mode": "stream",
        "shuffle_buffer_rows": 8192,
        "piece_rows": 1024,
    }


def test_format_1_features_still_train(tmp_path):
    """A features artifact of format 1 (``<split>.pt``, int64 codes) trains, in memory and
    streamed."""
    new = make_features(tmp_path / "new", 70_000)
    old = tmp_path / "old"
    old.mkdir()
    for split in ("train", "validation"):
        raw = features.load_raw(new, split)
        torch.save(
            {
                k: torch.from_numpy(v).long() if k == "x_cat" else torch.from_numpy(v)
                for k, v in raw.items()
            },
            old / f"{split}.pt",
        )
    meta = json.loads((new / artifacts.METADATA).read_text())
    meta.pop("format")
    artifacts.commit(old, meta.pop("kind"), meta)
    for budget in (1024, 1):
        share = data.train_share(old, 1, 2, 0, budget, 4096, CPU)
        got = torch.cat(epoch_rows(share, 0, 1))
        assert set(got.tolist()) == set(data.share_indices(70_000, 1, 2).tolist())


# ---- validation -------------------------------------------------------------------------
def test_validation_rows_are_strided_by_rank_and_checked_alone(tmp_path, feats):
    for r in range(3):
        v = data.validation_share(feats, r, 3)
        assert v.rows == 1001
        assert v.tensors["x_num"][:, 0].long().tolist() == list(range(r, 1001, 3))
    path = make_features(tmp_path / "f", 100, val=11, bad={"validation": 3})
    assert data.validation_share(path, 0, 2).rows == 11  # row 3 is rank 1's
    with pytest.raises(ArtifactError, match=r"validation: x_num holds NaN"):
        data.validation_share(path, 1, 2)


# ---- a real 2-rank run ----------------------------------------------------------------
@pytest.mark.integration
def test_two_gloo_ranks_train_streaming_their_shares(tmp_path, stage_outputs):
    """The session's features (over 1 MiB of training rows a rank): 2 gloo ranks with
    train.memory_budget_mb=1 stream their shares and write a model; the checkpoint records
    the streaming order, so an in-memory rerun does not resume it."""
    from torchkfp.training import launch

    feats, tf = stage_outputs["features"], stage_outputs["transform"]
    train = features.open_split(feats, "train", check=False)
    row_bytes = sum(getattr(train, k)[:1].nbytes for k in features.ARRAYS)
    assert math.ceil(train.rows / 2) * row_bytes > data.MIB  # streams on 2 ranks
    cfg = stage_outputs["config"].override(
        {"train.epochs": 1, "train.memory_budget_mb": 1, "train.shuffle_buffer_rows": 4096}
    )
    ck = tmp_path / "ck"
    r = launch(cfg.train, feats, tf, tmp_path / "m", ck)
    assert r.world_size == 2 and r.epochs_run == 1 and r.samples_per_s > 0
    identity = torch.load(ck / CHECKPOINT_FILE, weights_only=True)["identity"]
    assert identity["data_order"] == {
        "mode": "stream",
        "shuffle_buffer_rows": 4096,
        "piece_rows": 512,
    }
    assert 0.5 < r.metadata["training"]["history"][0]["val_roc_auc"] < 1
    more = cfg.override({"train.epochs": 2, "train.memory_budget_mb": 1024}).train
    with pytest.raises(TrainingError, match=r"another training run \(differs in \['data_order'\]"):
        launch(more, feats, tf, tmp_path / "m2", ck)
