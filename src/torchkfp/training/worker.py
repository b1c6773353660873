"""One DDP rank: ``python -m torchkfp.training.worker`` (started by torchrun, see
:mod:`torchkfp.training.launcher`).

Joins the process group with the backend the launcher chose, reads its share of the
features (:mod:`torchkfp.training.data`: in memory within ``train.memory_budget_mb``, streamed
beyond), builds the model and the :class:`~torchkfp.training.loop.Trainer`
(:func:`build_trainer`), runs the loop;
global rank 0 then exports the shipped weights to ONNX and checks the export against PyTorch
(:func:`onnx_export`, unless ``train.export_onnx`` is false) and writes the model artifact
(format: :mod:`torchkfp.artifacts.model`), never one with non-finite weights. A problem the
user can fix is raised as :class:`~torchkfp.errors.TrainingError`; ``record`` hands its message
to the launcher, which raises it again as is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from torchkfp import __version__, artifacts
from torchkfp.artifacts import features as features_artifact
from torchkfp.artifacts import fuse_to_gcs
from torchkfp.artifacts import model as model_artifact
from torchkfp.artifacts import transform as transform_artifact
from torchkfp.config import TrainConfig
from torchkfp.errors import TrainingError
from torchkfp.model import ModelSpec, build_model
from torchkfp.training import data
from torchkfp.training.loop import Trainer
from torchkfp.training.tensorboard import EpochScalars

IDENTITY_SETTINGS = (
    "batch_size",
    "learning_rate",
    "weight_decay",
    "seed",
    "unknown_category_rate",
    "min_steps_per_epoch",
    "early_stopping",
)
"""Settings a checkpoint must share to be resumed (epochs and patience may change). Not
``memory_budget_mb`` and ``shuffle_buffer_rows`` as such: the checkpoint records the data order
they lead to (``data_order``: none in memory, the buffer when streamed), so a budget that keeps
the order (a share that fits either way) still resumes, one that changes it does not."""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m torchkfp.training.worker")
    ap.add_argument("--train-settings", required=True, help="JSON file: the train section")
    ap.add_argument("--backend", required=True, choices=("nccl", "gloo"))
    ap.add_argument("--features", required=True)
    ap.add_argument("--transform", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--tensorboard-dir", default=None, help="written by global rank 0 only")
    return ap.parse_args(argv)


def _model_metadata(
    trainer: Trainer,
    feats_meta: dict,
    wall: float,
    backend: str,
    tensorboard_dir: str | None = None,
) -> dict[str, object]:
    sps = trainer.samples / trainer.train_seconds if trainer.train_seconds else 0.0
    return {
        "framework": f"torch {torch.__version__}",
        "code_version": __version__,
        "data_fingerprint": feats_meta.get("data_fingerprint"),
        "task": trainer.task,
        "model_factory": trainer.tc.model_factory,
        "model_args": dict(trainer.tc.model_args),
        "training": {
            "world_size": trainer.world,
            "batch_size": trainer.batch_size,
            "backend": backend,
            "device": trainer.device.type,
            "epochs_run": trainer.epoch,
            "best_epoch": trainer.best_epoch,
            "best_val_loss": trainer.best_loss,
            "history": trainer.history,
            "samples_per_s": sps,
            "epoch_samples_per_s": list(trainer.throughput),
            "train_seconds": trainer.train_seconds,
            "wall_seconds": wall,
            "resumed_from_epoch": trainer.resumed_from,
            "validation_metric": trainer.metric,
            # the event files' folder (gs:// when written through the GCS FUSE mount)
            "tensorboard_dir": fuse_to_gcs(tensorboard_dir) if tensorboard_dir else None,
            "config": trainer.tc.to_dict(),
        },
    }


def build_trainer(
    tc: TrainConfig,
    features: str | os.PathLike,
    device: torch.device,
    rank: int,
    world: int,
    checkpoint_dir: str | os.PathLike | None,
    target_std: float = 1.0,
) -> tuple[Trainer, ModelSpec, dict]:
    """The model (seeded: identical initial weights on every rank) and its Trainer on this
    rank's data; the Trainer resumes from ``checkpoint_dir`` when it holds a checkpoint.
    ``target_std``: regression, the label's training std (validation RMSE in its units).
    Needs the process group. Returns (trainer, model spec, features metadata)."""
    feats_meta = artifacts.require(features, features_artifact.KIND)
    train = data.train_share(
        features,
        rank,
        world,
        tc.seed,
        tc.memory_budget_mb,
        tc.shuffle_buffer_rows,
        device,
    )
    val = data.validation_share(features, rank, world)
    if rank == 0:
        print(f"[train] {data.describe(train, tc.memory_budget_mb, world)}", file=sys.stderr)
    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    spec = ModelSpec(
        num_numeric=train.num_numeric,
        cardinalities=list(feats_meta["cardinalities"]),
        hidden_sizes=list(tc.hidden_sizes),
        dropout=tc.dropout,
        max_embedding_dim=tc.max_embedding_dim,
        task=feats_meta.get("task", "binary"),
        output_size=int(feats_meta.get("output_size", 1)),
        factory=tc.model_factory,
        factory_args=dict(tc.model_args),
        numeric_embedding=tc.numeric_embedding,
        numeric_embedding_dim=tc.numeric_embedding_dim,
        periodic_frequencies=tc.periodic_frequencies,
        periodic_sigma=tc.periodic_sigma,
        ensemble_size=tc.ensemble_size,
    )
    model = build_model(spec)
    identity = {
        "data_fingerprint": feats_meta.get("data_fingerprint"),
        "model_spec": spec.to_dict(),
        "world_size": world,
        **{k: getattr(tc, k) for k in IDENTITY_SETTINGS},
    }
    order = data.data_order(train)
    if order is not None:  # absent in memory: checkpoints from before streaming still resume
        identity["data_order"] = order
    ck = Path(checkpoint_dir) if checkpoint_dir else None
    trainer = Trainer(
        tc, model, train, val, device, rank, world, ck, identity, spec.task, target_std=target_std
    )
    return trainer, spec, feats_meta


def final_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The weights to ship: the best epoch's (else the last), all finite."""
    state = trainer.best_state or {
        k: v.detach().cpu() for k, v in trainer.model.state_dict().items()
    }
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise TrainingError(
            f"the trained weights are not finite ({', '.join(bad[:5])}): the model is not "
            "written; lower train.learning_rate"
        )
    return state


