"""torchkfp.training: the pure helpers (learning rate, shards), the cluster and backend, and
real DDP training through ``launch`` (checkpoints, resume, the checkpoint identity check)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from torchkfp import artifacts
from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.artifacts import model as model_artifact
from torchkfp.config import TrainConfig
from torchkfp.errors import ArtifactError, TrainingError
from torchkfp.predictor import Predictor
from torchkfp.training import default_checkpoint_dir, is_chief, launch
from torchkfp.training.cluster import (
    Cluster,
    choose_backend,
    cluster_from_env,
    processes_per_node,
)
from torchkfp.training.loop import CHECKPOINT_FILE, get_lr, shard_indices


# ---- pure helpers -----------------------------------------------------------------------
def test_lr_schedule_warms_up_then_decays():
    lrs = [get_lr(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] >= 0.1


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


def test_default_checkpoint_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("AIP_CHECKPOINT_DIR", raising=False)
    assert (
        default_checkpoint_dir(str(tmp_path / "model") + "/")
        == str(tmp_path) + "/model-checkpoints"
    )
    monkeypatch.setenv("AIP_CHECKPOINT_DIR", "gs://bucket/job/checkpoints")
    assert default_checkpoint_dir(tmp_path / "model") == "/gcs/bucket/job/checkpoints"


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


def test_training_resumes_from_checkpoint(tmp_path, stage_outputs):
    tc = stage_outputs["config"].override({"train.epochs": 2, "train.patience": 5}).train
    feats, tf = stage_outputs["features"], stage_outputs["transform"]
    ck = tmp_path / "ck"
    first = launch(tc, feats, tf, tmp_path / "m1", ck)
    assert first.metadata["training"]["resumed_from_epoch"] is None
    assert (ck / CHECKPOINT_FILE).is_file()
    more = TrainConfig.from_dict({**tc.to_dict(), "epochs": 3})  # epochs may change on resume
    r = launch(more, feats, tf, tmp_path / "m2", ck)
    tr = r.metadata["training"]
    assert tr["resumed_from_epoch"] == 2 and tr["epochs_run"] == 3
    assert [h["epoch"] for h in tr["history"]] == [0, 1, 2]
    assert tr["history"][:2] == first.metadata["training"]["history"]


def test_checkpoint_of_another_run_is_refused(tmp_path, stage_outputs):
    tc = stage_outputs["config"].override({"train.epochs": 1}).train
    feats, tf = stage_outputs["features"], stage_outputs["transform"]
    ck = tmp_path / "ck"
    launch(tc, feats, tf, tmp_path / "m1", ck)
    other = stage_outputs["config"].override({"train.epochs": 1, "train.learning_rate": 0.01})
    with pytest.raises(
        TrainingError, match=r"another training run \(differs in \['learning_rate'\]"
    ):
        launch(other.train, feats, tf, tmp_path / "m2", ck)
    assert not (tmp_path / "m2" / artifacts.MARKER).exists()


def test_training_failure_leaves_no_model_artifact(tmp_path, stage_outputs):
    feats = tmp_path / "f"
    shutil.copytree(stage_outputs["features"], feats)
    (feats / "train.pt").write_bytes(b"corrupt")
    with pytest.raises(TrainingError, match="model artifact was not written"):
        launch(stage_outputs["config"].train, feats, stage_outputs["transform"], tmp_path / "m")
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
