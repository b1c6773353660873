"""GPU check of the trainer (run on a CUDA machine; not part of CI).

    PYTHONPATH=src python bench/gpu_check.py --dataset DIR [--out DIR]

Preprocesses a dataset artifact, then trains with the real launcher (torchrun) on: gloo/CPU with 2
processes as the baseline, and nccl/CUDA (one process per GPU) at two batch sizes, for the default
network (TabM-mini ensemble of 8, periodic embeddings) and the plain MLP (``ensemble_size: 1``,
``numeric_embedding: none``), all in one run. Prints samples/s, ratios and test ROC AUC for each.
Without CUDA the nccl runs are skipped (a smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from torchkfp.config import Config
from torchkfp.evaluation import evaluate_candidate
from torchkfp.preprocess import preprocess
from torchkfp.training import launch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--epochs", type=int, default=6)
    a = ap.parse_args()
    print(
        f"torch {torch.__version__}, cuda {torch.cuda.is_available()}, "
        f"gpus {torch.cuda.device_count()}",
        flush=True,
    )
    if torch.cuda.is_available():
        print(torch.cuda.get_device_name(0), flush=True)
    td = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    base = Config().override({"train.epochs": a.epochs, "train.patience": a.epochs})
    t0 = time.perf_counter()
    preprocess(base.data, base.preprocess, a.dataset, td / "transform", td / "features")
    print(f"preprocess {time.perf_counter() - t0:.2f}s", flush=True)
    plain = {"train.ensemble_size": 1, "train.numeric_embedding": "none"}
    nccl = {"train.backend": "nccl", "train.nproc_per_node": 1}
    big = {"train.batch_size": 8192, "train.learning_rate": 0.006}
    runs = [
        ("gloo cpu x2, batch 1024", {"train.backend": "gloo", "train.nproc_per_node": 2}),
        ("nccl cuda, batch 1024", nccl),
        ("nccl cuda, batch 8192", {**nccl, **big}),
        ("nccl plain MLP, b1024", {**nccl, **plain}),
        ("nccl plain MLP, b8192", {**nccl, **plain, **big}),
    ]
    results = []
    for name, over in runs:
        if over.get("train.backend") == "nccl" and not torch.cuda.is_available():
            print(f"skipped {name}: no CUDA", flush=True)
            continue
        cfg = base.override(over)
        model = td / name.replace(" ", "_").replace(",", "")
        r = launch(cfg.train, td / "features", td / "transform", model)
        ev = evaluate_candidate(cfg.evaluate, model, a.dataset)
        tr = r.metadata["training"]
        results.append(
            {
                "run": name,
                "device": tr["device"],
                "backend": tr["backend"],
                "world_size": r.world_size,
                "samples_per_s": r.samples_per_s,
                "train_seconds": tr["train_seconds"],
                "wall_seconds": r.seconds,
                "epochs": r.epochs_run,
                "test_roc_auc": ev.metrics["roc_auc"],
                "test_log_loss": ev.metrics["log_loss"],
            }
        )
        print(json.dumps(results[-1]), flush=True)
    base_sps = results[0]["samples_per_s"]
    print(
        f"\n{'run':<26}{'device':>7}{'samples/s':>14}{'vs gloo x2':>12}{'test AUC':>10}{'log loss':>10}"
    )
    for r in results:
        print(
            f"{r['run']:<26}{r['device']:>7}{r['samples_per_s']:14,.0f}"
            f"{r['samples_per_s'] / base_sps:12.2f}{r['test_roc_auc']:10.4f}"
            f"{r['test_log_loss']:10.4f}"
        )
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "gpu_check.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
