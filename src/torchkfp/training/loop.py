"""The training loop of one DDP rank: ``Trainer`` (batches, epochs, validation, early
stopping, divergence, checkpoints) and the pure helpers ``get_lr``, ``shard_indices`` and
``epoch_seed``.

Each rank trains on its own share of the training split (:mod:`torchkfp.training.data`: in
memory or streamed from the memory-mapped features, the same number of steps on every rank);
gradients are averaged by DDP; the epoch's train and validation losses and a
non-finite-weights flag are all-reduced, so every rank takes the same early-stopping and
divergence decision; only rank 0 writes checkpoints. Each epoch leaves one history entry
(losses, the validation metric, the learning rate) and its throughput, which rank 0 also hands
to TensorBoard (:mod:`torchkfp.training.tensorboard`). Objects arrive built (model, data
shares, device): the worker builds them.

Resume is exact: an epoch's randomness (its data order, dropout, the unknown-category mask)
depends only on ``(seed, epoch, rank)`` (the global RNGs are reseeded at the start of every
epoch), and a checkpoint holds everything else that carries over (weights, optimizer state,
step, early-stopping state, history), so a run stopped after any epoch and resumed ends with the
same weights as one that was never stopped. A checkpoint holds tensors and plain data only (it
loads with ``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from torchkfp.config import TrainConfig
from torchkfp.errors import TrainingError
from torchkfp.model import ensemble_size, output_logits
from torchkfp.training.data import InMemoryShare, StreamingShare, ValidationShare

CHECKPOINT_FILE = "last.pt"
CHECKPOINT_KEYS = (
    "model",
    "opt",
    "epoch",
    "step",
    "best_loss",
    "best_score",
    "best_epoch",
    "best_state",
    "bad_epochs",
    "history",
    "identity",
)
"""What a checkpoint must hold to be resumed."""

VALIDATION_METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}
"""The metric computed on the whole validation split after every epoch, per task kind (in the
history as ``val_<name>``): binary ROC AUC, multi-class accuracy, regression RMSE in the
label's units."""

HIGHER_IS_BETTER = {"roc_auc", "accuracy"}
"""Of :data:`VALIDATION_METRIC`, those where higher is better."""


