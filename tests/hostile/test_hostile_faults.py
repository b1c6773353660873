"""Training under faults: each test provokes one fault and checks the exact error the user gets
(type and message) and that no model artifact is committed when none may be.

Divergence, exact resume (a clean stop and a SIGKILL), ``torchkfp run --resume`` after a killed
run, unreadable / unwritable / busy checkpoint folders, the timeout, a worker that raises, a
worker that is killed, more processes than cores. Training runs on a slice of the session's
real features (``stage_outputs``) so each launch costs little more than torchrun's start."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from torchkfp import artifacts
from torchkfp.artifacts import features as features_artifact
from torchkfp.artifacts import model as model_artifact
from torchkfp.config import TrainConfig
from torchkfp.errors import ArtifactError, TrainingError
from torchkfp.training import launch
from torchkfp.training import launcher as launcher_mod
from torchkfp.training.loop import CHECKPOINT_FILE, epoch_seed

pytestmark = pytest.mark.integration

ROWS = {"train": 3000, "validation": 800, "test": 800}

HOSTILE_MODELS = '''
"""Models for fault tests: slow (a sleep per training step, so a test can act between
epochs) or failing (a ValueError after some training steps)."""
import time

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, f, delay, fail_after):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, 4) for c in f.cardinalities)
        self.body = nn.Sequential(
            nn.Linear(f.num_numeric + 4 * len(f.cardinalities), 16),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(16, f.output_size),
        )
        self.delay, self.fail_after, self.calls = delay, fail_after, 0

    def forward(self, x_num, x_cat):
        if self.training:
            self.calls += 1
            if self.fail_after and self.calls > self.fail_after:
                raise ValueError(f"boom in training step {self.calls}")
            time.sleep(self.delay)
        parts = [x_num] + [e(x_cat[:, i]) for i, e in enumerate(self.embeddings)]
        return self.body(torch.cat(parts, dim=1))


def build(features, delay: float = 0.0, fail_after: int = 0):
    return Net(features, delay, fail_after)
'''


# ---- fixtures and helpers ---------------------------------------------------------------
@pytest.fixture(scope="module")
def slim(stage_outputs, tmp_path_factory) -> dict:
    """The session's features cut to a few thousand rows (metadata kept consistent), its
    transform, and a folder with the hostile model factory (``hostile_models:build``)."""
    root = tmp_path_factory.mktemp("hostile")
    src, feats = Path(stage_outputs["features"]), root / "features"
    feats.mkdir()
    meta = json.loads((src / artifacts.METADATA).read_text())
    for split, n in ROWS.items():
        raw = features_artifact.load_raw(src, split)
        features_artifact.save_raw(feats, split, {k: v[:n] for k, v in raw.items()})
        meta["rows"][split] = n
    artifacts.commit(feats, meta.pop("kind"), meta)
    models = root / "models"
    models.mkdir()
    (models / "hostile_models.py").write_text(HOSTILE_MODELS)
    return {
        "features": str(feats),
        "transform": stage_outputs["transform"],
        "models": str(models),
        "config": stage_outputs["config"],
        "all_features": stage_outputs["features"],
    }


def settings(**kw) -> TrainConfig:
    # no ONNX export: the faults here are in training (the export has tests of its own)
    base = {"epochs": 2, "patience": 10, "batch_size": 512, "export_onnx": False}
    return TrainConfig.from_dict({**TrainConfig().to_dict(), **base, **kw})


def hostile(delay: float = 0.0, fail_after: int = 0, **kw) -> TrainConfig:
    args = {"delay": delay, "fail_after": fail_after}
    return settings(model_factory="hostile_models:build", model_args=args, **kw)


@pytest.fixture()
def hostile_path(slim, monkeypatch):
    """Workers (and kfp's stage subprocesses) import the hostile models."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [slim["models"], os.environ.get("PYTHONPATH")]))
    )


def no_model(path: Path) -> None:
    with pytest.raises(ArtifactError):
        artifacts.require(path, model_artifact.KIND)
    assert not (path / artifacts.MARKER).exists()


