"""Start the DDP workers with torchrun and collect the chief's result.

``launch`` runs ``python -m torch.distributed.run`` with one process per rank running
:mod:`torchkfp.training.worker`. The backend (nccl with CUDA, else gloo) and this replica's
place in the cluster (``CLUSTER_SPEC`` on Vertex AI) are decided here, once, and handed to the
workers with the ``train`` settings (the only section they receive). torchrun and its workers
run in their own process group, stopped as a whole on timeout or interrupt.

Where a run checkpoints and logs: :func:`default_checkpoint_dir` (``TORCHKFP_CHECKPOINT_ROOT``,
else Vertex AI's ``AIP_CHECKPOINT_DIR``, each keyed by :func:`checkpoint_key`, else next to the
model output) and :func:`default_tensorboard_dir` (Vertex AI's ``AIP_TENSORBOARD_LOG_DIR``,
else next to the model output; see :mod:`torchkfp.training.tensorboard`).

Before torchrun starts, the checkpoint folder is made sure of (created, writable, not in use by
another training run: an exclusive lock held for as long as torchrun runs, and a checkpoint in
it readable), so those faults cost no startup. After it, a worker's
:class:`~torchkfp.errors.TrainingError` (divergence, a checkpoint of another run, ...) is raised
again with its own message; any other failure names the exception a worker died of, or says
that none reported one (a killed worker).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import warnings
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
    resumed_from_epoch: int | None = None
    """The epoch the run resumed after (its checkpoint's), None: trained from scratch."""
    tensorboard_dir: str | None = None
    """Where the run's TensorBoard event files are (gs:// on Vertex AI), None: not written."""

    @classmethod
    def from_model(
        cls, model_dir: str | os.PathLike, seconds: float, *, reused: bool = False
    ) -> TrainResult:
        """The result recorded in a committed model artifact's metadata. ``reused``: the model
        of an earlier run taken as it is (nothing resumed, no TensorBoard folder of this run)."""
        meta = artifacts.require(model_dir, model_artifact.KIND)
        tr = meta["training"]
        return cls(
            model_path=str(model_dir),
            world_size=tr["world_size"],
            epochs_run=tr["epochs_run"],
            best_epoch=tr["best_epoch"],
            best_val_loss=tr["best_val_loss"],
            samples_per_s=tr["samples_per_s"],
            seconds=seconds,
            metadata=meta,
            resumed_from_epoch=None if reused else tr.get("resumed_from_epoch"),
            tensorboard_dir=None if reused else tr.get("tensorboard_dir"),
        )


CHECKPOINT_ROOT_ENV = "TORCHKFP_CHECKPOINT_ROOT"
"""A folder of checkpoint folders shared by runs (``torchkfp run --resume`` sets it): the
train step then checkpoints in ``<it>/<checkpoint_key>``, so a rerun on the same data with the
same settings resumes where an earlier one stopped."""

VERTEX_CHECKPOINT_ENV = "AIP_CHECKPOINT_DIR"
"""Set by Vertex AI in a training job with a base output directory
(``<base_output_directory>/checkpoints/``, a gs:// URI): the train step checkpoints in
``<it>/<checkpoint_key>`` through the GCS FUSE mount, so a restarted job resumes and a later
run on other data or settings starts its own folder."""

VERTEX_TENSORBOARD_ENV = "AIP_TENSORBOARD_LOG_DIR"
"""Set by Vertex AI in a training job with a TensorBoard (``<base_output_directory>/logs/``,
a gs:// URI, streamed to the TensorBoard): the trainer writes its event files in
``<it>/<checkpoint_key>`` (one TensorBoard run per training run)."""

KEY_EXCLUDES = ("timeout_s",)
"""Train settings left out of the checkpoint key: they do not change the weights (a run
stopped by its timeout resumes with a longer one)."""

LOCK_FILE = ".lock"


def checkpoint_key(
    tc: TrainConfig, features_dir: str | os.PathLike, transform_dir: str | os.PathLike
) -> str:
    """What a training run trains on and how, as 16 hex digits: the features (their metadata,
    which holds the data fingerprint, rows and cardinalities), the fitted transform, and the
    ``train`` settings but those in :data:`KEY_EXCLUDES`."""
    fmeta = artifacts.require(features_dir, features_artifact.KIND)
    artifacts.require(transform_dir, transform_artifact.KIND)
    tf = (Path(transform_dir) / transform_artifact.FILE).read_bytes()
    settings = {k: v for k, v in tc.to_dict().items() if k not in KEY_EXCLUDES}
    blob = json.dumps(
        {
            "features": fmeta,
            "transform": hashlib.sha256(tf).hexdigest(),
            "train": settings,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_checkpoint_dir(model_dir: str | os.PathLike, key: str | None = None) -> str:
    """Where a pipeline's train step checkpoints, first that applies:

    1. ``$TORCHKFP_CHECKPOINT_ROOT/<key>`` (``torchkfp run --resume``: shared by reruns; an
       explicit choice, so it wins);
    2. ``$AIP_CHECKPOINT_DIR/<key>`` (Vertex AI, as a GCS FUSE path): the folder is shared by
       every run of the pipeline, so it is keyed too;
    3. ``<model_dir>-checkpoints``: next to the model output, unique per run, kept across
       retries of the task, so a restarted task resumes.

    ``key`` (:func:`checkpoint_key`) names what is trained and how: without it the shared
    folders of 1 and 2 are not used (a checkpoint of another run must never be resumed)."""
    if key:
        root = os.environ.get(CHECKPOINT_ROOT_ENV)
        if root:
            return str(Path(root) / key)
        aip = os.environ.get(VERTEX_CHECKPOINT_ENV)
        if aip:
            return str(Path(artifacts.gcs_to_fuse(aip)) / key)
    return str(model_dir).rstrip("/") + "-checkpoints"


def default_tensorboard_dir(model_dir: str | os.PathLike, key: str | None = None) -> str:
    """Where the trainer writes TensorBoard event files: ``$AIP_TENSORBOARD_LOG_DIR/<key>``
    (Vertex AI, as a GCS FUSE path; without ``key`` the folder itself), else
    ``<model_dir>-tensorboard`` next to the model output (``tensorboard --logdir`` on the run
    folder, or on the pipeline root for every run)."""
    aip = os.environ.get(VERTEX_TENSORBOARD_ENV)
    if aip:
        base = Path(artifacts.gcs_to_fuse(aip))
        return str(base / key) if key else str(base)
    return str(model_dir).rstrip("/") + "-tensorboard"


def _prepare_tensorboard_dir(
    tensorboard_dir: str | os.PathLike | None,
    model_dir: str | os.PathLike,
    key: Any,
) -> Path | None:
    """The TensorBoard folder, created; None (with a warning) when it cannot be: TensorBoard
    is an aid, the training goes on without it. ``key``: a callable giving the checkpoint key
    (computed only where the folder needs it)."""
    if tensorboard_dir is None:
        tensorboard_dir = default_tensorboard_dir(
            model_dir, key() if os.environ.get(VERTEX_TENSORBOARD_ENV) else None
        )
    tb = Path(tensorboard_dir)
    try:
        tb.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(
            f"[train] warning: TensorBoard folder {tb} cannot be created ({type(e).__name__}: "
            f"{e.strerror or e}); training without TensorBoard logs",
            file=sys.stderr,
            flush=True,
        )
        return None
    return tb


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_cpu_budget(tc: TrainConfig, backend: str, nproc: int) -> None:
    """gloo on CPU: more busy threads than cores still trains, only slower (ranks wait on
    each other at every step): warn, with the fix."""
    if backend != "gloo":
        return
    cores, threads = available_cores(), nproc * tc.threads_per_process
    if threads > cores:
        msg = (
            f"train.nproc_per_node={nproc} x train.threads_per_process="
            f"{tc.threads_per_process} = {threads} busy threads on {cores} CPU core(s): training "
            "runs, but oversubscribed (slower); keep nproc_per_node x threads_per_process <= "
            "the cores"
        )
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        print(f"[train] warning: {msg}", file=sys.stderr, flush=True)


def _prepare_checkpoint_dir(ck: Path, chief: bool) -> int | None:
    """Fail before torchrun starts on a checkpoint folder that cannot be used: on the chief
    (which writes it) create it and take its lock (returns the locked file descriptor, held
    for as long as torchrun runs); on every replica, check a checkpoint in it is readable."""
    from torchkfp.training.loop import CHECKPOINT_FILE

    fd = None
    if chief:
        try:
            ck.mkdir(parents=True, exist_ok=True)
            fd = os.open(ck / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise TrainingError(
                f"checkpoint folder {ck} is not writable ({type(e).__name__}: "
                f"{e.strerror or e}): fix its permissions or use another checkpoint folder"
            ) from None
        fd = _lock(fd, ck)
    if (ck / CHECKPOINT_FILE).exists():
        try:
            _read_checkpoint(ck / CHECKPOINT_FILE)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
    return fd


def _lock(fd: int, ck: Path) -> int:
    """An exclusive lock on the folder's lock file: two runs writing one checkpoint folder
    would resume from each other's epochs. Released when every process holding it has exited
    (also when killed). A file system without locks (e.g. GCS FUSE) is used unlocked."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise TrainingError(
                f"checkpoint folder {ck} is in use by another training run"
                f"{f' (pid {holder})' if holder else ''}: wait for it to end, or use another "
                "checkpoint folder"
            ) from None
        return fd  # no locking here: go on unlocked
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint, memory-mapped (its tensors are not read), or read whole where the file
    system cannot map it."""
    from torchkfp.training.loop import read_checkpoint

    try:
        return read_checkpoint(path, mmap=True)
    except TrainingError:
        return read_checkpoint(path)


def _checkpoint_note(ck: Path | None) -> str:
    """Where a failed run can resume from, when it left a checkpoint."""
    from torchkfp.training.loop import CHECKPOINT_FILE

    if ck is None or not (ck / CHECKPOINT_FILE).exists():
        return ""
    try:
        epoch = _read_checkpoint(ck / CHECKPOINT_FILE)["epoch"]
    except TrainingError:
        return ""
    return (
        f" The last checkpoint (after epoch {epoch}) is in {ck}: a rerun with the same "
        "checkpoint folder and settings resumes from it."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_error(error_file: Path) -> str:
    """The failing worker's exception (``Type: message``), as torchelastic's @record wrote
    it (the first rank to fail)."""
    if not error_file.exists():
        return ""
    try:
        return json.loads(error_file.read_text())["message"]["message"][-2000:]
    except (KeyError, TypeError, ValueError):
        return error_file.read_text()[-2000:]


_USER_ERROR = re.compile(r"(?:[\w.]*\.)?TrainingError: (.*)", re.S)


def launch(
    tc: TrainConfig,
    features_dir: str | os.PathLike,
    transform_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike | None = None,
    expected_fingerprint: str | None = None,
    *,
    tensorboard: bool = True,
    tensorboard_dir: str | os.PathLike | None = None,
) -> TrainResult:
    """Run torchrun and return the chief's result (other replicas: a result without metadata).
    ``expected_fingerprint``: the data fingerprint the features must have been built from.
    ``tensorboard``: write per-epoch scalars (global rank 0), in ``tensorboard_dir`` (None:
    :func:`default_tensorboard_dir`). Raises :class:`TrainingError` when training fails; no
    model artifact is written then."""
    t0 = time.perf_counter()
    transform_artifact.read(transform_dir)  # fail fast, in this process, on a bad input
    fmeta = artifacts.require(features_dir, features_artifact.KIND)
    artifacts.check_fingerprint(fmeta, expected_fingerprint, features_dir)
    cluster = cluster_from_env()
    backend = choose_backend(tc)
    nproc = processes_per_node(tc, backend)
    _check_cpu_budget(tc, backend, nproc)
    ck = Path(checkpoint_dir) if checkpoint_dir else None
    tb = None
    if tensorboard and cluster.is_chief:  # global rank 0 runs on the chief
        key = functools.partial(checkpoint_key, tc, features_dir, transform_dir)
        tb = _prepare_tensorboard_dir(tensorboard_dir, model_dir, key)
    lock_fd = _prepare_checkpoint_dir(ck, cluster.is_chief) if ck is not None else None
    try:
        _run_torchrun(
            tc, cluster, backend, nproc, features_dir, transform_dir, model_dir, ck, lock_fd, tb
        )
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
    if not cluster.is_chief:
        return TrainResult(str(model_dir), 0, 0, 0, math.nan, 0.0, time.perf_counter() - t0)
    return TrainResult.from_model(model_dir, time.perf_counter() - t0)


def _run_torchrun(
    tc: TrainConfig,
    cluster: Any,
    backend: str,
    nproc: int,
    features_dir: str | os.PathLike,
    transform_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    ck: Path | None,
    lock_fd: int | None,
    tb: Path | None = None,
) -> None:
    from torchkfp.procs import terminate_tree

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
        if ck is not None:
            cmd.append(f"--checkpoint-dir={ck}")
        if tb is not None:
            cmd.append(f"--tensorboard-dir={tb}")
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(tc.threads_per_process))
        env["TORCHELASTIC_ERROR_FILE"] = str(Path(td) / "error.json")
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("TMPDIR", td)  # torchelastic_* scratch folders go away with td
        # torchrun holds the checkpoint lock too: were this process killed, the lock lasts
        # as long as the training that writes the folder
        fds = (lock_fd,) if lock_fd is not None else ()
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, pass_fds=fds)
        try:
            proc.wait(timeout=tc.timeout_s)
        except subprocess.TimeoutExpired:
            terminate_tree(proc)
            raise TrainingError(
                f"training exceeded train.timeout_s={tc.timeout_s}s and was stopped; the model "
                "artifact was not written: raise train.timeout_s or train less (train.epochs)."
                + _checkpoint_note(ck)
            ) from None
        except BaseException:
            terminate_tree(proc)
            raise
        if proc.returncode != 0:
            detail = _worker_error(Path(td) / "error.json")
            m = _USER_ERROR.fullmatch(detail)
            if m:  # the worker's own diagnosis: raised again as is
                raise TrainingError(f"{m.group(1)}; the model artifact was not written")
            if not detail:
                detail = (
                    "No worker reported an exception: one was killed (out of memory, or a "
                    "signal) or torchrun itself failed; see the training output above."
                )
            raise TrainingError(
                f"torchrun exited with code {proc.returncode}; the model artifact was not "
                f"written. {detail}{_checkpoint_note(ck)}"
            )