def get_lr(step: int, total_steps: int, peak: float, warmup_steps: int) -> float:
    """Linear warmup then cosine decay to 10% of peak. Pure, for tests and plots."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def shard_indices(n: int, rank: int, world: int, seed: int, epoch: int) -> torch.Tensor:
    """A seeded permutation of ``n`` rows, padded so every rank gets the same count (as
    DistributedSampler does), then strided by rank: the order of one process's epoch (which
    :class:`~torchkfp.training.data.InMemoryShare` keeps exactly); several processes now train
    on block shares instead (:mod:`torchkfp.training.data`)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = math.ceil(n / world)
    total = per_rank * world
    if total > n:
        perm = torch.cat([perm, perm[: total - n]])
    return perm[rank:total:world]


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one rank's randomness in one epoch (dropout, the unknown-category mask, a
    custom model's own draws): a pure function of ``(seed, epoch, rank)``, so a resumed epoch
    draws exactly what it would have drawn in an uninterrupted run, and ranks draw different
    masks."""
    digest = hashlib.sha256(f"torchkfp:{seed}:{epoch}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: any torch/numpy seed


def seed_everything(seed: int) -> None:
    """Reseed every global RNG a training step may draw from (torch on every device, numpy,
    Python's ``random``)."""
    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _unreadable(path: Path, why: str) -> TrainingError:
    why = (why.strip().splitlines() or [""])[0][:300]
    return TrainingError(
        f"checkpoint {path} is unreadable ({why}): delete it or use a fresh checkpoint folder"
    )


def read_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """A checkpoint, loaded weights-only (tensors and plain data, never code to run) and
    checked to hold what a resume needs. A truncated, garbage or foreign file raises
    :class:`TrainingError` (never a traceback from deep inside torch)."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # truncated zip, garbage bytes, pickled objects, I/O errors
        raise _unreadable(path, f"{type(e).__name__}: {e}") from None
    if not isinstance(ck, dict):
        raise _unreadable(path, f"holds a {type(ck).__name__}, not a training checkpoint")
    missing = [k for k in CHECKPOINT_KEYS if k not in ck]
    if missing:
        raise _unreadable(path, f"not a training checkpoint: no {', '.join(missing)}")
    if not isinstance(ck["epoch"], int) or not isinstance(ck["step"], int):
        raise _unreadable(path, "epoch and step are not integers")
    return ck


def effective_batch_size(batch_size: int, rows_per_process: int, min_steps: int) -> int:
    """``batch_size`` capped so an epoch takes at least ``min_steps`` optimizer steps (a small
    table still trains); at least 1."""
    return max(1, min(batch_size, rows_per_process // min_steps))


def loss_function(task: str):
    """The training loss per task kind, on the model's raw outputs: binary cross-entropy on
    the logit, cross-entropy over the classes, mean squared error on the standardized target."""
    return {
        "binary": F.binary_cross_entropy_with_logits,
        "multiclass": F.cross_entropy,
        "regression": F.mse_loss,
    }[task]


class Trainer:
    def __init__(
        self,
        tc: TrainConfig,
        model: torch.nn.Module,
        train: dict[str, torch.Tensor] | InMemoryShare | StreamingShare,
        val: dict[str, torch.Tensor] | ValidationShare,
        device: torch.device,
        rank: int,
        world: int,
        checkpoint_dir: Path | None,
        identity: dict[str, Any] | None = None,
        task: str = "binary",
        target_std: float = 1.0,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ):
        """``train``: this rank's share (:func:`torchkfp.training.data.train_share`), or the
        whole split's tensors (this rank takes its share of them); ``val``: this rank's
        validation rows (:func:`~torchkfp.training.data.validation_share`), or the whole
        split's tensors (this rank takes rows ``rank, rank + world, ...``). ``target_std``:
        regression, the label's training std (the loss is on the standardized label; RMSE is
        reported in the label's units). ``on_epoch``: called with each epoch's history entry
        after its checkpoint is written (rank 0 passes the TensorBoard writer)."""
        self.tc, self.rank, self.world, self.device = tc, rank, world, device
        self.loss_fn = loss_function(task)
        self.task = task
        self.metric = VALIDATION_METRIC[task]
        self.target_std = target_std
        self.on_epoch = on_epoch
        # what a checkpoint must match to be resumed: the data, the architecture, and the
        # hyperparameters that shape the optimization (epochs/patience may change on resume)
        self.identity = identity or {}
        self.master = rank == 0
        if isinstance(train, dict):
            train = InMemoryShare.from_split(train, rank, world, tc.seed)
        if isinstance(train, InMemoryShare):
            train = train.to(device)
        self.share = train
        if isinstance(val, dict):
            val = ValidationShare.from_split(val, rank, world)
        self.val_rows = val.rows
        self.val = {k: v.to(device) for k, v in val.tensors.items()}
        self.model = model.to(device)
        self.members = ensemble_size(model)
        """Ensemble members (:func:`torchkfp.model.ensemble_size`): the train loss is then
        the mean of the members' losses; validation scores the combined prediction."""
        self.ddp = DDP(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay
        )
        per_process = self.share.per_rank  # ceil(rows / world) on every rank
        self.batch_size = effective_batch_size(tc.batch_size, per_process, tc.min_steps_per_epoch)
        self.steps_per_epoch = math.ceil(per_process / self.batch_size)
        self.total_steps = self.steps_per_epoch * tc.epochs
        self.warmup = max(1, self.total_steps // 20)
        self.step = 0
        self.epoch = 0
        self.best_loss = math.inf
        """The validation loss of the best epoch."""
        self.best_score = math.inf
        """The best epoch's early-stopping score (lower is better: the loss, or the metric,
        negated where higher is better)."""
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        """Per epoch: losses, the validation metric, the learning rate (deterministic: a
        resumed run has the history of one never stopped)."""
        self.throughput: list[float] = []
        """Per epoch: training samples per second, all ranks together (wall-clock)."""
        self.samples = 0
        self.train_seconds = 0.0
        self.checkpoint_dir = checkpoint_dir
        self.resumed_from: int | None = None
        if checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT_FILE).exists():
            self._load_checkpoint(checkpoint_dir / CHECKPOINT_FILE)

    # -- one batch / one epoch ---------------------------------------------------------
    def _run_batch(self, x_num: torch.Tensor, x_cat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for g in self.opt.param_groups:
            g["lr"] = get_lr(self.step, self.total_steps, self.tc.learning_rate, self.warmup)
        if self.tc.unknown_category_rate > 0 and x_cat.numel():
            # train the unknown bucket (index 0) too: it stands for every unseen value later
            drop = torch.rand(x_cat.shape, device=x_cat.device) < self.tc.unknown_category_rate
            x_cat = x_cat.masked_fill(drop, 0)
        out = output_logits(self.ddp, x_num, x_cat)
        if self.members > 1:  # one output per member: each member's loss, averaged
            if self.task == "multiclass":
                out, y = out.reshape(-1, out.shape[-1]), y.repeat_interleave(self.members)
            else:
                y = y.unsqueeze(1).expand_as(out)
        loss = self.loss_fn(out, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return loss.detach()  # no .item() here: a host sync per step stalls a GPU

    def _run_epoch(self, epoch: int) -> tuple[float, bool]:
        """Train one epoch; return (the mean train loss over all ranks, whether every rank's
        weights are finite)."""
        self.ddp.train()
        seed_everything(epoch_seed(self.tc.seed, epoch, self.rank))
        total = torch.zeros((), device=self.device)
        count = 0
        t0 = time.perf_counter()
        for x_num, x_cat, y in self.share.batches(epoch, self.rank, self.batch_size, self.device):
            total += self._run_batch(x_num, x_cat, y) * y.shape[0]
            count += int(y.shape[0])
        params = [p.detach() for p in self.model.parameters()]
        finite = torch.stack([torch.isfinite(p).all() for p in params]).all() if params else True
        # one all-reduce (and one host sync) per epoch: loss sum, row count, ranks with
        # non-finite weights; every rank gets the same numbers, so the same decision
        s = torch.stack(
            [
                total.double(),
                torch.tensor(float(count), dtype=torch.float64, device=self.device),
                (~torch.as_tensor(finite, device=self.device)).double(),
            ]
        )
        dist.all_reduce(s)
        loss_sum, rows, bad_ranks = s.tolist()
        self.train_seconds += time.perf_counter() - t0
        self.samples += count * self.world
        return loss_sum / max(1.0, rows), bad_ranks == 0

    @torch.no_grad()
    def _validate(self) -> tuple[float, float | None]:
        """The validation loss and :data:`VALIDATION_METRIC` over the whole validation split
        (every rank gets the same numbers); the metric is None where it is undefined (ROC AUC
        of a split with one class)."""
        self.model.eval()
        s = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, rows, correct
        probs: list[torch.Tensor] = []
        for start in range(0, self.val["y"].shape[0], 8192):
            sl = slice(start, start + 8192)
            y = self.val["y"][sl]
            x_cat = self.val["x_cat"][sl].long()
            logits = output_logits(self.model, self.val["x_num"][sl], x_cat)
            s[0] += self.loss_fn(logits, y, reduction="sum").double()
            s[1] += logits.shape[0]
            if self.task == "multiclass":
                s[2] += (logits.argmax(dim=1) == y).sum().double()
            elif self.task == "binary":
                probs.append(torch.sigmoid(logits.reshape(-1).double()))
        dist.all_reduce(s)
        loss = float(s[0] / s[1])
        if float(s[1]) <= 0:
            return loss, None
        if self.task == "regression":
            return loss, (math.sqrt(loss) * self.target_std if loss >= 0 else None)
        if self.task == "multiclass":
            return loss, float(s[2] / s[1])
        return loss, self._roc_auc(probs)

    def _roc_auc(self, probs: list[torch.Tensor]) -> float | None:
        """ROC AUC over the whole validation split: every rank's probabilities and labels
        gathered (rank r holds rows r, r + world, ...)."""
        from torchkfp.metrics import roc_auc

        mine = torch.cat(probs) if probs else torch.zeros(0, dtype=torch.float64)
        width = math.ceil(self.val_rows / self.world)
        part = torch.zeros(2, width, dtype=torch.float64, device=self.device)
        part[0, : mine.shape[0]] = mine
        part[1, : mine.shape[0]] = self.val["y"].reshape(-1).double()
        parts = [torch.empty_like(part) for _ in range(self.world)]
        dist.all_gather(parts, part)
        sizes = [len(range(r, self.val_rows, self.world)) for r in range(self.world)]
        both = torch.cat([p[:, :n] for p, n in zip(parts, sizes, strict=True)], dim=1).cpu()
        p, y = both[0].numpy(), both[1].numpy()
        positives = int(y.sum())
        if positives == 0 or positives == len(y):
            return None
        return roc_auc(y, p)

    # -- checkpoints (rank 0 writes; every rank reads) ---------------------------------
    def _save_checkpoint(self) -> None:
        if not (self.master and self.checkpoint_dir is not None):
            return
        final = self.checkpoint_dir / CHECKPOINT_FILE
        tmp = self.checkpoint_dir / (CHECKPOINT_FILE + ".tmp")
        state = {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best_loss": self.best_loss,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "identity": self.identity,
            "throughput": self.throughput,
        }
        try:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:  # written whole and synced, then renamed over the last
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as e:
            raise TrainingError(
                f"cannot write checkpoint {final} ({type(e).__name__}: {e.strerror or e}): free "
                "disk space or make the folder writable, or use another checkpoint folder"
            ) from None

    def _load_checkpoint(self, path: Path) -> None:
        # weights-only: a checkpoint holds tensors and plain data, never code to run
        ck = read_checkpoint(path, map_location=self.device)
        theirs = ck.get("identity") or {}
        if theirs != self.identity:
            keys = set(self.identity) | set(theirs)
            diff = sorted(k for k in keys if self.identity.get(k) != theirs.get(k))
            raise TrainingError(
                f"checkpoint {path} belongs to another training run (differs in {diff}); "
                "use a fresh checkpoint folder or delete it to train from scratch"
            )
        try:
            self.model.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["opt"])
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise _unreadable(path, f"{type(e).__name__}: {e}") from None
        self.epoch, self.step = ck["epoch"], ck["step"]
        self.best_loss, self.best_epoch = ck["best_loss"], ck["best_epoch"]
        self.best_score = ck["best_score"]
        self.best_state, self.bad_epochs = ck["best_state"], ck["bad_epochs"]
        self.history = ck["history"]
        throughput = ck.get("throughput")  # absent in checkpoints written before it was kept
        self.throughput = list(throughput) if isinstance(throughput, list) else []
        self.resumed_from = self.epoch

    # -- the loop ----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """All epochs run, or early-stopped."""
        # with early_stopping off no epoch is ever a bad one (train_epoch), so patience never
        # stops it
        return self.epoch >= self.tc.epochs or self.bad_epochs >= self.tc.patience

    def _score(self, val_loss: float, val_metric: float | None) -> float:
        """What ``train.early_stopping`` watches, lower is better: the validation metric
        (negated where higher is better; the loss where the metric is undefined, as for a
        validation split of one class: the same every epoch, as the labels do not change),
        or the validation loss."""
        if self.tc.early_stopping == "metric" and val_metric is not None:
            return -val_metric if self.metric in HIGHER_IS_BETTER else val_metric
        return val_loss

    def train_epoch(self) -> None:
        """One epoch: train, validate, stop on divergence, keep the best weights, checkpoint.
        Raises :class:`TrainingError` (on every rank alike) when the epoch's train or
        validation loss or the weights are not finite: nothing of that epoch is kept."""
        t0 = time.perf_counter()
        samples, seconds = self.samples, self.train_seconds
        train_loss, weights_finite = self._run_epoch(self.epoch)
        samples, seconds = self.samples - samples, self.train_seconds - seconds
        val_loss, val_metric = self._validate()
        if self.master:
            print(
                f"[train] epoch {self.epoch + 1}/{self.tc.epochs} train_loss={train_loss:.4f}"
                f" val_loss={val_loss:.4f} val_{self.metric}="
                f"{'n/a' if val_metric is None else format(val_metric, '.4f')}"
                f" ({time.perf_counter() - t0:.2f}s)",
                flush=True,
            )
        if not math.isfinite(train_loss):
            self._diverged(f"train loss {train_loss}")
        if not weights_finite:
            self._diverged("weights not finite")
        if not math.isfinite(val_loss):
            self._diverged(f"validation loss {val_loss}")
        score = self._score(val_loss, val_metric)
        if self.tc.early_stopping == "off":  # every epoch runs; the last one is shipped
            self.best_loss, self.best_score, self.best_epoch = val_loss, score, self.epoch
        elif score < self.best_score - 1e-5:  # finite: non-finite losses raised above
            self.best_loss, self.best_score, self.best_epoch = val_loss, score, self.epoch
            self.bad_epochs = 0
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
            }
        else:
            self.bad_epochs += 1
        self.history.append(
            {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                f"val_{self.metric}": val_metric,
                "learning_rate": float(self.opt.param_groups[0]["lr"]),
            }
        )
        self.throughput.append(samples / seconds if seconds > 0 else 0.0)
        self.epoch += 1
        self._save_checkpoint()
        if self.on_epoch is not None:  # after the checkpoint: a logged epoch is never redone
            self.on_epoch(self.epoch_record(self.epoch - 1))

    def epoch_record(self, i: int) -> dict[str, Any]:
        """History entry ``i`` with its epoch's training throughput (``samples_per_s``, when
        known): what TensorBoard shows of an epoch."""
        record = dict(self.history[i])
        if i < len(self.throughput):
            record["samples_per_s"] = self.throughput[i]
        return record

    def _diverged(self, what: str) -> None:
        raise TrainingError(
            f"training diverged at epoch {self.epoch + 1} ({what}): lower train.learning_rate "
            f"(now {self.tc.learning_rate:g}), or check the features for extreme values; the "
            "epoch was not checkpointed"
        )

    def train_loop(self) -> None:
        while not self.finished:
            self.train_epoch()
