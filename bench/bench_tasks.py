"""Each task kind end to end, next to a plain baseline on the same split and features.

Runs the local DAG (kfp.local) three times on the flights tables, from January to June 2013
with a temporal split (train January-April, validate May, test June):

- binary: is_late (the default task), baseline: majority class and logistic regression;
- multiclass: delay band (early / on_time / late / very_late), baseline: majority class and
  multinomial logistic regression;
- regression: arrival delay in minutes, baseline: the training mean and linear regression (ridge).

The baselines see exactly the DAG's features: the features artifact of the same run (numeric
inputs standardized, categories one-hot), fitted on its training split, scored on its test split.

    python bench/bench_tasks.py [--months 6]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from torchkfp.pipelines.local import run_local

from torchkfp import metrics
from torchkfp.artifacts.features import read_split
from torchkfp.config import Config

REPO = Path(__file__).resolve().parents[1]
TASKS_SQL = REPO / "tests" / "data" / "flights_tasks.sql"


def features_dir(summary: dict) -> str:
    out = json.loads((Path(summary["run_dir"]) / "preprocess" / "executor_output.json").read_text())
    return out["artifacts"]["features"]["artifacts"][0]["uri"]


def design(enc, f):
    from scipy import sparse

    return sparse.hstack(
        [sparse.csr_matrix(f["x_num"].numpy()), enc.transform(f["x_cat"].numpy())]
    ).tocsr()


def baselines(task: str, fdir: str, target_std: float, target_mean: float) -> dict[str, dict]:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import OneHotEncoder

    tr, te = read_split(fdir, "train"), read_split(fdir, "test")
    enc = OneHotEncoder(handle_unknown="ignore").fit(tr["x_cat"].numpy())
    xtr, xte = design(enc, tr), design(enc, te)
    ytr, yte = tr["y"].numpy(), te["y"].numpy()
    if task == "regression":
        y_true = yte * target_std + target_mean
        mean = np.full_like(y_true, ytr.mean() * target_std + target_mean)
        ridge = Ridge(alpha=1.0).fit(xtr, ytr).predict(xte) * target_std + target_mean
        return {
            "training mean": metrics.regression_report(y_true, mean),
            "linear regression": metrics.regression_report(y_true, ridge),
        }
    lr = LogisticRegression(max_iter=1000).fit(xtr, ytr)
    if task == "binary":
        prior = np.full(len(yte), ytr.mean())
        return {
            "majority class": metrics.classification_report(yte, prior, 0.5),
            "logistic regression": metrics.classification_report(
                yte, lr.predict_proba(xte)[:, 1], 0.5
            ),
        }
    k = int(max(ytr.max(), yte.max())) + 1
    prior = np.bincount(ytr.astype(int), minlength=k) / len(ytr)
    return {
        "majority class": metrics.multiclass_report(yte, np.tile(prior, (len(yte), 1))),
        "logistic regression": metrics.multiclass_report(yte, lr.predict_proba(xte)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=8)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-tasks-"))
    base = Config.load(REPO / "configs" / "local.yaml").override(
        {
            "warehouse.query_parameters": {"start_date": "2013-01-01", "end_date": "2013-06-30"},
            "split.validation_start": "2013-05-01",
            "split.test_start": "2013-06-01",
            "train.epochs": a.epochs,
            "deploy.registry_dir": str(root / "registry"),
            "run.pipeline_root": str(root / "runs"),
        }
    )
    small = {
        "warehouse.query_file": str(TASKS_SQL),
        "data.numeric_features": ["dep_hour", "distance"],
        "data.categorical_features": ["carrier", "origin", "dest"],
        "evaluate.metric": None,
        "evaluate.min_metrics": None,
        "evaluate.max_metrics": None,
    }
    runs = {
        "binary": {},
        "multiclass": {**small, "data.label": "delay_band", "data.task": "multiclass"},
        "regression": {**small, "data.label": "arr_delay", "data.task": "regression"},
    }
    shown = {
        "binary": ("roc_auc", "log_loss", "accuracy"),
        "multiclass": ("accuracy", "log_loss", "macro_f1"),
        "regression": ("rmse", "mae", "r2"),
    }
    for task, over in runs.items():
        cfg = base.override({**over, "deploy.model_name": f"bench-{task}"})
        summary, _ = run_local(cfg, quiet_kfp=True, reuse=False)  # time real training
        fdir = features_dir(summary)
        tmeta = json.loads((Path(summary["model"]["path"]) / "transform.json").read_text())[
            "target"
        ]
        rows = {"torchkfp MLP (the DAG)": summary["metrics"]}
        rows.update(baselines(task, fdir, tmeta["std"], tmeta["mean"]))
        names = shown[task]
        print(f"\n== {task}: label {cfg.data.label!r}, test rows {summary['metrics']['examples']}")
        print(f"{'model':<26}" + "".join(f"{n:>11}" for n in names))
        for model, m in rows.items():
            print(f"{model:<26}" + "".join(f"{m[n]:11.4f}" for n in names))


if __name__ == "__main__":
    main()