def torchrun_procs() -> list[psutil.Process]:
    """torchrun processes this test started, and their workers."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "torch.distributed.run" in cmd or "torchkfp.training.worker" in cmd:
            out.append(p)
    return out


def checkpoint_epoch(ck: Path) -> int:
    try:
        return torch.load(ck / CHECKPOINT_FILE, weights_only=True)["epoch"]
    except Exception:  # not there yet
        return 0


class KillAfter(threading.Thread):
    """Watches a checkpoint file and, once it holds ``epoch`` or more, SIGKILLs ``victims()``
    (a list of processes); records the epoch it saw."""

    def __init__(self, ck_file, epoch: int, victims, timeout: float = 600.0):
        super().__init__(daemon=True)
        self.ck_file, self.epoch, self.victims, self.timeout = ck_file, epoch, victims, timeout
        self.seen: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            files = list(self.ck_file()) if callable(self.ck_file) else [self.ck_file]
            for f in files:
                if f.exists() and checkpoint_epoch(f.parent) >= self.epoch:
                    self.seen = checkpoint_epoch(f.parent)
                    for p in self.victims():
                        try:
                            p.kill()
                        except psutil.Error:
                            pass
                    return
            time.sleep(0.02)


def kill_torchrun_group() -> list[psutil.Process]:
    """SIGKILL torchrun's process group, and every worker (a machine lost at once)."""
    procs = torchrun_procs()
    for p in procs:
        if "torch.distributed.run" in " ".join(p.cmdline()):
            os.killpg(p.pid, signal.SIGKILL)
    return procs


def weights(model_dir: Path) -> dict:
    """A committed model artifact's weights."""
    artifacts.require(model_dir, model_artifact.KIND)
    return torch.load(model_dir / model_artifact.WEIGHTS_FILE, weights_only=True)


