"""The training loop of one DDP rank: ``Trainer`` (batches, epochs, validation, early
stopping, checkpoints) and the pure helpers ``get_lr`` and ``shard_indices``.

Each rank trains on its own shard of pre-built tensors; gradients are averaged by DDP; the
validation loss is all-reduced so every rank takes the same early-stopping decision; only rank
0 writes checkpoints. Objects arrive built (model, tensors, device): the worker builds them.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from torchkfp.config import TrainConfig
from torchkfp.errors import TrainingError
from torchkfp.model import output_logits

CHECKPOINT_FILE = "last.pt"


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
        train: dict[str, torch.Tensor],
        val: dict[str, torch.Tensor],
        device: torch.device,
        rank: int,
        world: int,
        checkpoint_dir: Path | None,
        identity: dict[str, Any] | None = None,
        task: str = "binary",
    ):
        self.tc, self.rank, self.world, self.device = tc, rank, world, device
        self.loss_fn = loss_function(task)
        self.task = task
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
        per_process = math.ceil(n / world)
        self.batch_size = effective_batch_size(tc.batch_size, per_process, tc.min_steps_per_epoch)
        self.steps_per_epoch = math.ceil(per_process / self.batch_size)
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
        loss = self.loss_fn(output_logits(self.ddp, x_num, x_cat), y)
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
        bs = self.batch_size
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
            logits = output_logits(self.model, self.val["x_num"][sl], self.val["x_cat"][sl])
            s[0] += self.loss_fn(logits, self.val["y"][sl], reduction="sum").double()
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
        # weights-only: a checkpoint holds tensors and plain data, never code to run
        ck = torch.load(path, map_location=self.device, weights_only=True)
        theirs = ck.get("identity") or {}
        if theirs != self.identity:
            keys = set(self.identity) | set(theirs)
            diff = sorted(k for k in keys if self.identity.get(k) != theirs.get(k))
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