def onnx_export(
    tc: TrainConfig,
    state: dict[str, torch.Tensor],
    spec: ModelSpec,
    features: str,
    label_std: float,
) -> tuple[bytes | None, dict[str, object]]:
    """The ONNX export of the shipped weights and what the metadata records of it (see
    :mod:`torchkfp.onnx_export`): checked on the test split's features (the validation split's
    when the features artifact has no test split). ``train.export_onnx`` false: no export. A
    model that cannot be exported, or whose export differs from PyTorch by more than the
    tolerance, is not exported and training goes on: the reason is recorded and printed as a
    warning."""
    if not getattr(tc, "export_onnx", True):
        return None, {"exported": False, "reason": "train.export_onnx is false"}
    from torchkfp.onnx_export import export_checked

    split = "test" if features_artifact.has_split(features, "test") else "validation"
    rows, x = parity_rows(features, split)
    module = build_model(spec)
    module.load_state_dict(state)
    module.eval()
    result = export_checked(
        module, spec.task, x["x_num"], x["x_cat"], split=split, label_std=label_std
    )
    if "parity" in result.info:
        result.info["parity"]["split_rows"] = rows  # the split's rows, not just those read
    if result.model is None:
        print(f"[train] warning: no ONNX export: {result.info['reason']}", file=sys.stderr)
    else:
        parity = result.info["parity"]
        print(
            f"[train] ONNX export: opset {result.info['opset']}, max abs difference "
            f"{parity['max_abs_diff']:.2g} on {parity['rows']} {split} rows, "
            f"{result.info['seconds']:.1f} s",
            file=sys.stderr,
        )
        result.info["file"] = model_artifact.ONNX_FILE
    return result.model, result.info


def parity_rows(features: str | os.PathLike, split: str) -> tuple[int, dict[str, torch.Tensor]]:
    """The rows of ``split`` the ONNX parity check compares on, read (and checked) alone from
    the memory-mapped split: all of a small split, else :data:`~torchkfp.onnx_export.
    PARITY_MAX_ROWS` evenly spaced rows (every part of a temporal split; the rows
    ``export_checked`` would pick of the whole split). Returns (the split's rows, the tensors)."""
    from torchkfp.onnx_export import PARITY_MAX_ROWS

    arrays = features_artifact.open_split(features, split, check=False)
    n = arrays.rows
    if n > PARITY_MAX_ROWS:
        pick = torch.linspace(0, n - 1, PARITY_MAX_ROWS).round().long().numpy()
        arrays = data.rows_view(arrays, pick)
    arrays.check()
    return n, arrays.tensors(int64_codes=True)


@record  # a worker's exception reaches the launcher's error message (TORCHELASTIC_ERROR_FILE)
def main(argv: list[str] | None = None) -> None:
    a = _parse(argv)
    t0 = time.perf_counter()
    tc = TrainConfig.from_dict(json.loads(Path(a.train_settings).read_text()))
    use_cuda = a.backend == "nccl"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(tc.threads_per_process)
    dist.init_process_group(backend=a.backend, device_id=device if use_cuda else None)
    scalars: EpochScalars | None = None
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        tf = transform_artifact.read(a.transform)
        trainer, spec, feats_meta = build_trainer(
            tc, a.features, device, rank, world, a.checkpoint_dir, target_std=tf.target.std
        )
        if rank == 0 and a.tensorboard_dir:
            scalars = EpochScalars(a.tensorboard_dir)
            # the epochs before a checkpoint, unless the folder holds them already
            scalars.log_history([trainer.epoch_record(i) for i in range(len(trainer.history))])
            trainer.on_epoch = scalars.log
        trainer.train_loop()
        if scalars is not None:
            scalars.close()
        if rank == 0:
            state = final_state(trainer)
            tb = a.tensorboard_dir if scalars is not None and scalars.done else None
            onnx_model, onnx_info = onnx_export(tc, state, spec, a.features, tf.target.std)
            meta = _model_metadata(trainer, feats_meta, time.perf_counter() - t0, a.backend, tb)
            meta[model_artifact.ONNX_KEY] = onnx_info
            model_artifact.write(a.model, state, spec, tf, meta, onnx_model)
        dist.barrier()
    finally:
        if scalars is not None:
            scalars.close()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
