"""Stage 3: distributed data-parallel training.

``launch`` starts ``torchrun`` (``python -m torch.distributed.run``) with ``nproc_per_node``
processes running ``python -m torchkfp.trainer``; on Vertex AI multi-replica custom jobs it
reads ``CLUSTER_SPEC`` to join the chief's rendezvous. Each rank trains on its own shard of
pre-built tensors (no per-row Python objects); gradients are averaged by DDP; the validation
loss is all-reduced so every rank takes the same early-stopping decision; only global rank 0
writes checkpoints and the model artifact.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.elastic.multiprocessing.errors import record
from torch.nn.parallel import DistributedDataParallel as DDP

from torchkfp import __version__, artifacts
from torchkfp.config import Config, TrainConfig
from torchkfp.model import ModelSpec, TabularMLP
from torchkfp.preprocess import TRANSFORM_FILE, load_features, load_transform

MODEL_KIND = "model"
WEIGHTS_FILE = "model.pt"
SPEC_FILE = "model_spec.json"
FEATURE_SPEC_FILE = "feature_spec.json"
CHECKPOINT_FILE = "last.pt"


class TrainingError(RuntimeError):
    """The training processes failed."""


@dataclass
class TrainResult:
    model_path: str
    world_size: int
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    samples_per_s: float
    seconds: float
    metadata: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Launcher (runs in the component's process)
# ---------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the launcher's process group (torchrun and its workers), then SIGKILL."""
    import signal

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def cluster_from_env(env: dict[str, str] | None = None) -> dict[str, Any]:
    """nnodes, node_rank and the rendezvous address.

    On Vertex AI custom jobs ``CLUSTER_SPEC`` names the pools (workerpool0 = chief,
    workerpool1 = workers) and this replica's task; elsewhere: one node on 127.0.0.1.
    """
    env = dict(os.environ if env is None else env)
    spec = env.get("CLUSTER_SPEC")
    if not spec:
        return {"nnodes": 1, "node_rank": 0, "master_addr": "127.0.0.1", "master_port": None}
    cs = json.loads(spec)
    cluster = cs["cluster"]
    pools = [p for p in ("workerpool0", "workerpool1") if p in cluster]
    hosts = [h for p in pools for h in cluster[p]]
    task = cs["task"]
    offset = 0
    for p in pools:
        if p == task["type"]:
            break
        offset += len(cluster[p])
    chief = cluster["workerpool0"][0]
    addr, _, port = chief.partition(":")
    return {
        "nnodes": len(hosts),
        "node_rank": offset + int(task["index"]),
        "master_addr": addr,
        "master_port": int(port) if port else 29500,
    }


def is_chief(env: dict[str, str] | None = None) -> bool:
    return cluster_from_env(env)["node_rank"] == 0


def processes_per_node(tc: TrainConfig) -> int:
    """One process per GPU at most with CUDA (NCCL refuses two ranks on one GPU)."""
    if tc.backend in ("auto", "nccl") and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        return gpus if tc.nproc_per_node == 0 else min(tc.nproc_per_node, gpus)
    return tc.nproc_per_node or 1


def default_checkpoint_dir(model_dir: str | os.PathLike) -> str:
    """Where a pipeline's train step checkpoints: Vertex's AIP_CHECKPOINT_DIR (as a GCS FUSE
    path) when set, else next to the model output: unique per run, kept across retries of the
    task, so a restarted job resumes."""
    aip = os.environ.get("AIP_CHECKPOINT_DIR")
    return artifacts.gcs_to_fuse(aip) if aip else str(model_dir).rstrip("/") + "-checkpoints"


