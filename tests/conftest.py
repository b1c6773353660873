"""Shared fixtures: a seeded DuckDB warehouse, a small-slice config, and artifacts produced by
the real library stages (session-scoped, built once per test run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from torchkfp.config import Config

# January 2013: train 01-01..01-21, validation 01-22..01-26, test 01-27..01-31 (~27k flights)
SMALL = {
    "warehouse.query_parameters": {"start_date": "2013-01-01", "end_date": "2013-01-31"},
    "split.validation_start": "2013-01-22",
    "split.test_start": "2013-01-27",
    "train.epochs": 3,
    "train.batch_size": 512,
    "evaluate.min_metrics": {"roc_auc": 0.5},
    # no ONNX export (a few seconds a training, most of a small run's train step): the tests of
    # the export and of serving on ONNX Runtime use ``stage_outputs`` (exported) or their own
    # models; the full default DAG (test_full_data, test_init) still exports in its train step
    "train.export_onnx": False,
    # a 2-member ensemble without periodic embeddings: the ensemble's code path at a fraction of
    # the default network's cost (8 members, periodic); the default network is trained by
    # test_full_data and test_init, a 4-member periodic one by test_ensemble
    "train.ensemble_size": 2,
    "train.numeric_embedding": "none",
}


@pytest.fixture(scope="session")
def warehouse_path(tmp_path_factory) -> str:
    from torchkfp.warehouse import seed_duckdb

    path = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    seed_duckdb(path)
    return str(path)


def make_config(root: Path, warehouse_path: str, **overrides) -> Config:
    return Config().override(
        {
            **SMALL,
            "warehouse.duckdb_path": warehouse_path,
            "deploy.registry_dir": str(root / "registry"),
            "run.pipeline_root": str(root / "runs"),
            **overrides,
        }
    )


@pytest.fixture()
def small_config(tmp_path, warehouse_path) -> Config:
    """A fresh small config per test (own registry and pipeline root)."""
    return make_config(tmp_path, warehouse_path)


@pytest.fixture(scope="session")
def stage_outputs(tmp_path_factory, warehouse_path) -> dict:
    """dataset, transform, features and model artifacts from the real stages, on the small
    slice; shared by tests that only read them."""
    from torchkfp.ingest import ingest
    from torchkfp.preprocess import preprocess
    from torchkfp.training import launch

    root = tmp_path_factory.mktemp("stages")
    cfg = make_config(root, warehouse_path, **{"train.export_onnx": True})  # ONNX tests read it
    ingested = ingest(cfg.warehouse, cfg.data, cfg.split, root / "dataset")
    preprocess(cfg.data, cfg.preprocess, root / "dataset", root / "transform", root / "features")
    result = launch(cfg.train, root / "features", root / "transform", root / "model")
    return {
        "config": cfg,
        "root": root,
        "dataset": str(root / "dataset"),
        "fingerprint": ingested.fingerprint,
        "transform": str(root / "transform"),
        "features": str(root / "features"),
        "model": str(root / "model"),
        "train_result": result,
    }


@pytest.fixture(scope="session")
def dag_run(tmp_path_factory, warehouse_path) -> dict:
    """The whole DAG, run once per session the way a user runs it: ``torchkfp run -q`` (CLI,
    kfp.local) on the small slice with a fresh registry. Returns the config and the run
    summary; the DAG tests and the stage-by-stage CLI comparison share it."""
    import json
    import subprocess
    import sys

    import yaml

    root = tmp_path_factory.mktemp("dag")
    cfg = make_config(root, warehouse_path, **{"train.epochs": 2})
    cfg_file = root / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.to_dict()))
    exe = Path(sys.executable).with_name("torchkfp")
    p = subprocess.run(
        [str(exe), "run", "-q", "--config", str(cfg_file)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=900,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    summary_path = p.stdout.strip().splitlines()[-1]  # the CLI prints it last
    assert summary_path.endswith("run_summary.json")
    summary = json.loads(Path(summary_path).read_text())
    return {"config": cfg, "config_file": cfg_file, "summary": summary, "stdout": p.stdout}


def dataset_dir(summary: dict) -> str:
    """The ingest stage's Dataset artifact of a DAG run (from its run summary)."""
    import json

    out = json.loads((Path(summary["run_dir"]) / "ingest" / "executor_output.json").read_text())
    return out["artifacts"]["dataset"]["artifacts"][0]["uri"]


TESTS = Path(__file__).resolve().parent
TASK_FEATURES = {
    "data.numeric_features": ["dep_hour", "distance"],
    "data.categorical_features": ["carrier", "origin", "dest"],
    "warehouse.query_file": str(TESTS / "data" / "flights_tasks.sql"),
}
"""The features of the multi-class and regression runs (tests/data/flights_tasks.sql adds the
labels: a delay band and the arrival delay in minutes)."""
TASK_KINDS = {
    "multiclass": {
        "data.label": "delay_band",
        "data.task": "multiclass",
        "train.model_factory": "custom_models:build",  # the user's own nn.Module (tests/)
        "train.model_args": {"width": 8},
        "evaluate.min_metrics": None,
    },
    "regression": {
        "data.label": "arr_delay",
        "data.task": "regression",
        "evaluate.min_metrics": None,
    },
}


@pytest.fixture(scope="session")
def task_kind_run(tmp_path_factory, warehouse_path):
    """``task_kind_run(kind)``: the whole DAG (``run_local``, kfp.local) for ``multiclass`` or
    ``regression`` on the small slice, each with its own fresh registry, run once per session
    on first use: tests/test_task_kinds.py checks the runs, tests/test_report_tasks.py renders
    the reports of their models. Returns the config and the run summary."""
    runs: dict[str, dict] = {}

    def run(kind: str) -> dict:
        if kind not in runs:
            from torchkfp.pipelines.local import run_local

            root = tmp_path_factory.mktemp(kind)
            cfg = make_config(root, warehouse_path, **TASK_FEATURES, **TASK_KINDS[kind])
            with pytest.MonkeyPatch.context() as mp:  # the workers import custom_models
                mp.setenv(
                    "PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
                )
                summary, _ = run_local(cfg, quiet_kfp=True)
            runs[kind] = {"config": cfg, "summary": summary, "root": root}
        return runs[kind]

    return run


@pytest.fixture(scope="session")
def trained_model(stage_outputs) -> str:
    """Path of a complete model artifact (weights, transform, feature spec, metadata)."""
    return stage_outputs["model"]


@pytest.fixture(autouse=True)
def _no_cloud_credentials(monkeypatch):
    # never reach real Google Cloud from tests
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    os.environ.setdefault("NO_GCE_CHECK", "true")