def states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def optimizer_equal(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        for k, v in a["state"][i].items():
            assert torch.equal(v, b["state"][i][k]), (i, k)


# ---- 1. divergence ----------------------------------------------------------------------
def test_diverged_training_commits_no_model(tmp_path, slim):
    """A valid but huge learning rate: the first epoch's loss is nan. Training stops there
    (all ranks agree), checkpoints nothing of it and writes no model."""
    tc = settings(learning_rate=1e6, epochs=3)
    with pytest.raises(TrainingError) as e:
        launch(tc, slim["features"], slim["transform"], tmp_path / "m", tmp_path / "ck")
    msg = str(e.value)
    assert msg.startswith(
        "training diverged at epoch 1 (train loss nan): lower train.learning_rate"
    )
    assert "the model artifact was not written" in msg and "Traceback" not in msg
    no_model(tmp_path / "m")
    assert not (tmp_path / "ck" / CHECKPOINT_FILE).exists()
    assert not torchrun_procs()


def test_non_finite_validation_loss_is_never_the_best_model(tmp_path, slim):
    """Finite but extreme validation inputs overflow float32: a nan/inf validation loss can
    neither become the best state nor ship."""
    feats = tmp_path / "features"
    shutil.copytree(slim["features"], feats)
    val = features_artifact.load_raw(feats, "validation")
    val["x_num"] = val["x_num"] * 0 + 3e38  # finite, the largest float32s
    features_artifact.save_raw(feats, "validation", val)
    with pytest.raises(
        TrainingError, match=r"^training diverged at epoch 1 \(validation loss (nan|inf)\)"
    ):
        launch(settings(), feats, slim["transform"], tmp_path / "m", tmp_path / "ck")
    no_model(tmp_path / "m")
    assert not (tmp_path / "ck" / CHECKPOINT_FILE).exists()


# ---- 2. exact resume --------------------------------------------------------------------
def _exact_resume_rank(
    rank: int, world: int, init: str, features: str, out: str, extra: dict
) -> None:
    """One gloo rank: 4 epochs in one go (folder a); 2 epochs, then a fresh model and Trainer
    resume from the same folder (b) to 4; both ranks save what they ended with (and how
    their share was read)."""
    from torchkfp.training.worker import build_trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        tc = settings(epochs=4, **extra)
        cpu, res = torch.device("cpu"), {}
        whole, _, _ = build_trainer(tc, features, cpu, rank, world, Path(out) / "a")
        whole.train_loop()
        first, _, _ = build_trainer(tc, features, cpu, rank, world, Path(out) / "b")
        first.train_epoch()
        first.train_epoch()
        del first
        torch.manual_seed(12345)  # whatever the process drew before does not matter
        resumed, _, _ = build_trainer(tc, features, cpu, rank, world, Path(out) / "b")
        resumed.train_loop()
        for name, t in (("whole", whole), ("resumed", resumed)):
            res[name] = {
                "model": t.model.state_dict(),
                "opt": t.opt.state_dict(),
                "best_state": t.best_state,
                "best_epoch": t.best_epoch,
                "history": t.history,
                "epoch": t.epoch,
                "resumed_from": t.resumed_from,
                "mode": t.share.mode,
            }
        torch.save(res, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_two_epochs_then_resume_to_four_equals_four_in_one_go(tmp_path, slim, mode):
    """2 gloo ranks on CPU: the weights, optimizer state, best state and history after 2
    epochs + resume to 4 (same checkpoint folder) are identical to 4 epochs in one go. (The
    stop is a Trainer that is dropped after 2 epochs: ``train.epochs`` stays 4, since it
    shapes the learning-rate schedule.) Both with the shares in memory (the slice) and
    streamed through a shuffle buffer (the session's features, over a 1 MiB budget a rank)."""
    if mode == "memory":
        features, extra = slim["features"], {}
    else:
        features = slim["all_features"]
        extra = {"memory_budget_mb": 1, "shuffle_buffer_rows": 2048}
    mp.spawn(
        _exact_resume_rank,
        args=(2, str(tmp_path / "init"), features, str(tmp_path), extra),
        nprocs=2,
    )
    for rank in (0, 1):
        res = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        whole, resumed = res["whole"], res["resumed"]
        assert whole["mode"] == resumed["mode"] == mode
        assert resumed["resumed_from"] == 2 and whole["resumed_from"] is None
        assert whole["epoch"] == resumed["epoch"] == 4
        states_equal(whole["model"], resumed["model"])
        states_equal(whole["best_state"], resumed["best_state"])
        optimizer_equal(whole["opt"], resumed["opt"])
        assert whole["history"] == resumed["history"]
        assert whole["best_epoch"] == resumed["best_epoch"]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    states_equal(r0["resumed"]["model"], r1["resumed"]["model"])  # DDP: one model


def test_sigkilled_run_resumes_to_identical_weights(tmp_path, slim, hostile_path):
    """torchrun's process group and its workers are SIGKILLed once epoch 2's checkpoint is
    there; the rerun on the same folder resumes and ends with exactly the weights, optimizer
    state and history of a run that was never stopped. Checkpoints load weights-only."""
    tc = hostile(delay=0.03, epochs=5)  # ~0.6 s a training epoch: time to kill mid-run
    feats, tf = slim["features"], slim["transform"]
    whole = launch(tc, feats, tf, tmp_path / "whole", tmp_path / "ck-whole")
    ck = tmp_path / "ck"
    killer = KillAfter(ck / CHECKPOINT_FILE, 2, kill_torchrun_group)
    killer.start()
    try:
        with pytest.raises(TrainingError) as e:
            launch(tc, feats, tf, tmp_path / "killed", ck)
    finally:
        killer.stop.set()
        killer.join()
    assert killer.seen is not None and 2 <= killer.seen < 5
    msg = str(e.value)
    assert "torchrun exited with code" in msg and "the model artifact was not written" in msg
    assert "No worker reported an exception" in msg
    assert f"is in {ck}: a rerun with the same checkpoint folder and settings resumes" in msg
    no_model(tmp_path / "killed")
    assert not torchrun_procs()

    resumed = launch(tc, feats, tf, tmp_path / "resumed", ck)
    assert resumed.resumed_from_epoch is not None and resumed.resumed_from_epoch >= killer.seen
    assert whole.resumed_from_epoch is None
    states_equal(weights(tmp_path / "whole"), weights(tmp_path / "resumed"))
    ca = torch.load(tmp_path / "ck-whole" / CHECKPOINT_FILE, weights_only=True)
    cb = torch.load(ck / CHECKPOINT_FILE, weights_only=True)
    states_equal(ca["model"], cb["model"])
    states_equal(ca["best_state"], cb["best_state"])
    optimizer_equal(ca["opt"], cb["opt"])
    assert ca["history"] == cb["history"] and len(ca["history"]) == 5
    assert whole.metadata["training"]["history"] == resumed.metadata["training"]["history"]


def test_epoch_randomness_depends_only_on_seed_epoch_and_rank():
    seeds = {epoch_seed(0, e, r) for e in range(3) for r in range(2)}
    assert len(seeds) == 6 and all(0 <= s < 2**63 for s in seeds)
    assert epoch_seed(0, 1, 1) == epoch_seed(0, 1, 1) != epoch_seed(1, 1, 1)


# ---- 3. torchkfp run --resume -----------------------------------------------------------
def _cli(cfg_file: Path, *extra: str, cwd: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("torchkfp")
    return subprocess.Popen(
        [str(exe), "run", "-q", "--resume", "--config", str(cfg_file), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        start_new_session=True,
    )


def test_torchkfp_run_resume_after_a_killed_run(tmp_path, warehouse_path, slim, hostile_path):
    """A ``torchkfp run --resume`` is SIGKILLed (the CLI and every process under it) once
    training wrote its first checkpoint; the same command again resumes training from that
    checkpoint and the run succeeds; its summary says from which epoch."""
    from conftest import make_config

    cfg = make_config(
        tmp_path,
        warehouse_path,
        **{
            "warehouse.query_parameters": {"start_date": "2013-01-01", "end_date": "2013-01-14"},
            "split.validation_start": "2013-01-09",
            "split.test_start": "2013-01-12",
            "train.epochs": 4,
            "train.patience": 10,  # all 4 epochs run (no early stop)
            "train.model_factory": "hostile_models:build",
            "train.model_args": {"delay": 0.06},
            "evaluate.min_metrics": {},
        },
    )
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.to_dict()))
    ck_root = Path(cfg.run.pipeline_root) / "checkpoints"

    first = _cli(cfg_file, cwd=tmp_path)
    tree: list[psutil.Process] = []

    def victims():
        tree.extend(psutil.Process(first.pid).children(recursive=True))
        return [psutil.Process(first.pid), *tree]

    killer = KillAfter(lambda: ck_root.glob(f"*/{CHECKPOINT_FILE}"), 1, victims)
    killer.start()
    try:
        first.communicate(timeout=600)
    finally:
        killer.stop.set()
        killer.join()
        for p in tree:  # nothing of the killed run may live on
            try:
                p.kill()
            except psutil.Error:
                pass
    assert killer.seen is not None and killer.seen < 4, "the first run was not killed mid-way"
    assert first.returncode == -signal.SIGKILL
    [ck] = [p.parent for p in ck_root.glob(f"*/{CHECKPOINT_FILE}")]

    second = _cli(cfg_file, cwd=tmp_path)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, out[-2000:] + err[-2000:]
    summary = json.loads(Path(out.strip().splitlines()[-1]).read_text())
    assert summary["status"] == "succeeded"
    resume = summary["resume"]
    assert resume["requested"] is True and resume["checkpoint_dir"] == str(ck)
    assert resume["resumed_from_epoch"] >= killer.seen >= 1
    assert summary["training"]["resumed_from_epoch"] == resume["resumed_from_epoch"]
    assert summary["training"]["epochs_run"] == 4
    assert f"training: resumed after epoch {resume['resumed_from_epoch']}" in out
    train_out = Path(summary["run_dir"]) / "train" / "executor_output.json"
    model_meta = json.loads(train_out.read_text())["artifacts"]["model"]["artifacts"][0]
    assert model_meta["metadata"]["checkpoint_dir"] == str(ck)
    assert model_meta["metadata"]["resumed_from_epoch"] == resume["resumed_from_epoch"]


def test_resume_folder_follows_data_and_settings(tmp_path, slim, monkeypatch):
    """Where the train step checkpoints: with --resume's TORCHKFP_CHECKPOINT_ROOT, else
    Vertex AI's AIP_CHECKPOINT_DIR, a folder named by the features and the train settings (not
    timeout_s); else per run. A run without --resume unsets an inherited root."""
    from torchkfp.pipelines.local import _env

    from torchkfp.training import CHECKPOINT_ROOT_ENV, checkpoint_key, default_checkpoint_dir

    feats, tf = slim["features"], slim["transform"]
    key = checkpoint_key(settings(), feats, tf)
    assert key == checkpoint_key(settings(timeout_s=5), feats, tf)
    assert key != checkpoint_key(settings(learning_rate=0.01), feats, tf)
    assert key != checkpoint_key(settings(epochs=3), feats, tf)
    monkeypatch.delenv("AIP_CHECKPOINT_DIR", raising=False)
    monkeypatch.setenv(CHECKPOINT_ROOT_ENV, str(tmp_path / "cks"))
    assert default_checkpoint_dir(tmp_path / "m", key) == str(tmp_path / "cks" / key)
    assert default_checkpoint_dir(tmp_path / "m") == str(tmp_path / "m") + "-checkpoints"
    with _env(CHECKPOINT_ROOT_ENV, None):
        assert CHECKPOINT_ROOT_ENV not in os.environ
        assert default_checkpoint_dir(tmp_path / "m", key) == str(tmp_path / "m") + "-checkpoints"
    assert os.environ[CHECKPOINT_ROOT_ENV] == str(tmp_path / "cks")
    monkeypatch.setenv("AIP_CHECKPOINT_DIR", "gs://b/job/ck")
    assert default_checkpoint_dir(tmp_path / "m", key) == str(tmp_path / "cks" / key)
    monkeypatch.delenv(CHECKPOINT_ROOT_ENV)
    assert default_checkpoint_dir(tmp_path / "m", key) == f"/gcs/b/job/ck/{key}"
    assert default_checkpoint_dir(tmp_path / "m") == str(tmp_path / "m") + "-checkpoints"


# ---- 4. checkpoint folder faults --------------------------------------------------------
@pytest.fixture(scope="module")
def real_checkpoint(slim, tmp_path_factory) -> Path:
    """A real checkpoint (1 epoch) to damage."""
    root = tmp_path_factory.mktemp("realck")
    launch(settings(epochs=1), slim["features"], slim["transform"], root / "m", root / "ck")
    return root / "ck" / CHECKPOINT_FILE


def _truncated(real: Path) -> bytes:
    data = real.read_bytes()
    return data[: len(data) // 2]


def _pickled_object(real: Path, f: Path) -> None:
    torch.save({"model": argparse.Namespace(x=1)}, f)  # weights_only refuses objects


def _foreign(real: Path, f: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, f)  # a tensor file, not a training checkpoint


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda real, f: f.write_bytes(_truncated(real)), id="truncated"),
        pytest.param(lambda real, f: f.write_bytes(os.urandom(4096)), id="garbage"),
        pytest.param(lambda real, f: f.write_bytes(b""), id="empty"),
        pytest.param(_pickled_object, id="pickled-object"),
        pytest.param(_foreign, id="foreign-tensor-file"),
    ],
)
def test_unreadable_checkpoint_is_a_clear_error(tmp_path, slim, real_checkpoint, damage):
    ck = tmp_path / "ck"
    ck.mkdir()
    damage(real_checkpoint, ck / CHECKPOINT_FILE)
    with pytest.raises(TrainingError) as e:
        launch(settings(), slim["features"], slim["transform"], tmp_path / "m", ck)
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {ck / CHECKPOINT_FILE} is unreadable (")
    assert msg.endswith("): delete it or use a fresh checkpoint folder")
    assert "\n" not in msg
    no_model(tmp_path / "m")
    assert not torchrun_procs()


def test_checkpoint_folder_that_cannot_be_created(tmp_path, slim):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoint folder's parent should be")
    ck = blocker / "ck"
    with pytest.raises(
        TrainingError,
        match=rf"^checkpoint folder {ck} is not writable \(NotADirectoryError: .*\): fix its "
        "permissions or use another checkpoint folder$",
    ):
        launch(settings(), slim["features"], slim["transform"], tmp_path / "m", ck)
    no_model(tmp_path / "m")


def test_checkpoint_write_failing_mid_run(tmp_path, slim):
    """The folder was usable at the start, but writing epoch 1's checkpoint fails (a full
    disk, a permission change; here the temporary file's name is taken by a folder)."""
    ck = tmp_path / "ck"
    (ck / f"{CHECKPOINT_FILE}.tmp").mkdir(parents=True)
    with pytest.raises(TrainingError) as e:
        launch(settings(), slim["features"], slim["transform"], tmp_path / "m", ck)
    assert str(e.value).startswith(
        f"cannot write checkpoint {ck / CHECKPOINT_FILE} (IsADirectoryError: Is a directory): "
        "free disk space or make the folder writable, or use another checkpoint folder"
    )
    no_model(tmp_path / "m")


def test_checkpoint_folder_in_use_by_another_run(tmp_path, slim):
    """Two runs on one checkpoint folder would resume from each other's epochs: the second
    one is refused while the first holds the folder's lock."""
    ck = tmp_path / "ck"
    ck.mkdir()
    with open(ck / launcher_mod.LOCK_FILE, "w") as f:
        f.write("4242")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(
            TrainingError,
            match=rf"^checkpoint folder {ck} is in use by another training run \(pid 4242\): "
            "wait for it to end",
        ):
            launch(settings(), slim["features"], slim["transform"], tmp_path / "m", ck)
    no_model(tmp_path / "m")


# ---- 4. processes: timeout, a worker that raises, a worker killed, nproc > cores ---------
def test_timeout_stops_every_process_and_says_so(tmp_path, slim):
    ck = tmp_path / "ck"
    with pytest.raises(
        TrainingError,
        match=r"^training exceeded train.timeout_s=1s and was stopped; the model artifact was "
        r"not written: raise train.timeout_s or train less \(train.epochs\)\.",
    ):
        launch(settings(timeout_s=1), slim["features"], slim["transform"], tmp_path / "m", ck)
    no_model(tmp_path / "m")
    assert not torchrun_procs()
    with open(ck / launcher_mod.LOCK_FILE) as f:  # the folder's lock went with the run
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_worker_exception_reaches_the_user(tmp_path, slim, hostile_path):
    with pytest.raises(TrainingError) as e:
        launch(hostile(fail_after=3), slim["features"], slim["transform"], tmp_path / "m")
    msg = str(e.value)
    assert msg.startswith("torchrun exited with code 1; the model artifact was not written.")
    assert "ValueError: boom in training step 4" in msg
    no_model(tmp_path / "m")
    assert not torchrun_procs()


def test_killed_worker_stops_the_run(tmp_path, slim, hostile_path):
    """One rank is SIGKILLed (as the kernel's OOM killer would) after the first checkpoint:
    torchrun stops the other, and the error says where the run can resume from."""
    ck = tmp_path / "ck"

    def one_worker():
        workers = [
            p for p in torchrun_procs() if "torchkfp.training.worker" in " ".join(p.cmdline())
        ]
        return workers[-1:]

    killer = KillAfter(ck / CHECKPOINT_FILE, 1, one_worker)
    killer.start()
    try:
        with pytest.raises(TrainingError) as e:
            launch(
                hostile(delay=0.03, epochs=5),
                slim["features"],
                slim["transform"],
                tmp_path / "m",
                ck,
            )
    finally:
        killer.stop.set()
        killer.join()
    assert killer.seen is not None
    msg = str(e.value)
    assert msg.startswith("torchrun exited with code 1; the model artifact was not written.")
    assert f"The last checkpoint (after epoch {checkpoint_epoch(ck)}) is in {ck}" in msg
    no_model(tmp_path / "m")
    assert not torchrun_procs()


def test_more_processes_than_cores_warns_and_trains(tmp_path, slim, monkeypatch):
    monkeypatch.setattr(launcher_mod, "available_cores", lambda: 1)
    with pytest.warns(
        RuntimeWarning,
        match=r"train.nproc_per_node=2 x train.threads_per_process=1 = 2 busy threads on 1 CPU "
        r"core\(s\): training runs, but oversubscribed",
    ):
        r = launch(settings(epochs=1), slim["features"], slim["transform"], tmp_path / "m")
    assert r.world_size == 2
    assert artifacts.require(tmp_path / "m", model_artifact.KIND)
