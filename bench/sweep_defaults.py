"""One-setting-at-a-time sweep around the built-in model's defaults, several seeds each.

    PYTHONPATH=src python bench/sweep_defaults.py --dataset DIR [--jobs N] [--seeds 0,1,2]
        [--variants default,lr2e-3,...] [--set train.epochs=3] [--out DIR]

DIR is the ingest stage's ``dataset`` artifact of a run (``.runs/<run>/<pipeline>/ingest/dataset``).
The dataset is preprocessed once; then every (variant, seed) trains through the real launcher
(``torchkfp.training.launch``: torchrun, the configured backend and process count; with CUDA
``auto`` means nccl) and is scored on the test split by the evaluate stage's own code
(``evaluate_candidate``), ``--jobs`` trainings at a time. Prints one JSON line per training and a
table of per-seed and mean test ROC AUC / log loss per variant, next to the default's. Variants
are chosen on the test split here only to report them; the README says which were measured.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

from torchkfp.config import Config, ConfigError
from torchkfp.evaluation import evaluate_candidate
from torchkfp.preprocess import preprocess
from torchkfp.training import launch

VARIANTS: dict[str, dict] = {
    "default": {},
    "lr2e-3": {"train.learning_rate": 0.002},
    "lr5e-3": {"train.learning_rate": 0.005},
    "wd1e-3": {"train.weight_decay": 0.001},
    "drop0.2": {"train.dropout": 0.2},
    "sigma0.03": {"train.periodic_sigma": 0.03},
    "sigma0.3": {"train.periodic_sigma": 0.3},
    "b2048": {"train.batch_size": 2048, "train.learning_rate": 0.004},
    "ep8": {"train.epochs": 8},
    "k16": {"train.ensemble_size": 16},
    "emb16": {"train.numeric_embedding_dim": 16},
    "h256": {"train.hidden_sizes": [256, 128]},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--jobs", type=int, default=1, help="trainings at a time")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=None, help="also write the JSON lines to OUT/sweep.jsonl")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="for every variant"
    )
    a = ap.parse_args()
    names = a.variants.split(",")
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}: choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    td = Path(tempfile.mkdtemp(prefix="sweep-"))
    bad = [x for x in a.set if "=" not in x]
    if bad:
        ap.error(f"--set {bad[0]!r} is not KEY=VALUE, e.g. --set train.epochs=3")
    sets = {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in a.set)}
    try:
        base = Config().override({"train.export_onnx": False, **sets})
    except ConfigError as e:
        ap.error(str(e))
    preprocess(base.data, base.preprocess, a.dataset, td / "transform", td / "features")
    out = Path(a.out) if a.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    rows: list[dict] = []

    def one(i: int, variant: str, seed: int) -> None:
        time.sleep(i % a.jobs)  # stagger the launchers' starts (free-port picking)
        cfg = base.override({**VARIANTS[variant], "train.seed": seed})
        model = td / f"{variant}-{seed}"
        t0 = time.perf_counter()
        r = launch(cfg.train, td / "features", td / "transform", model, tensorboard=False)
        ev = evaluate_candidate(cfg.evaluate, model, a.dataset)
        row = {
            "variant": variant,
            "seed": seed,
            "wall_s": round(time.perf_counter() - t0, 1),
            "best_epoch": r.best_epoch,
            "epochs_run": r.epochs_run,
            "test_roc_auc": ev.metrics["roc_auc"],
            "test_log_loss": ev.metrics["log_loss"],
        }
        with lock:
            rows.append(row)
            print(json.dumps(row), flush=True)
            if out:
                with open(out / "sweep.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")

    jobs = [(v, int(s)) for s in a.seeds.split(",") for v in names]
    with ThreadPoolExecutor(a.jobs) as ex:
        for f in [ex.submit(one, i, v, s) for i, (v, s) in enumerate(jobs)]:
            f.result()  # a failed training fails the sweep, with its error

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    print(f"\n{'variant':<12}{'ROC AUC per seed (mean)':>44}{'log loss per seed (mean)':>44}")
    for v in names:
        got = sorted((r for r in rows if r["variant"] == v), key=lambda r: r["seed"])
        auc = [r["test_roc_auc"] for r in got]
        ll = [r["test_log_loss"] for r in got]
        print(
            f"{v:<12}{' / '.join(f'{x:.4f}' for x in auc) + f' ({mean(auc):.4f})':>44}"
            f"{' / '.join(f'{x:.4f}' for x in ll) + f' ({mean(ll):.4f})':>44}"
        )


if __name__ == "__main__":
    main()
