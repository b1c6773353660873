"""torchkfp.tuning and ``torchkfp tune``: the search space and its errors, then real searches
(the real trainer, Optuna, a tiny slice of the data) checked for the best trial, parallel
trials, the best-settings file and reproducing the best trial's validation metric."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from torchkfp.config import Config, ConfigError, EvaluateConfig, TrainConfig
from torchkfp.config.tune import DEFAULT_SPACE, TuneConfig

# ---- the search space (no training) --------------------------------------------------------


def test_default_space_and_overrides():
    t = TuneConfig.from_dict(
        {
            "space": {
                "dropout": None,
                "epochs": {"low": 1, "high": 4},
                "batch_size": {"choices": [64]},
            }
        }
    )
    space = t.search_space()
    assert "dropout" not in space and space["epochs"].high == 4
    assert space["batch_size"].choices == [64]
    assert set(space) == (set(DEFAULT_SPACE) - {"dropout"}) | {"epochs"}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"space": {"learning_rat": {"low": 1e-4, "high": 1e-2}}}, "['learning_rat'] not tunable"),
        ({"space": {"seed": {"choices": [1, 2]}}}, "['seed'] not tunable"),
        ({"space": {"batch_size": {"low": 1.5, "high": 8}}}, "tune.space.batch_size"),
        ({"space": {"dropout": {"low": 0.0, "high": 1.0}}}, "train.dropout must be in [0, 1)"),
        ({"space": {"learning_rate": {"low": 0, "high": 1, "log": True}}}, "needs low > 0"),
        ({"space": {"dropout": {"low": 0.1}}}, "needs both low and high"),
        ({"space": {"dropout": 0.2}}, "tune.space.dropout=0.2: write"),
        ({"space": {"hidden_sizes": {"choices": [[0]]}}}, "hidden_sizes must be positive"),
        ({"n_trials": 0}, "tune.n_trials must be >= 1"),
    ],
)
def test_bad_space_is_a_clear_error(raw, needle):
    with pytest.raises(ConfigError) as e:
        TuneConfig.from_dict(raw)
    assert needle in str(e.value)


def test_suggest_decodes_choices_and_caps_epochs():
    import optuna

    from torchkfp.tuning import suggest

    t = TuneConfig.from_dict({"space": {"epochs": {"low": 1, "high": 10}}})
    space = t.search_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = suggest(study.ask(), space, epochs_cap=3)
        assert 1 <= params["epochs"] <= 3
        assert params["hidden_sizes"] in DEFAULT_SPACE["hidden_sizes"]["choices"]
        assert 3e-4 <= params["learning_rate"] <= 1e-2
        TrainConfig.from_dict(params)  # every draw is a valid train config


def test_metric_defaults_to_the_gate_and_is_checked():
    from torchkfp.tuning import resolve_metric

    assert resolve_metric(TuneConfig(), EvaluateConfig(), "binary") == ("roc_auc", True)
    assert resolve_metric(TuneConfig(), EvaluateConfig(metric="log_loss"), "binary") == (
        "log_loss",
        False,
    )
    assert resolve_metric(TuneConfig(), EvaluateConfig(), "regression") == ("rmse", False)
    with pytest.raises(ConfigError, match=r"tune.metric='rmse' is not a metric of a binary"):
        resolve_metric(TuneConfig(metric="rmse"), EvaluateConfig(), "binary")


# ---- real searches ---------------------------------------------------------------------------
TINY = {
    "warehouse.query_parameters": {"start_date": "2013-01-01", "end_date": "2013-01-12"},
    "split.validation_start": "2013-01-09",
    "split.test_start": "2013-01-11",
}


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory, warehouse_path) -> dict:
    from conftest import make_config

    from torchkfp.ingest import ingest
    from torchkfp.preprocess import preprocess

    root = tmp_path_factory.mktemp("tune")
    cfg = make_config(root, warehouse_path, **TINY)
    ingest(cfg.warehouse, cfg.data, cfg.split, root / "dataset")
    preprocess(cfg.data, cfg.preprocess, root / "dataset", root / "transform", root / "features")
    return {
        "config": cfg,
        "root": root,
        "dataset": str(root / "dataset"),
        "features": str(root / "features"),
        "transform": str(root / "transform"),
    }


@pytest.fixture(scope="module")
def search(tiny_inputs) -> dict:
    from torchkfp.tuning import tune

    cfg = tiny_inputs["config"]
    tcfg = TuneConfig.from_dict({"n_trials": 3, "parallel_trials": 2, "epochs": 1})
    out = tiny_inputs["root"] / "study" / "study.json"
    r = tune(
        cfg.train,
        cfg.evaluate,
        tcfg,
        tiny_inputs["features"],
        tiny_inputs["transform"],
        tiny_inputs["dataset"],
        out,
    )
    return {"result": r, "summary": json.loads(out.read_text()), "out": out, **tiny_inputs}


@pytest.mark.integration
def test_search_records_trials_and_picks_the_best(search):
    r, summary = search["result"], search["summary"]
    assert r.metric == "roc_auc" and r.direction == "maximize"
    values = {t["number"]: t["value"] for t in summary["trials"]}
    assert len(values) == 3 and all(t["state"] == "COMPLETE" for t in summary["trials"])
    assert len({json.dumps(t["params"], sort_keys=True) for t in summary["trials"]}) == 3
    best = max(values, key=values.get)
    assert summary["best_trial"] == best and summary["best_value"] == values[best]
    assert summary["best_params"] == summary["trials"][best]["params"]
    assert summary["best_settings"]["epochs"] == 1
    assert all(t["seconds"] > 0 and t["ended"] > t["started"] for t in summary["trials"])
    # only the best trial's model is kept; the trial folders are gone
    left = sorted(p.name for p in search["out"].parent.iterdir())
    assert left == ["study.best-model", "study.best.yaml", "study.json"]
    assert (Path(r.best_model) / "_SUCCESS").is_file()


@pytest.mark.integration
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPU cores")
def test_parallel_trials_overlap(search):
    trials = search["summary"]["trials"]
    assert search["result"].parallel == 2
    t0, t1 = trials[0], trials[1]  # trials 0 and 1 start together
    assert max(t0["started"], t1["started"]) < min(t0["ended"], t1["ended"])


@pytest.mark.integration
def test_best_settings_load_and_reproduce_the_trial(search, tmp_path):
    from torchkfp.training import launch
    from torchkfp.tuning import TRIAL_SETTINGS, validation_rows, validation_score

    r = search["result"]
    loaded = Config.load(r.best_settings_path)
    best = r.best_settings
    assert {k: loaded.train.to_dict()[k] for k in best} == best
    # the tuned settings over the run's config, trained as the trial was: the same value
    cfg = search["config"].override({f"train.{k}": v for k, v in best.items()})
    tc = TrainConfig.from_dict({**cfg.train.to_dict(), **TRIAL_SETTINGS})
    launch(tc, search["features"], search["transform"], tmp_path / "model", tensorboard=False)
    value = validation_score(tmp_path / "model", validation_rows(search["dataset"]), "roc_auc")
    assert value == pytest.approx(r.best_value, abs=1e-6)
    # and the kept best model scores the same as recorded
    kept = validation_score(r.best_model, validation_rows(search["dataset"]), "roc_auc")
    assert kept == pytest.approx(r.best_value, abs=1e-9)


# ---- the command ---------------------------------------------------------------------------
def _app() -> typer.Typer:
    from torchkfp.cli.tune import register

    app = typer.Typer(add_completion=False)
    register(app)

    @app.callback()
    def _root() -> None:  # a group, so the command is called by its name
        pass

    return app


def _config_file(cfg: Config, path: Path) -> str:
    import yaml

    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


@pytest.mark.integration
def test_cli_tunes_and_applies(tiny_inputs, tmp_path):
    cfg_file = _config_file(tiny_inputs["config"], tmp_path / "config.yaml")
    out = tmp_path / "s" / "study.json"
    res = CliRunner().invoke(
        _app(),
        [
            "tune",
            "-c",
            cfg_file,
            "--trials",
            "1",
            "--epochs",
            "1",
            "--features",
            tiny_inputs["features"],
            "--transform",
            tiny_inputs["transform"],
            "--dataset",
            tiny_inputs["dataset"],
            "--out",
            str(out),
            "--apply",
            str(tmp_path / "tuned.yaml"),
        ],
    )
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["trials"] == 1 and line["completed"] == 1 and line["study"] == str(out)
    assert line["set"][0] == "train.epochs=1"
    tuned = Config.load(line["applied_config"])
    assert tuned.train.learning_rate == line["best_params"]["learning_rate"]
    assert tuned.warehouse == tiny_inputs["config"].warehouse  # the rest of the config kept
    assert Path(line["best_settings"]).is_file()


def test_cli_usage_errors(tmp_path):
    res = CliRunner().invoke(_app(), ["tune", "--features", str(tmp_path)])
    assert res.exit_code == 2
    assert "--features, --transform and --dataset go together" in res.output
    res = CliRunner().invoke(
        _app(), ["tune", "--run", str(tmp_path / "nope"), "--set", f"run.pipeline_root={tmp_path}"]
    )
    assert res.exit_code == 2 and "is neither a folder nor a run id" in res.output


# ---- Vertex AI ------------------------------------------------------------------------------
PROJECT = "tkfp-test-project"
VERTEX_IMAGE = f"us-central1-docker.pkg.dev/{PROJECT}/torchkfp/torchkfp-train:0.1.0"
GS_INPUTS = {k: f"gs://tkfp-bucket/run/{k}" for k in ("features", "transform", "dataset")}


@pytest.fixture()
def fake():
    """The fake Vertex AI server, the real SDK pointed at it (REST transport)."""
    from fake_vertex import FakeVertex
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    with FakeVertex() as server:
        initializer.global_config.__init__()
        aiplatform.init(
            api_endpoint=server.endpoint,
            api_transport="rest",
            credentials=AnonymousCredentials(),
        )
        yield server
        initializer.global_config.__init__()


def _vertex_config(tmp_path: Path, **extra) -> str:
    cfg = Config.load("configs/vertex.example.yaml", resolve_paths=False).override(
        {
            "vertex.project": PROJECT,
            "vertex.pipeline_root": "gs://tkfp-bucket/root",
            "vertex.service_account": f"sa@{PROJECT}.iam.gserviceaccount.com",
            "vertex.training_image": VERTEX_IMAGE,
            **extra,
        }
    )
    return _config_file(cfg, tmp_path / "vertex.yaml")


def _vertex_args(cfg_file: str, *more: str) -> list[str]:
    args = ["tune", "--vertex", "-c", cfg_file, "--trials", "4", "--parallel", "2"]
    for k, v in GS_INPUTS.items():
        args += [f"--{k}", v]
    return args + list(more)


def test_vertex_tuning_job_is_created_through_the_sdk(fake, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    res = CliRunner().invoke(_app(), _vertex_args(_vertex_config(tmp_path), "--epochs", "3"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["name"].startswith(f"projects/{PROJECT}/locations/us-central1/")
    assert out["state"] == "JOB_STATE_PENDING"
    (req,) = fake.find("POST", r"/hyperparameterTuningJobs$")
    body = req.body
    assert body["maxTrialCount"] == 4 and body["parallelTrialCount"] == 2
    from google.cloud.aiplatform_v1.types import StudySpec

    # the REST transport sends enums as their numbers
    maximize = StudySpec.MetricSpec.GoalType.MAXIMIZE
    log_scale = StudySpec.ParameterSpec.ScaleType.UNIT_LOG_SCALE
    assert body["studySpec"]["metrics"] == [{"metricId": "roc_auc", "goal": int(maximize)}]
    params = {p["parameterId"]: p for p in body["studySpec"]["parameters"]}
    assert set(params) == set(DEFAULT_SPACE)
    assert params["learning_rate"]["scaleType"] == int(log_scale)
    assert params["learning_rate"]["doubleValueSpec"] == {"minValue": 3e-4, "maxValue": 1e-2}
    assert params["batch_size"]["discreteValueSpec"]["values"] == [512, 1024, 2048]
    assert "[256, 128]" in params["hidden_sizes"]["categoricalValueSpec"]["values"]
    trial = body["trialJobSpec"]
    assert trial["serviceAccount"] == f"sa@{PROJECT}.iam.gserviceaccount.com"
    (pool,) = trial["workerPoolSpecs"]
    container = pool["containerSpec"]
    assert container["imageUri"] == VERTEX_IMAGE
    assert container["command"] == ["python", "-m", "torchkfp.vertex.tune_trial"]
    assert "--features=/gcs/tkfp-bucket/run/features" in container["args"]
    settings = json.loads(
        next(a for a in container["args"] if a.startswith("--train-settings=")).partition("=")[2]
    )
    assert settings["epochs"] == 3 and TrainConfig.from_dict(settings).epochs == 3
    assert trial["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://tkfp-bucket/root/")


def test_vertex_dry_run_sends_nothing(fake, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    res = CliRunner().invoke(_app(), _vertex_args(_vertex_config(tmp_path), "--dry-run"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["dry_run"] is True and "name" not in out
    assert out["request"]["maxTrialCount"] == 4
    assert fake.requests == []


def test_vertex_needs_gs_inputs_and_an_image(fake, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    args = _vertex_args(_vertex_config(tmp_path))
    args[args.index("--features") + 1] = "/local/features"
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 2 and "a Vertex tuning job reads gs:// folders" in res.output
    res = CliRunner().invoke(
        _app(), _vertex_args(_vertex_config(tmp_path, **{"vertex.training_image": None}))
    )
    assert res.exit_code == 2 and "training_image" in res.output
    assert fake.requests == []


def test_hypertune_metric_file_format(tmp_path, monkeypatch):
    from torchkfp.tuning import parse_trial_value, report_hypertune_metric

    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(tmp_path / "hp" / "output.metrics"))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    path = report_hypertune_metric("roc_auc", 0.71, 3)
    (line,) = Path(path).read_text().splitlines()
    entry = json.loads(line)
    assert entry["roc_auc"] == "0.71" and entry["trial"] == "7" and entry["global_step"] == "3"
    assert isinstance(entry["timestamp"], float)
    assert parse_trial_value("batch_size", "1024.0") == 1024
    assert parse_trial_value("hidden_sizes", "[256, 128]") == [256, 128]
    assert parse_trial_value("learning_rate", "0.003") == 0.003
    with pytest.raises(ConfigError, match="not a tunable train setting"):
        parse_trial_value("seed", "3")


@pytest.mark.integration
def test_vertex_trial_entry_trains_scores_and_reports(tiny_inputs, tmp_path):
    import subprocess
    import sys

    from torchkfp.tuning import validation_rows, validation_score

    cfg = tiny_inputs["config"]
    base = {**cfg.train.to_dict(), "epochs": 1, "nproc_per_node": 1}
    env = {
        **os.environ,
        "CLOUD_ML_HP_METRIC_FILE": str(tmp_path / "output.metrics"),
        "AIP_MODEL_DIR": str(tmp_path / "model"),
    }
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchkfp.vertex.tune_trial",
            f"--features={tiny_inputs['features']}",
            f"--transform={tiny_inputs['transform']}",
            f"--dataset={tiny_inputs['dataset']}",
            "--metric=roc_auc",
            f"--train-settings={json.dumps(base)}",
            "--learning_rate=0.002",
            "--hidden_sizes=[64, 32]",
            "--batch_size=256.0",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["params"] == {"learning_rate": 0.002, "hidden_sizes": [64, 32], "batch_size": 256}
    reported = json.loads((tmp_path / "output.metrics").read_text().splitlines()[-1])
    assert float(reported["roc_auc"]) == out["value"]
    from torchkfp.predictor import Predictor

    meta = Predictor(tmp_path / "model").metadata["training"]["config"]
    assert meta["hidden_sizes"] == [64, 32] and meta["batch_size"] == 256
    score = validation_score(tmp_path / "model", validation_rows(tiny_inputs["dataset"]), "roc_auc")
    assert score == pytest.approx(out["value"], abs=1e-12)
