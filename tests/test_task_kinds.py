"""Multi-class and regression end to end under kfp.local, on real flights data (a delay band
and the arrival delay in minutes), one with the user's own nn.Module (the runs: conftest's
``task_kind_run``, shared with tests/test_report_tasks.py); the binary default is
tests/test_pipeline_local.py."""

import contextlib
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import dataset_dir, make_config
from torchkfp.pipelines.local import run_local

from torchkfp.artifacts import dataset as dataset_artifact
from torchkfp.predictor import Predictor
from torchkfp.serving.app import predictions

pytestmark = pytest.mark.integration
TESTS = Path(__file__).resolve().parent


@contextlib.contextmanager
def served(model_dir: str, log: Path):
    """``torchkfp serve --model DIR`` on a free port (a real HTTP server), as an httpx client."""
    from test_serving import Server, clean_env, free_port

    port = free_port()
    env = clean_env(PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    server = Server(["--model", model_dir, "--port", str(port)], log, port, env).wait_ready()
    try:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            yield client
    finally:
        server.stop()


def test_multiclass_with_a_custom_module(tmp_path, task_kind_run):
    summary = task_kind_run("multiclass")["summary"]  # conftest.TASK_KINDS: custom_models:build
    assert summary["status"] == "succeeded", summary["error"]
    m = summary["metrics"]
    assert set(m) >= {"accuracy", "log_loss", "macro_f1"} and "roc_auc" not in m
    assert m["log_loss"] < np.log(4)  # better than guessing uniformly among the 4 bands
    assert summary["gate"]["promote"] is True
    p = Predictor(summary["model"]["path"])
    assert p.metadata["model_factory"] == "custom_models:build"
    assert p.metadata["model_args"] == {"width": 8}
    assert p.classes == ["early", "late", "on_time", "very_late"]
    test = dataset_artifact.read_split(dataset_dir(summary), "test").to_pandas().head(20)
    out = predictions(p, p.predict(test), 0.5)
    assert {o["label"] for o in out} <= set(p.classes)
    assert all(abs(sum(o["probabilities"].values()) - 1) < 1e-6 for o in out)
    # over HTTP: /metadata shows the task, classes and response shape; /predict answers them
    with served(summary["model"]["path"], tmp_path / "serve.log") as http:
        meta = http.get("/metadata").json()
        resp = http.post("/predict", json={"instances": [meta["example_instance"]]})
    assert meta["task"] == "multiclass" and meta["classes"] == p.classes
    assert set(meta["request"]["response"]["predictions"][0]["probabilities"]) == set(p.classes)
    [pred] = resp.json()["predictions"]
    assert resp.status_code == 200 and pred["label"] in p.classes
    assert pred == predictions(p, p.predict([meta["example_instance"]]), 0.5)[0]


def test_regression_end_to_end(tmp_path, task_kind_run):
    summary = task_kind_run("regression")["summary"]
    assert summary["status"] == "succeeded", summary["error"]
    m = summary["metrics"]
    assert set(m) >= {"rmse", "mae", "r2"} and m["rmse"] > 0
    assert summary["gate"]["reasons"][0] == "promote"
    p = Predictor(summary["model"]["path"])
    test = dataset_artifact.read_split(dataset_dir(summary), "test").to_pandas().head(20)
    values = p.predict(test)
    assert values.shape == (20,) and np.isfinite(values).all()
    assert predictions(p, values, 0.5)[0] == {"value": values[0]}
    with served(summary["model"]["path"], tmp_path / "serve.log") as http:
        meta = http.get("/metadata").json()
        resp = http.post("/predict", json={"instances": [meta["example_instance"]] * 2})
    assert meta["task"] == "regression" and meta["request"]["response"]["predictions"] == [
        {"value": "float"}
    ]
    assert resp.status_code == 200
    expected = p.predict([meta["example_instance"]])[0]
    assert [x["value"] for x in resp.json()["predictions"]] == pytest.approx([expected] * 2)


def test_a_small_table_of_your_own_trains_as_well_as_logistic_regression(tmp_path):
    """569 rows from a CSV file (scikit-learn's breast cancer data), a hash split, the default
    batch size 1024: the batch is capped so each epoch still takes train.min_steps_per_epoch
    steps, and the MLP reaches logistic regression's test ROC AUC on the same split."""
    sk = pytest.importorskip("sklearn.datasets")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    data = sk.load_breast_cancer(as_frame=True)
    df = data.frame.rename(columns=lambda c: c.replace(" ", "_"))
    df.insert(0, "id", range(len(df)))
    csv = tmp_path / "cancer.csv"
    df.to_csv(csv, index=False)
    features = [c for c in df.columns if c not in ("id", "target")]
    cfg = make_config(
        tmp_path,
        "",
        **{
            "warehouse.duckdb_path": None,
            "warehouse.tables": {"cancer": str(csv)},
            "warehouse.query_file": None,
            "warehouse.table": "cancer",
            "split.strategy": "hash",
            "split.column": "id",
            "data.label": "target",
            "data.numeric_features": features,
            "data.categorical_features": [],
            "train.epochs": 30,
            "train.patience": 5,
        },
    )
    summary, _ = run_local(cfg, quiet_kfp=True)
    assert summary["status"] == "succeeded", summary["error"]
    model = Predictor(summary["model"]["path"])
    training = model.metadata["training"]
    assert training["batch_size"] < cfg.train.batch_size  # capped from the row count
    train_rows = summary["rows"]["train"]
    assert training["batch_size"] == train_rows // 2 // cfg.train.min_steps_per_epoch
    ds = dataset_dir(summary)
    train = dataset_artifact.read_split(ds, "train").to_pandas()
    test = dataset_artifact.read_split(ds, "test").to_pandas()
    lr = LogisticRegression(max_iter=5000).fit(
        (train[features] - train[features].mean()) / train[features].std(), train["target"]
    )
    x_test = (test[features] - train[features].mean()) / train[features].std()
    lr_auc = roc_auc_score(test["target"], lr.predict_proba(x_test)[:, 1])
    mlp_auc = summary["metrics"]["roc_auc"]
    print(f"\n569 rows: MLP test ROC AUC {mlp_auc:.4f}, logistic regression {lr_auc:.4f}")
    assert mlp_auc >= lr_auc - 0.02