def launch(
    cfg: Config,
    features_dir: str | os.PathLike,
    transform_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike | None = None,
    expected_fingerprint: str | None = None,
) -> TrainResult:
    """Run torchrun and return the chief's result (on other replicas: result with no metadata).
    ``expected_fingerprint``: the data fingerprint the features must have been built from."""
    t0 = time.perf_counter()
    load_transform(transform_dir)  # fail fast, in this process, on a bad input artifact
    fmeta = artifacts.require(features_dir, "features")
    artifacts.check_fingerprint(fmeta, expected_fingerprint, features_dir)
    cluster = cluster_from_env()
    tc = cfg.train
    nproc = processes_per_node(tc)
    port = cluster["master_port"] or _free_port()
    with tempfile.TemporaryDirectory(prefix="torchkfp-train-") as td:
        cfg_file = Path(td) / "train_config.json"
        cfg_file.write_text(json.dumps(cfg.to_dict()))
        cmd = [
            sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={cluster['nnodes']}", f"--node-rank={cluster['node_rank']}",
            f"--nproc-per-node={nproc}",
            f"--master-addr={cluster['master_addr']}", f"--master-port={port}",
            "-m", "torchkfp.trainer",
            "--config", str(cfg_file),
            "--features", str(features_dir),
            "--transform", str(transform_dir),
            "--model", str(model_dir),
        ]  # fmt: skip
        if checkpoint_dir:
            cmd += ["--checkpoint-dir", str(checkpoint_dir)]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(tc.threads_per_process))
        env["TORCHELASTIC_ERROR_FILE"] = str(Path(td) / "error.json")
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("TMPDIR", td)  # torchelastic_* scratch folders go away with td
        # own process group: on timeout (or Ctrl-C) torchrun and every worker go together
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        try:
            proc.wait(timeout=tc.timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            raise TrainingError(
                f"training exceeded train.timeout_s={tc.timeout_s}s and was stopped; "
                "raise train.timeout_s or train less (train.epochs)"
            ) from None
        except BaseException:
            _stop_group(proc)
            raise
        if proc.returncode != 0:
            detail = ""
            err = Path(td) / "error.json"
            if err.exists():
                try:
                    detail = json.loads(err.read_text())["message"]["message"][-2000:]
                except (KeyError, TypeError, ValueError):
                    detail = err.read_text()[-2000:]
            raise TrainingError(
                f"torchrun exited with code {proc.returncode}; the model artifact was not "
                f"written. {detail}".strip()
            )
    if cluster["node_rank"] != 0:
        return TrainResult(str(model_dir), 0, 0, 0, math.nan, 0.0, time.perf_counter() - t0, {})
    meta = artifacts.require(model_dir, MODEL_KIND)
    tr = meta["training"]
    return TrainResult(
        model_path=str(model_dir),
        world_size=tr["world_size"],
        epochs_run=tr["epochs_run"],
        best_epoch=tr["best_epoch"],
        best_val_loss=tr["best_val_loss"],
        samples_per_s=tr["samples_per_s"],
        seconds=time.perf_counter() - t0,
        metadata=meta,
    )


# ---------------------------------------------------------------------------------------------
# Worker (runs in each torchrun process)
# ---------------------------------------------------------------------------------------------
def get_lr(step: int, total_steps: int, peak: float, warmup_steps: int) -> float:
    """Linear warmup then cosine decay to 10% of peak. Pure, for tests and plots."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def shard_indices(n: int, rank: int, world: int, seed: int, epoch: int) -> torch.Tensor:
    """This rank's rows for an epoch: a seeded permutation, padded so every rank gets the same
    count (as DistributedSampler does), then strided by rank."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = math.ceil(n / world)
    total = per_rank * world
    if total > n:
        perm = torch.cat([perm, perm[: total - n]])
    return perm[rank:total:world]


class Trainer:
    def __init__(
        self,
        tc: TrainConfig,
        model: torch.nn.Module,
        train: dict[str, torch.Tensor],
        val: dict[str, torch.Tensor],
        device: torch.device,
        rank: int,
        world: int,
        checkpoint_dir: Path | None,
        identity: dict[str, Any] | None = None,
    ):
        self.tc, self.rank, self.world, self.device = tc, rank, world, device
        # what a checkpoint must match to be resumed: the data, the architecture, and the
        # hyperparameters that shape the optimization (epochs/patience may change on resume)
        self.identity = identity or {}
        self.master = rank == 0
        self.train = {k: v.to(device) for k, v in train.items()}
        self.val = {k: v[rank::world].to(device) for k, v in val.items()}
        self.model = model.to(device)
        self.ddp = DDP(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay
        )
        n = self.train["y"].shape[0]
        self.steps_per_epoch = math.ceil(math.ceil(n / world) / tc.batch_size)
        self.total_steps = self.steps_per_epoch * tc.epochs
        self.warmup = max(1, self.total_steps // 20)
        self.step = 0
        self.epoch = 0
        self.best_loss = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []
        self.samples = 0
        self.train_seconds = 0.0
        self.checkpoint_dir = checkpoint_dir
        self.resumed_from: int | None = None
        if checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT_FILE).exists():
            self._load_checkpoint(checkpoint_dir / CHECKPOINT_FILE)

    # -- one batch / one epoch ---------------------------------------------------------
    def _run_batch(self, idx: torch.Tensor) -> torch.Tensor:
        for g in self.opt.param_groups:
            g["lr"] = get_lr(self.step, self.total_steps, self.tc.learning_rate, self.warmup)
        x_num, x_cat, y = self.train["x_num"][idx], self.train["x_cat"][idx], self.train["y"][idx]
        if self.tc.unknown_category_rate > 0 and x_cat.numel():
            # train the unknown bucket (index 0) too: it stands for every unseen value later
            drop = torch.rand(x_cat.shape, device=x_cat.device) < self.tc.unknown_category_rate
            x_cat = x_cat.masked_fill(drop, 0)
        logits = self.ddp(x_num, x_cat)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return loss.detach()  # no .item() here: a host sync per step stalls a GPU

    def _run_epoch(self, epoch: int) -> float:
        self.ddp.train()
        idx = shard_indices(self.train["y"].shape[0], self.rank, self.world, self.tc.seed, epoch)
        idx = idx.to(self.device)
        total = torch.zeros((), device=self.device)
        count = 0
        bs = self.tc.batch_size
        t0 = time.perf_counter()
        for start in range(0, idx.shape[0], bs):
            b = idx[start : start + bs]
            total += self._run_batch(b) * b.shape[0]
            count += b.shape[0]
        mean_loss = total.item() / max(1, count)  # one sync per epoch
        self.train_seconds += time.perf_counter() - t0
        self.samples += count * self.world
        return mean_loss

    @torch.no_grad()
    def _validate(self) -> float:
        self.model.eval()
        s = torch.zeros(2, dtype=torch.float64, device=self.device)
        for start in range(0, self.val["y"].shape[0], 8192):
            sl = slice(start, start + 8192)
            logits = self.model(self.val["x_num"][sl], self.val["x_cat"][sl])
            s[0] += F.binary_cross_entropy_with_logits(
                logits, self.val["y"][sl], reduction="sum"
            ).double()
            s[1] += logits.shape[0]
        dist.all_reduce(s)
        return float(s[0] / s[1])

    # -- checkpoints (rank 0 writes; every rank reads) ---------------------------------
    def _save_checkpoint(self) -> None:
        if not (self.master and self.checkpoint_dir is not None):
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_dir / (CHECKPOINT_FILE + ".tmp")
        torch.save(
            {
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict(),
                "epoch": self.epoch,
                "step": self.step,
                "best_loss": self.best_loss,
                "best_epoch": self.best_epoch,
                "best_state": self.best_state,
                "bad_epochs": self.bad_epochs,
                "history": self.history,
                "identity": self.identity,
            },
            tmp,
        )
        os.replace(tmp, self.checkpoint_dir / CHECKPOINT_FILE)

    def _load_checkpoint(self, path: Path) -> None:
        ck = torch.load(path, map_location=self.device, weights_only=False)
        if ck.get("identity") != self.identity:
            diff = sorted(
                k for k in set(self.identity) | set(ck.get("identity") or {})
                if self.identity.get(k) != (ck.get("identity") or {}).get(k)
            )  # fmt: skip
            raise TrainingError(
                f"checkpoint {path} belongs to another training run (differs in {diff}); "
                "use a fresh checkpoint folder or delete it to train from scratch"
            )
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        self.epoch, self.step = ck["epoch"], ck["step"]
        self.best_loss, self.best_epoch = ck["best_loss"], ck["best_epoch"]
        self.best_state, self.bad_epochs = ck["best_state"], ck["bad_epochs"]
        self.history = ck["history"]
        self.resumed_from = self.epoch

    # -- the loop ----------------------------------------------------------------------
    def train_loop(self) -> None:
        while self.epoch < self.tc.epochs and self.bad_epochs < self.tc.patience:
            t0 = time.perf_counter()
            train_loss = self._run_epoch(self.epoch)
            val_loss = self._validate()
            if val_loss < self.best_loss - 1e-5:
                self.best_loss, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
                self.best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
                }
            else:
                self.bad_epochs += 1
            self.history.append(
                {"epoch": self.epoch, "train_loss": train_loss, "val_loss": val_loss}
            )
            if self.master:
                print(
                    f"[train] epoch {self.epoch + 1}/{self.tc.epochs} train_loss={train_loss:.4f}"
                    f" val_loss={val_loss:.4f} ({time.perf_counter() - t0:.2f}s)",
                    flush=True,
                )
            self.epoch += 1
            self._save_checkpoint()


