"""torchkfp.training: the pure helpers (learning rate, shards), the cluster and backend, and
real DDP training through ``launch`` (checkpoints, resume, the checkpoint identity check)."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.artifacts import model as model_artifact
from torchkfp.config import TrainConfig
from torchkfp.errors import ArtifactError, TrainingError
from torchkfp.model import ModelSpec, build_model
from torchkfp.predictor import Predictor
from torchkfp.training import (
    CHECKPOINT_ROOT_ENV,
    VERTEX_CHECKPOINT_ENV,
    VERTEX_TENSORBOARD_ENV,
    checkpoint_key,
    default_checkpoint_dir,
    default_tensorboard_dir,
    is_chief,
    launch,
)
from torchkfp.training.cluster import (
    Cluster,
    choose_backend,
    cluster_from_env,
    processes_per_node,
)
from torchkfp.training.loop import CHECKPOINT_FILE, get_lr, shard_indices
from torchkfp.training.tensorboard import EpochScalars

SCALAR_TAGS = {
    "train/loss": "train_loss",
    "validation/loss": "val_loss",
    "validation/roc_auc": "val_roc_auc",
    "train/samples_per_s": "samples_per_s",
    "train/learning_rate": "learning_rate",
}
"""TensorBoard tag -> history key, for a binary model."""
NO_ONNX = {"train.export_onnx": False}
"""For trainings whose tests do not look at the ONNX export (a few seconds each): the export
has its own tests on ``stage_outputs``' model."""


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of ``log_dir``: tag -> [(step, value)] (TensorBoard's
    own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


# ---- pure helpers -----------------------------------------------------------------------
def test_lr_schedule_warms_up_then_decays():
    lrs = [get_lr(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] >= 0.1
    assert get_lr(100, 100, 1.0, 10) == pytest.approx(0.1)  # the cosine ends at 10% of peak
    assert get_lr(55, 100, 1.0, 10) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2


def test_the_trainer_warms_up_over_the_first_5_percent_of_its_steps(tmp_path):
    import torch.distributed as dist

    from torchkfp.training.loop import Trainer

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        data = {
            "x_num": torch.randn(4000, 2),
            "x_cat": torch.zeros(4000, 1, dtype=torch.long),
            "y": torch.zeros(4000),
        }
        spec = ModelSpec(2, [3], [4], 0.0, 2)
        tc = TrainConfig(epochs=5, batch_size=100)
        t = Trainer(tc, build_model(spec), data, data, torch.device("cpu"), 0, 1, None)
        assert (t.steps_per_epoch, t.total_steps, t.warmup) == (40, 200, 10)
    finally:
        dist.destroy_process_group()


def test_shards_are_disjoint_equal_sized_and_cover_all_rows():
    shards = [shard_indices(101, r, 4, seed=0, epoch=3) for r in range(4)]
    assert {len(s) for s in shards} == {26}
    assert set(torch.cat(shards).tolist()) == set(range(101))
    assert not torch.equal(shard_indices(101, 0, 4, 0, 0), shard_indices(101, 0, 4, 0, 1))


def test_train_settings_reach_the_workers_unchanged_through_json():
    tc = TrainConfig(epochs=3, hidden_sizes=[32, 16], learning_rate=1e-3)
    assert TrainConfig.from_dict(json.loads(json.dumps(tc.to_dict()))) == tc
    assert TrainConfig.from_dict(json.loads(json.dumps(TrainConfig().to_dict()))) == TrainConfig()


# ---- cluster and backend ----------------------------------------------------------------
def test_cluster_spec_from_vertex():
    spec = {
        "cluster": {"workerpool0": ["chief:2222"], "workerpool1": ["w0:2222", "w1:2222"]},
        "task": {"type": "workerpool1", "index": 1},
    }
    c = cluster_from_env({"CLUSTER_SPEC": json.dumps(spec)})
    assert c == Cluster(nnodes=3, node_rank=2, master_addr="chief", master_port=2222)
    assert not c.is_chief and not is_chief({"CLUSTER_SPEC": json.dumps(spec)})
    chief = {**spec, "task": {"type": "workerpool0", "index": 0}}
    assert is_chief({"CLUSTER_SPEC": json.dumps(chief)})
    alone = cluster_from_env({})
    assert alone.nnodes == 1 and alone.node_rank == 0 and alone.is_chief
    assert alone.master_addr == "127.0.0.1" and alone.master_port is None  # a free local port
    assert is_chief({})


def test_backend_follows_cuda():
    cuda = torch.cuda.is_available()
    assert choose_backend(TrainConfig(backend="gloo")) == "gloo"
    assert choose_backend(TrainConfig(backend="auto")) == ("nccl" if cuda else "gloo")
    if cuda:
        assert choose_backend(TrainConfig(backend="nccl")) == "nccl"
    else:
        with pytest.raises(TrainingError, match="train.backend='nccl' needs CUDA"):
            choose_backend(TrainConfig(backend="nccl"))


def test_processes_per_node():
    # gloo (CPU): nproc_per_node processes, 0 = 1
    assert processes_per_node(TrainConfig(nproc_per_node=3), "gloo") == 3
    assert processes_per_node(TrainConfig(nproc_per_node=0), "gloo") == 1
    # nccl: one process per GPU at most, 0 = one per GPU
    gpus = torch.cuda.device_count()
    assert processes_per_node(TrainConfig(nproc_per_node=0), "nccl") == gpus
    assert processes_per_node(TrainConfig(nproc_per_node=gpus + 1), "nccl") == gpus


def test_default_checkpoint_and_tensorboard_dirs(monkeypatch, tmp_path):
    """Checkpoints: TORCHKFP_CHECKPOINT_ROOT/<key>, else AIP_CHECKPOINT_DIR/<key> (FUSE path),
    else next to the model; the shared folders only with a key. TensorBoard:
    AIP_TENSORBOARD_LOG_DIR/<key>, else next to the model."""
    for var in (CHECKPOINT_ROOT_ENV, VERTEX_CHECKPOINT_ENV, VERTEX_TENSORBOARD_ENV):
        monkeypatch.delenv(var, raising=False)
    model = str(tmp_path / "model") + "/"
    assert default_checkpoint_dir(model, "k1") == str(tmp_path) + "/model-checkpoints"
    assert default_tensorboard_dir(model, "k1") == str(tmp_path) + "/model-tensorboard"
    monkeypatch.setenv(VERTEX_CHECKPOINT_ENV, "gs://bucket/job/checkpoints/")
    monkeypatch.setenv(VERTEX_TENSORBOARD_ENV, "gs://bucket/job/logs/")
    assert default_checkpoint_dir(model, "k1") == "/gcs/bucket/job/checkpoints/k1"
    assert default_checkpoint_dir(model, "k2") == "/gcs/bucket/job/checkpoints/k2"
    assert default_checkpoint_dir(model) == str(tmp_path) + "/model-checkpoints"  # no key
    assert default_tensorboard_dir(model, "k1") == "/gcs/bucket/job/logs/k1"
    assert default_tensorboard_dir(model) == "/gcs/bucket/job/logs"
    monkeypatch.setenv(CHECKPOINT_ROOT_ENV, str(tmp_path / "cks"))  # explicit: it wins
    assert default_checkpoint_dir(model, "k1") == str(tmp_path / "cks" / "k1")


# ---- DDP training -----------------------------------------------------------------------
def test_ddp_training_runs_two_ranks_and_writes_a_self_contained_model(stage_outputs):
    r = stage_outputs["train_result"]
    assert r.world_size == 2 and r.model_path == stage_outputs["model"]
    assert r.samples_per_s > 0 and 1 <= r.epochs_run <= stage_outputs["config"].train.epochs
    meta = artifacts.require(stage_outputs["model"], model_artifact.KIND)
    assert meta["training"]["backend"] == "gloo"
    assert meta["training"]["world_size"] == 2
    assert meta["training"]["config"] == stage_outputs["config"].train.to_dict()
    assert (
        meta["data_fingerprint"]
        == artifacts.require(stage_outputs["dataset"], dataset_artifact.KIND)["fingerprint"]
    )
    names = {p.name for p in Path(stage_outputs["model"]).iterdir()}
    assert {"model.pt", "transform.json", "model_spec.json", "feature_spec.json"} <= names
    # the artifact alone predicts from raw rows
    test = dataset_artifact.read_split(stage_outputs["dataset"], "test").to_pandas()
    p = Predictor(stage_outputs["model"]).predict_proba(test.head(50))
    assert p.shape == (50,) and ((p > 0) & (p < 1)).all()


def test_training_exports_the_shipped_weights_to_onnx_checked_on_the_test_split(stage_outputs):
    """Rank 0 exports the weights it ships and compares ONNX Runtime with PyTorch on the test
    split's features; the export is in the checksummed artifact and serves alike."""
    meta = artifacts.require(stage_outputs["model"], model_artifact.KIND)
    info = meta[model_artifact.ONNX_KEY]
    assert info["exported"] is True and info["file"] == model_artifact.ONNX_FILE
    rows = artifacts.require(stage_outputs["features"], "features")["rows"]["test"]
    parity = info["parity"]
    assert parity["split"] == "test" and parity["split_rows"] == rows > 1000
    assert parity["rows"] == min(rows, 10_000)
    assert parity["passed"] is True and 0 <= parity["max_abs_diff"] <= 1e-5
    assert isinstance(info["opset"], int) and 0 < info["export_seconds"] <= info["seconds"]
    assert info["seconds"] < meta["training"]["wall_seconds"]
    onnx_file = Path(stage_outputs["model"]) / model_artifact.ONNX_FILE
    assert meta[model_artifact.CHECKSUMS][model_artifact.ONNX_FILE] == (
        model_artifact.sha256_file(onnx_file)
    )
    test = dataset_artifact.read_split(stage_outputs["dataset"], "test").to_pandas().head(300)
    on_torch = Predictor(stage_outputs["model"]).predict_proba(test)
    on_onnx = Predictor(stage_outputs["model"], "onnx").predict_proba(test)
    assert float(abs(on_torch - on_onnx).max()) <= 1e-5


def test_onnx_parity_reads_only_the_rows_it_compares(tmp_path):
    """A features artifact without a test split: the export is checked on the validation
    split, on PARITY_MAX_ROWS evenly spaced rows read alone from the mapped files (a bad row
    elsewhere is never read) and the split's full row count is recorded."""
    import numpy as np

    from torchkfp.artifacts import features
    from torchkfp.model import ModelSpec, build_model
    from torchkfp.onnx_export import PARITY_MAX_ROWS
    from torchkfp.training.worker import onnx_export, parity_rows

    n = 25_001
    feats = tmp_path / "f"
    feats.mkdir()
    rng = np.random.default_rng(0)
    x_num = rng.standard_normal((n, 3)).astype(np.float32)
    x_num[:, 0] = np.arange(n)
    x_cat = rng.integers(0, 5, (n, 2)).astype(np.int32)
    y = (rng.random(n) < 0.3).astype(np.float32)
    pick = torch.linspace(0, n - 1, PARITY_MAX_ROWS).round().long()
    assert 1 not in set(pick.tolist())
    x_num[1, 1] = np.nan  # a row the check does not read
    for split in ("train", "validation"):
        features.write_split(feats, split, x_num, x_cat, y)
    meta = {"format": 2, "rows": {"train": n, "validation": n}, "cardinalities": [5, 5]}
    artifacts.commit(feats, features.KIND, {**meta, "task": "binary"})
    rows, got = parity_rows(feats, "validation")
    assert rows == n and torch.equal(got["x_num"][:, 0].long(), pick)
    assert got["x_cat"].dtype == torch.int64
    spec = ModelSpec(3, [5, 5], [8], 0.0, 4)
    torch.manual_seed(0)
    state = build_model(spec).state_dict()
    _, info = onnx_export(TrainConfig(), state, spec, str(feats), 1.0)
    parity = info["parity"]
    assert info["exported"] is True and parity["passed"] is True
    assert parity["split"] == "validation" and parity["split_rows"] == n
    assert parity["rows"] == PARITY_MAX_ROWS
    x_num[int(pick[1]), 1] = np.nan  # a row it reads
    features.save_raw(feats, "validation", {"x_num": x_num, "x_cat": x_cat, "y": y})
    with pytest.raises(ArtifactError, match="validation: x_num holds NaN"):
        parity_rows(feats, "validation")


def test_a_model_that_cannot_be_exported_still_trains(tmp_path, stage_outputs, monkeypatch):
    """A user factory whose network ONNX cannot carry: training succeeds, the artifact says
    why there is no export, and serving on ONNX Runtime refuses it with that reason."""
    tests = Path(__file__).resolve().parent
    path = f"{tests}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    monkeypatch.setenv("PYTHONPATH", path)  # the workers import the user's factory
    tc = (
        stage_outputs["config"]
        .override({"train.epochs": 1, "train.model_factory": "onnx_models:branching"})
        .train
    )
    r = launch(tc, stage_outputs["features"], stage_outputs["transform"], tmp_path / "m")
    info = r.metadata[model_artifact.ONNX_KEY]
    assert info["exported"] is False
    assert info["reason"].startswith("the network cannot be exported to ONNX (TorchExportError")
    assert not (tmp_path / "m" / model_artifact.ONNX_FILE).exists()
    assert Predictor(tmp_path / "m").task == "binary"
    with pytest.raises(ArtifactError, match="training did not export it: the network cannot"):
        Predictor(tmp_path / "m", "onnx")


def test_ddp_training_writes_tensorboard_scalars_per_epoch(stage_outputs):
    """The fixture's run (no AIP_* variables) wrote its event files next to the model: one
    point per epoch for every tag, equal to the history in the model's metadata, and the
    metadata names the folder."""
    meta = artifacts.require(stage_outputs["model"], model_artifact.KIND)["training"]
    log_dir = stage_outputs["model"] + "-tensorboard"
    assert meta["tensorboard_dir"] == log_dir
    assert stage_outputs["train_result"].tensorboard_dir == log_dir
    assert meta["validation_metric"] == "roc_auc"
    scalars = read_scalars(log_dir)
    assert set(scalars) == set(SCALAR_TAGS)
    history = [
        {**h, "samples_per_s": sps}
        for h, sps in zip(meta["history"], meta["epoch_samples_per_s"], strict=True)
    ]
    assert len(history) == meta["epochs_run"] >= 2
    for tag, key in SCALAR_TAGS.items():
        steps = [step for step, _ in scalars[tag]]
        assert steps == list(range(1, len(history) + 1)), tag
        values = [v for _, v in scalars[tag]]
        assert values == pytest.approx([h[key] for h in history], rel=1e-6), tag
    assert all(0.5 < h["val_roc_auc"] < 1 for h in history)
    assert all(h["samples_per_s"] > 0 and h["learning_rate"] > 0 for h in history)


def test_tensorboard_history_is_written_once(tmp_path):
    """A resumed run writes the epochs of its checkpoint's history into a new folder, and
    skips those a folder already holds (a restarted job writing to the same folder)."""
    history = [
        {"epoch": e, "train_loss": 1.0 - e / 10, "val_loss": 0.9, "val_roc_auc": 0.7}
        for e in range(3)
    ]
    first = EpochScalars(tmp_path / "a")
    first.log_history(history[:2])
    first.close()
    again = EpochScalars(tmp_path / "a")  # restarted: the folder holds epochs 1-2
    assert again.done == 2
    again.log_history(history[:2])
    again.log(history[2])
    again.close()
    fresh = EpochScalars(tmp_path / "b")  # resumed into a new run folder
    fresh.log_history(history)
    fresh.close()
    for d in ("a", "b"):
        got = read_scalars(tmp_path / d)
        assert [s for s, _ in got["train/loss"]] == [1, 2, 3], d
        assert [v for _, v in got["train/loss"]] == pytest.approx([1.0, 0.9, 0.8])
        assert [s for s, _ in got["validation/roc_auc"]] == [1, 2, 3]


def test_tensorboard_folder_that_cannot_be_written_does_not_stop_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    log = EpochScalars(blocker / "tb")
    log.log({"epoch": 0, "train_loss": 1.0})
    log.close()
    assert not log.active and "TensorBoard logging to" in capsys.readouterr().err


def test_unknown_bucket_is_trained(stage_outputs):
    """Under the temporal split every test-period month is unseen: index 0 must be trained,
    not left at its random initial value."""
    from torchkfp.model import TabularMLP

    art = model_artifact.ModelArtifact.load(stage_outputs["model"])
    torch.manual_seed(stage_outputs["config"].train.seed)  # the trainer's initialization
    init = TabularMLP(art.spec).state_dict()
    trained = art.module().state_dict()
    for i in range(len(art.spec.cardinalities)):
        key = f"embeddings.{i}.weight"
        assert not torch.allclose(init[key][0], trained[key][0]), key
    feats = json.loads((Path(stage_outputs["features"]) / "metadata.json").read_text())
    assert feats["unknown_category_rate"]["train"]["carrier"] == 0.0


@pytest.fixture(scope="module")
def checkpointed(stage_outputs, tmp_path_factory) -> dict:
    """A 2-epoch run that left its checkpoint, shared by the tests that resume from it or are
    refused by it (each on its own copy of the folder)."""
    root = tmp_path_factory.mktemp("checkpointed")
    tc = stage_outputs["config"].override({**NO_ONNX, "train.epochs": 2, "train.patience": 5}).train
    first = launch(
        tc, stage_outputs["features"], stage_outputs["transform"], root / "m", root / "ck"
    )
    return {"train": tc, "first": first, "ck": root / "ck"}


def test_training_resumes_from_checkpoint(tmp_path, stage_outputs, checkpointed):
    tc, first = checkpointed["train"], checkpointed["first"]
    feats, tf = stage_outputs["features"], stage_outputs["transform"]
    ck = Path(shutil.copytree(checkpointed["ck"], tmp_path / "ck"))
    assert first.metadata["training"]["resumed_from_epoch"] is None
    assert (ck / CHECKPOINT_FILE).is_file()
    more = TrainConfig.from_dict({**tc.to_dict(), "epochs": 3})  # epochs may change on resume
    r = launch(more, feats, tf, tmp_path / "m2", ck)
    tr = r.metadata["training"]
    assert tr["resumed_from_epoch"] == 2 and tr["epochs_run"] == 3
    assert [h["epoch"] for h in tr["history"]] == [0, 1, 2]
    assert tr["history"][:2] == first.metadata["training"]["history"]


def test_checkpoint_of_another_run_is_refused(tmp_path, stage_outputs, checkpointed):
    feats, tf = stage_outputs["features"], stage_outputs["transform"]
    ck = shutil.copytree(checkpointed["ck"], tmp_path / "ck")
    other = TrainConfig.from_dict({**checkpointed["train"].to_dict(), "learning_rate": 0.01})
    with pytest.raises(
        TrainingError, match=r"another training run \(differs in \['learning_rate'\]"
    ):
        launch(other, feats, tf, tmp_path / "m2", ck)
    assert not (tmp_path / "m2" / artifacts.MARKER).exists()


def test_training_failure_leaves_no_model_artifact(tmp_path, stage_outputs):
    feats = tmp_path / "f"
    shutil.copytree(stage_outputs["features"], feats)
    (feats / "train" / "x_num.npy").write_bytes(b"corrupt")
    with pytest.raises(TrainingError, match="model artifact was not written") as e:
        launch(stage_outputs["config"].train, feats, stage_outputs["transform"], tmp_path / "m")
    assert "train/x_num.npy is not a readable array file" in str(e.value)
    with pytest.raises(ArtifactError):
        artifacts.require(tmp_path / "m", model_artifact.KIND)


def test_training_rejects_incomplete_inputs_before_starting(tmp_path, stage_outputs):
    tc, tf = stage_outputs["config"].train, stage_outputs["transform"]
    with pytest.raises(ArtifactError, match="does not exist"):
        launch(tc, tmp_path / "nope", tf, tmp_path / "m")
    (tmp_path / "f").mkdir()
    with pytest.raises(ArtifactError, match="incomplete"):
        launch(tc, tmp_path / "f", tf, tmp_path / "m")
    with pytest.raises(ArtifactError, match="features' artifact, expected 'transform'"):
        launch(tc, stage_outputs["features"], stage_outputs["features"], tmp_path / "m")
    with pytest.raises(ArtifactError, match="different ingestion run"):
        launch(tc, stage_outputs["features"], tf, tmp_path / "m", expected_fingerprint="0" * 64)
    assert not (tmp_path / "m").exists()


def test_vertex_checkpoint_and_tensorboard_folders_are_keyed(tmp_path, stage_outputs, monkeypatch):
    """With AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR set (local folders standing in for
    the GCS FUSE paths), the train step checkpoints and logs in <folder>/<key>; the same job
    restarted resumes from that checkpoint and logs no epoch twice; other settings get another
    folder."""
    monkeypatch.delenv(CHECKPOINT_ROOT_ENV, raising=False)
    monkeypatch.setenv(VERTEX_CHECKPOINT_ENV, str(tmp_path / "out" / "checkpoints"))
    monkeypatch.setenv(VERTEX_TENSORBOARD_ENV, str(tmp_path / "out" / "logs"))
    tc = stage_outputs["config"].override({**NO_ONNX, "train.epochs": 1}).train
    feats, tf = stage_outputs["features"], stage_outputs["transform"]
    key = checkpoint_key(tc, feats, tf)
    ck = default_checkpoint_dir(tmp_path / "run1" / "model", key)  # as the train component
    assert ck == str(tmp_path / "out" / "checkpoints" / key)
    first = launch(tc, feats, tf, tmp_path / "run1" / "model", ck)
    assert (Path(ck) / CHECKPOINT_FILE).is_file()
    log_dir = tmp_path / "out" / "logs" / key
    assert first.tensorboard_dir == str(log_dir)
    assert first.metadata["training"]["resumed_from_epoch"] is None
    assert not (tmp_path / "run1" / "model-tensorboard").exists()
    # the job restarts (same data and settings, so the same key and folders)
    again = launch(tc, feats, tf, tmp_path / "run2" / "model", ck)
    assert again.resumed_from_epoch == 1 and again.epochs_run == 1
    assert again.tensorboard_dir == str(log_dir)
    got = read_scalars(log_dir)
    assert set(got) == set(SCALAR_TAGS)
    assert all([s for s, _ in points] == [1] for points in got.values())
    # another training run (other settings) does not pick up this checkpoint
    other = stage_outputs["config"].override(
        {**NO_ONNX, "train.epochs": 1, "train.learning_rate": 0.01}
    )
    other_key = checkpoint_key(other.train, feats, tf)
    assert other_key != key
    assert default_checkpoint_dir(tmp_path / "run3" / "model", other_key) != ck


def _validation_metrics_rank(rank: int, world: int, init: str, out: str) -> None:
    """One gloo rank: a Trainer per task kind on the same 101 validation rows (rank r holds
    rows r, r + 2, ...); each rank saves the (loss, metric) it got."""
    import torch.distributed as dist

    from torchkfp.model import ModelSpec, build_model
    from torchkfp.training.loop import Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        got = {}
        for task, k in (("binary", 1), ("multiclass", 3), ("regression", 1)):
            g = torch.Generator().manual_seed(7)
            x_num, x_cat = (
                torch.randn(101, 3, generator=g),
                torch.randint(0, 4, (101, 1), generator=g),
            )
            if task == "binary":
                y = (torch.rand(101, generator=g) < 0.4).float()
            elif task == "multiclass":
                y = torch.randint(0, 3, (101,), generator=g)
            else:
                y = torch.randn(101, generator=g)
            data = {"x_num": x_num, "x_cat": x_cat, "y": y}
            torch.manual_seed(0)
            spec = ModelSpec(3, [4], [8], 0.0, 4, task=task, output_size=k)
            model = build_model(spec)
            tc = TrainConfig(epochs=1)
            trainer = Trainer(
                tc,
                model,
                data,
                data,
                torch.device("cpu"),
                rank,
                world,
                None,
                task=task,
                target_std=2.5,
            )
            got[task] = trainer._validate()
            if rank == 0:
                with torch.no_grad():
                    got[task + "_logits"] = model(x_num, x_cat)
                got[task + "_y"] = y
        torch.save(got, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_validation_metric_covers_the_whole_split_on_every_rank(tmp_path):
    """2 gloo ranks, each holding half of the validation rows: both report the metric of the
    whole split: binary ROC AUC, multi-class accuracy, regression RMSE in the label's units."""
    import numpy as np
    import torch.multiprocessing as mp

    from torchkfp.metrics import roc_auc

    mp.spawn(_validation_metrics_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for task in ("binary", "multiclass", "regression"):
        assert r0[task] == r1[task], task  # every rank decides alike
    logits, y = r0["binary_logits"].reshape(-1), r0["binary_y"]
    want = roc_auc(y.numpy(), torch.sigmoid(logits.double()).numpy())
    assert r0["binary"][1] == pytest.approx(want, abs=1e-12)
    logits, y = r0["multiclass_logits"], r0["multiclass_y"]
    assert r0["multiclass"][1] == pytest.approx(float((logits.argmax(1) == y).double().mean()))
    logits, y = r0["regression_logits"].reshape(-1), r0["regression_y"]
    mse = float(((logits - y) ** 2).double().mean())
    assert r0["regression"][0] == pytest.approx(mse, rel=1e-5)
    assert r0["regression"][1] == pytest.approx(np.sqrt(mse) * 2.5, rel=1e-5)
