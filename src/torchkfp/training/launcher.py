"""Start the DDP workers with torchrun and collect the chief's result.

``launch`` runs ``python -m torch.distributed.run`` with one process per rank running
:mod:`torchkfp.training.worker`. The backend (nccl with CUDA, else gloo) and this replica's
place in the cluster (``CLUSTER_SPEC`` on Vertex AI) are decided here, once, and handed to the
workers with the ``train`` settings (the only section they receive). torchrun and its workers
run in their own process group, stopped as a whole on timeout or interrupt.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchkfp import artifacts
from torchkfp.artifacts import features as features_artifact
from torchkfp.artifacts import model as model_artifact
from torchkfp.artifacts import transform as transform_artifact
from torchkfp.config import TrainConfig
from torchkfp.errors import TrainingError
from torchkfp.training.cluster import choose_backend, cluster_from_env, processes_per_node


@dataclass
class TrainResult:
    model_path: str
    world_size: int
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    samples_per_s: float
    seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)


def default_checkpoint_dir(model_dir: str | os.PathLike) -> str:
    """Where a pipeline's train step checkpoints: Vertex's AIP_CHECKPOINT_DIR (as a GCS FUSE
    path) when set, else next to the model output: unique per run, kept across retries of the
    task, so a restarted job resumes."""
    aip = os.environ.get("AIP_CHECKPOINT_DIR")
    return artifacts.gcs_to_fuse(aip) if aip else str(model_dir).rstrip("/") + "-checkpoints"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_error(error_file: Path) -> str:
    """The failing worker's exception, as torchelastic's @record wrote it."""
    if not error_file.exists():
        return ""
    try:
        return json.loads(error_file.read_text())["message"]["message"][-2000:]
    except (KeyError, TypeError, ValueError):
        return error_file.read_text()[-2000:]


def launch(
    tc: TrainConfig,
    features_dir: str | os.PathLike,
    transform_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike | None = None,
    expected_fingerprint: str | None = None,
) -> TrainResult:
    """Run torchrun and return the chief's result (other replicas: a result without metadata).
    ``expected_fingerprint``: the data fingerprint the features must have been built from."""
    from torchkfp.procs import terminate_tree

    t0 = time.perf_counter()
    transform_artifact.read(transform_dir)  # fail fast, in this process, on a bad input
    fmeta = artifacts.require(features_dir, features_artifact.KIND)
    artifacts.check_fingerprint(fmeta, expected_fingerprint, features_dir)
    cluster = cluster_from_env()
    backend = choose_backend(tc)
    nproc = processes_per_node(tc, backend)
    port = cluster.master_port or _free_port()
    with tempfile.TemporaryDirectory(prefix="torchkfp-train-") as td:
        settings = Path(td) / "train.json"
        settings.write_text(json.dumps(tc.to_dict()))
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={cluster.nnodes}",
            f"--node-rank={cluster.node_rank}",
            f"--nproc-per-node={nproc}",
            f"--master-addr={cluster.master_addr}",
            f"--master-port={port}",
            "-m",
            "torchkfp.training.worker",
            f"--train-settings={settings}",
            f"--backend={backend}",
            f"--features={features_dir}",
            f"--transform={transform_dir}",
            f"--model={model_dir}",
        ]
        if checkpoint_dir:
            cmd.append(f"--checkpoint-dir={checkpoint_dir}")
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(tc.threads_per_process))
        env["TORCHELASTIC_ERROR_FILE"] = str(Path(td) / "error.json")
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("TMPDIR", td)  # torchelastic_* scratch folders go away with td
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        try:
            proc.wait(timeout=tc.timeout_s)
        except subprocess.TimeoutExpired:
            terminate_tree(proc)
            raise TrainingError(
                f"training exceeded train.timeout_s={tc.timeout_s}s and was stopped; "
                "raise train.timeout_s or train less (train.epochs)"
            ) from None
        except BaseException:
            terminate_tree(proc)
            raise
        if proc.returncode != 0:
            detail = _worker_error(Path(td) / "error.json")
            raise TrainingError(
                f"torchrun exited with code {proc.returncode}; the model artifact was not "
                f"written. {detail}".strip()
            )
    if not cluster.is_chief:
        return TrainResult(str(model_dir), 0, 0, 0, math.nan, 0.0, time.perf_counter() - t0)
    meta = artifacts.require(model_dir, model_artifact.KIND)
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