def _write_model_artifact(
    out: Path, trainer: Trainer, spec: ModelSpec, transform_dir: Path, feats_meta: dict,
    wall: float, backend: str,
) -> None:  # fmt: skip
    artifacts.begin(out)
    state = trainer.best_state or {
        k: v.detach().cpu() for k, v in trainer.model.state_dict().items()
    }
    torch.save(state, out / WEIGHTS_FILE)
    (out / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=1))
    shutil.copy(transform_dir / TRANSFORM_FILE, out / TRANSFORM_FILE)
    tf = load_transform(transform_dir)
    (out / FEATURE_SPEC_FILE).write_text(json.dumps(tf.feature_spec(), indent=1))
    sps = trainer.samples / trainer.train_seconds if trainer.train_seconds else 0.0
    artifacts.commit(
        out,
        MODEL_KIND,
        {
            "framework": f"torch {torch.__version__}",
            "code_version": __version__,
            "data_fingerprint": feats_meta.get("data_fingerprint"),
            "training": {
                "world_size": trainer.world,
                "backend": backend,
                "device": trainer.device.type,
                "epochs_run": trainer.epoch,
                "best_epoch": trainer.best_epoch,
                "best_val_loss": trainer.best_loss,
                "history": trainer.history,
                "samples_per_s": sps,
                "train_seconds": trainer.train_seconds,
                "wall_seconds": wall,
                "resumed_from_epoch": trainer.resumed_from,
                "config": trainer.tc.__dict__,
            },
        },
    )


