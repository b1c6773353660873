"""Benchmark the local DAG and the trainer, side by side in one process.

    python bench/bench_pipeline.py [--config configs/local.yaml] [--set k=v ...] [--seeds 0,1,2]

Prints:
1. orchestration overhead: local DAG wall time vs the sum of in-stage time (each component
   body's own wall time, as recorded in the run summary);
2. trainer throughput: the DDP trainer's samples/s (from the model metadata) vs a bare
   single-process torch loop (same model, optimizer, batch size and pre-batched tensors),
   with 1 thread and with all cores;
3. model quality: test ROC AUC / accuracy / log loss of the DAG's model next to the
   majority-class baseline, a logistic regression and scikit-learn's HistGradientBoosting
   (iterations picked on the DAG's validation split) on the same split and features. With
   ``--seeds``, the DAG runs once per ``train.seed`` (each in a fresh pipeline root, so nothing
   is cached) and the MLP's line is given per seed and as the mean.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchkfp.pipelines.local import run_local

from torchkfp import metrics
from torchkfp.artifacts.features import read_split as load_features
from torchkfp.cli.options import load_config
from torchkfp.model import ModelSpec, TabularMLP


def bare_loop(feats: dict, spec: ModelSpec, tc, threads: int, epochs: int) -> float:
    """Samples/s of a plain single-process loop over the same pre-built tensors."""
    torch.set_num_threads(threads)
    torch.manual_seed(tc.seed)
    model = TabularMLP(spec)
    members = model.ensemble_size
    opt = torch.optim.AdamW(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    n = feats["y"].shape[0]
    t0 = time.perf_counter()
    seen = 0
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for s in range(0, n, tc.batch_size):
            idx = perm[s : s + tc.batch_size]
            out, y = model(feats["x_num"][idx], feats["x_cat"][idx]), feats["y"][idx]
            if members > 1:  # one output per member, each trained on its own loss
                y = y.unsqueeze(1).expand_as(out)
            loss = F.binary_cross_entropy_with_logits(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
            seen += idx.shape[0]
    return seen / (time.perf_counter() - t0)


def logistic_baseline(features_dir: str) -> dict[str, float]:
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    tr, te = load_features(features_dir, "train"), load_features(features_dir, "test")
    enc = OneHotEncoder(handle_unknown="ignore").fit(tr["x_cat"].numpy())

    def design(f):
        return sparse.hstack(
            [sparse.csr_matrix(f["x_num"].numpy()), enc.transform(f["x_cat"].numpy())]
        ).tocsr()

    lr = LogisticRegression(max_iter=500, C=1.0).fit(design(tr), tr["y"].numpy())
    p = lr.predict_proba(design(te))[:, 1]
    return metrics.classification_report(te["y"].numpy(), p, 0.5)


def boosting_baseline(features_dir: str, max_iter: int = 600) -> dict[str, float]:
    """HistGradientBoosting on the DAG's features: categorical codes as categories (those with
    at most 255 values; wider ones as numbers), the number of iterations picked by the best
    validation log loss (staged predictions), then scored on test at that iteration."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    tr, va, te = (load_features(features_dir, s) for s in ("train", "validation", "test"))
    card = json.loads((Path(features_dir) / "metadata.json").read_text())["cardinalities"]

    def design(f):
        return np.hstack([f["x_num"].numpy(), f["x_cat"].numpy().astype(np.float64)])

    n_num = tr["x_num"].shape[1]
    cats = [n_num + i for i, c in enumerate(card) if c <= 255]
    hgb = HistGradientBoostingClassifier(
        max_iter=max_iter,
        learning_rate=0.1,
        early_stopping=False,
        categorical_features=cats or None,
        random_state=0,
    ).fit(design(tr), tr["y"].numpy())
    yv = va["y"].numpy()
    losses = [metrics.log_loss(yv, p[:, 1]) for p in hgb.staged_predict_proba(design(va))]
    best = int(np.argmin(losses))
    p = next(x for i, x in enumerate(hgb.staged_predict_proba(design(te))) if i == best)[:, 1]
    out = metrics.classification_report(te["y"].numpy(), p, 0.5)
    out["iterations"] = best + 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--bare-epochs", type=int, default=2)
    ap.add_argument(
        "--seeds", default=None, help="comma-separated train.seed values: one DAG run each"
    )
    a = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="torchkfp-bench-") as td:
        cfg = load_config(a.config, a.sets)
        seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else [cfg.train.seed]
        per_seed = []
        for seed in seeds:
            # a fresh registry and pipeline root: no champion and no cache, so every run is
            # comparable
            run_cfg = cfg.override(
                {
                    "deploy.registry_dir": f"{td}/registry-{seed}",
                    "run.pipeline_root": f"{td}/runs-{seed}",
                    "train.seed": seed,
                }
            )
            summary, path = run_local(run_cfg, quiet_kfp=True)
            per_seed.append((seed, summary))
        run_dir = Path(summary["run_dir"])
        features_dir = str(run_dir / "preprocess" / "features")
        stage = summary["stage_seconds"]
        in_stage = sum(v for v in stage.values() if v)
        wall = summary["wall_seconds"]

        feats = load_features(features_dir, "train")
        fmeta = json.loads((Path(features_dir) / "metadata.json").read_text())
        spec = ModelSpec(
            num_numeric=int(feats["x_num"].shape[1]),
            cardinalities=fmeta["cardinalities"],
            hidden_sizes=cfg.train.hidden_sizes,
            dropout=cfg.train.dropout,
            max_embedding_dim=cfg.train.max_embedding_dim,
            numeric_embedding=cfg.train.numeric_embedding,
            numeric_embedding_dim=cfg.train.numeric_embedding_dim,
            periodic_frequencies=cfg.train.periodic_frequencies,
            periodic_sigma=cfg.train.periodic_sigma,
            ensemble_size=cfg.train.ensemble_size,
        )
        ddp_sps = summary["samples_per_s"]
        cores = os.cpu_count() or 1
        bare1 = bare_loop(feats, spec, cfg.train, 1, a.bare_epochs)
        bare_all = bare_loop(feats, spec, cfg.train, cores, a.bare_epochs)
        lr = logistic_baseline(features_dir)
        hgb = boosting_baseline(features_dir)

    m = summary["metrics"]
    pos = m["positive_rate"]
    print(f"\n== local DAG ({summary['rows']})")
    print(f"{'stage':<12}{'seconds':>9}")
    for k, v in stage.items():
        print(f"{k:<12}{v:9.2f}")
    print(f"{'sum':<12}{in_stage:9.2f}")
    print(f"{'DAG wall':<12}{wall:9.2f}")
    print(
        f"orchestration overhead: wall / in-stage = {wall / in_stage:.3f}  "
        f"(+{wall - in_stage:.2f}s)"
    )
    print(
        f"\n== trainer throughput (batch {cfg.train.batch_size}, train rows {feats['y'].shape[0]})"
    )
    print(
        f"DDP trainer, world size {summary['world_size']} x {cfg.train.threads_per_process} thread: {ddp_sps:12,.0f} samples/s"
    )
    print(
        f"bare loop, 1 process x 1 thread:            {bare1:12,.0f} samples/s  -> DDP / bare = {ddp_sps / bare1:.2f}"
    )
    print(
        f"bare loop, 1 process x {cores} threads:           {bare_all:12,.0f} samples/s  -> DDP / bare = {ddp_sps / bare_all:.2f}"
    )
    print("\n== test quality (same temporal split)")
    print(f"{'model':<26}{'roc_auc':>9}{'accuracy':>10}{'log_loss':>10}")
    maj_ll = -(pos * np.log(pos) + (1 - pos) * np.log(1 - pos))
    print(f"{'majority class':<26}{0.5:9.4f}{max(pos, 1 - pos):10.4f}{maj_ll:10.4f}")
    print(
        f"{'logistic regression':<26}{lr['roc_auc']:9.4f}{lr['accuracy']:10.4f}{lr['log_loss']:10.4f}"
    )
    print(
        f"{'HistGradientBoosting':<26}{hgb['roc_auc']:9.4f}{hgb['accuracy']:10.4f}"
        f"{hgb['log_loss']:10.4f}  ({hgb['iterations']} iterations, picked on validation)"
    )
    keys = ("roc_auc", "accuracy", "log_loss")
    for seed, sm in per_seed:
        r = sm["metrics"]
        name = f"torchkfp MLP (DAG, seed {seed})"
        print(f"{name:<26}{r['roc_auc']:9.4f}{r['accuracy']:10.4f}{r['log_loss']:10.4f}")
    if len(per_seed) > 1:
        mean = {k: float(np.mean([sm["metrics"][k] for _, sm in per_seed])) for k in keys}
        print(
            f"{'torchkfp MLP, mean':<26}{mean['roc_auc']:9.4f}{mean['accuracy']:10.4f}"
            f"{mean['log_loss']:10.4f}  (over {len(per_seed)} seeds)"
        )
    print(f"\nrun summary: {path} (deleted with the temp folder)", file=sys.stderr)


if __name__ == "__main__":
    main()