@record  # a worker's exception reaches the launcher's error message (TORCHELASTIC_ERROR_FILE)
def worker_main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m torchkfp.trainer")
    ap.add_argument("--config", required=True)
    ap.add_argument("--features", required=True)
    ap.add_argument("--transform", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--checkpoint-dir", default=None)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    cfg = Config.from_json(Path(a.config).read_text())
    tc = cfg.train
    use_cuda = torch.cuda.is_available() and tc.backend in ("auto", "nccl")
    backend = "nccl" if use_cuda else "gloo"
    if tc.backend == "nccl" and not use_cuda:
        raise TrainingError("train.backend='nccl' needs CUDA; use 'auto' or 'gloo'")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(tc.threads_per_process)
    dist.init_process_group(backend=backend, device_id=device if use_cuda else None)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        feats_meta = artifacts.require(a.features, "features")
        train = load_features(a.features, "train")
        val = load_features(a.features, "validation")
        spec = ModelSpec(
            num_numeric=int(train["x_num"].shape[1]),
            cardinalities=list(feats_meta["cardinalities"]),
            hidden_sizes=list(tc.hidden_sizes),
            dropout=tc.dropout,
            max_embedding_dim=tc.max_embedding_dim,
        )
        model = TabularMLP(spec)
        ck = Path(a.checkpoint_dir) if a.checkpoint_dir else None
        identity = {
            "data_fingerprint": feats_meta.get("data_fingerprint"),
            "model_spec": spec.to_dict(),
            "world_size": world,
            **{k: getattr(tc, k) for k in (
                "batch_size", "learning_rate", "weight_decay", "seed", "unknown_category_rate",
            )},
        }  # fmt: skip
        trainer = Trainer(tc, model, train, val, device, rank, world, ck, identity)
        trainer.train_loop()
        if rank == 0:
            _write_model_artifact(
                Path(a.model), trainer, spec, Path(a.transform), feats_meta,
                time.perf_counter() - t0, backend,
            )  # fmt: skip
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    worker_main()
