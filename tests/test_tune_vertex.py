"""``torchkfp tune --vertex-result JOB``: a Vertex AI hyperparameter tuning job read back through
the real aiplatform SDK (REST transport) from tests/fake_vertex.py: the best SUCCEEDED trial per
the study's goal, its values decoded back into ``train`` settings (the inverse of
``parameter_specs``), the applied config, ``--wait`` and the errors. ``torchkfp tune --vertex
--wait``: submit, then follow the job just created the same way, in one command."""

from __future__ import annotations

import json
import math
import re
import shlex
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from torchkfp.config import Config, TrainConfig
from torchkfp.config.tune import DEFAULT_SPACE, TuneConfig

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "tkfp-test-project"
LOCATION = "us-central1"
VERTEX_IMAGE = f"us-central1-docker.pkg.dev/{PROJECT}/torchkfp/torchkfp-train:0.1.0"
GS_INPUTS = {k: f"gs://tkfp-bucket/run/{k}" for k in ("features", "transform", "dataset")}


def _app() -> typer.Typer:
    from torchkfp.cli.tune import register

    app = typer.Typer(add_completion=False)
    register(app)

    @app.callback()
    def _root() -> None:  # a group, so the command is called by its name
        pass

    return app


def _vertex_config(tmp_path: Path, **extra) -> str:
    import yaml

    cfg = Config.load(ROOT / "configs/vertex.example.yaml", resolve_paths=False).override(
        {
            "vertex.project": PROJECT,
            "vertex.region": LOCATION,
            "vertex.pipeline_root": "gs://tkfp-bucket/root",
            "vertex.training_image": VERTEX_IMAGE,
            **extra,
        }
    )
    path = tmp_path / "vertex.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def _last_json(res) -> dict:
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---- decoding (no server) --------------------------------------------------------------------


def _api_values(spec) -> list:
    """The values Vertex AI can draw for one ``StudySpec.ParameterSpec``, as its REST JSON
    carries them (numbers as floats, categorical values as strings)."""
    which = spec._pb.WhichOneof("parameter_value_spec")
    if which == "discrete_value_spec":
        return [float(v) for v in spec.discrete_value_spec.values]
    if which == "categorical_value_spec":
        return list(spec.categorical_value_spec.values)
    if which == "integer_value_spec":
        lo, hi = spec.integer_value_spec.min_value, spec.integer_value_spec.max_value
        return [float(lo), float((lo + hi) // 2), float(hi)]
    lo, hi = spec.double_value_spec.min_value, spec.double_value_spec.max_value
    return [lo, math.sqrt(lo * hi) if lo > 0 else (lo + hi) / 2, hi]


def test_decode_inverts_parameter_specs():
    from torchkfp.vertex.tuning import decode_parameter, parameter_specs

    tcfg = TuneConfig.from_dict(
        {
            "space": {
                "epochs": {"low": 2, "high": 30},
                "patience": {"low": 1, "high": 8, "log": True},
                "periodic_frequencies": {"choices": [8, 16, 32]},
                "unknown_category_rate": {"low": 0.0, "high": 0.1},
            }
        }
    )
    space = tcfg.search_space()
    specs = parameter_specs(space, epochs_cap=6)
    assert set(specs) == set(space)
    seen = {}
    for name, sdk_spec in specs.items():
        proto = sdk_spec._to_parameter_spec(parameter_id=name)
        for raw in _api_values(proto):
            value = decode_parameter(name, space[name], json.loads(json.dumps(raw)), 6)
            seen.setdefault(name, []).append(value)
            TrainConfig.from_dict({name: value})  # a valid train setting
            if space[name].choices is not None:
                assert value in space[name].choices
                assert type(value) is type(space[name].choices[0])  # 512, not 512.0
            elif name in ("epochs", "patience"):
                assert type(value) is int
            else:
                assert type(value) is float and space[name].low <= value <= space[name].high
    # every choice comes back, as the config wrote it
    assert sorted(seen["hidden_sizes"]) == sorted(DEFAULT_SPACE["hidden_sizes"]["choices"])
    assert sorted(seen["batch_size"]) == [512, 1024, 2048]
    assert sorted(seen["numeric_embedding"]) == ["none", "periodic"]
    assert sorted(seen["periodic_frequencies"]) == [8, 16, 32]
    assert seen["epochs"] == [2, 4, 6]  # capped at tune.epochs, as the job was
    assert seen["learning_rate"][0] == 3e-4 and seen["learning_rate"][-1] == 1e-2


@pytest.mark.parametrize(
    ("name", "raw", "needle"),
    [
        ("hidden_sizes", "[1024, 512]", "not one of the configured choices"),
        ("batch_size", 4096.0, "not one of the configured choices"),
        ("learning_rate", 0.5, "outside the configured range"),
        ("learning_rate", "0.003", "not a number"),
        ("dropout", -0.01, "outside the configured range"),
    ],
)
def test_decode_refuses_values_of_another_space(name, raw, needle):
    from torchkfp.vertex.tuning import decode_parameter

    with pytest.raises(ValueError, match=needle):
        decode_parameter(name, TuneConfig().search_space()[name], raw)


def test_decode_refuses_a_fractional_integer():
    from torchkfp.vertex.tuning import decode_parameter

    space = TuneConfig.from_dict({"space": {"epochs": {"low": 1, "high": 9}}}).search_space()
    assert decode_parameter("epochs", space["epochs"], 7.0) == 7
    with pytest.raises(ValueError, match="not a whole number"):
        decode_parameter("epochs", space["epochs"], 7.5)
    with pytest.raises(ValueError, match=r"outside the configured range \[1, 4\]"):
        decode_parameter("epochs", space["epochs"], 6.0, epochs_cap=4)


def test_usage_errors():
    app = _app()
    res = CliRunner().invoke(app, ["tune", "--vertex-result", "123", "--trials", "3"])
    assert res.exit_code == 2 and "--trials do(es) not go with it" in res.output
    res = CliRunner().invoke(app, ["tune", "--vertex-result", "123", "--vertex"])
    assert res.exit_code == 2 and "--vertex do(es) not go with it" in res.output
    res = CliRunner().invoke(app, ["tune", "--wait"])
    assert res.exit_code == 2
    assert "--wait goes with --vertex (submit the search and follow it" in res.output
    assert "or with --vertex-result JOB" in res.output


# ---- through the SDK and the fake Vertex AI server ------------------------------------------


@pytest.fixture()
def fake(monkeypatch):
    """The fake Vertex AI server, the real SDK pointed at it (REST transport)."""
    from fake_vertex import FakeVertex
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    monkeypatch.chdir(ROOT)
    with FakeVertex() as server:
        initializer.global_config.__init__()
        aiplatform.init(
            api_endpoint=server.endpoint, api_transport="rest", credentials=AnonymousCredentials()
        )
        yield server
        initializer.global_config.__init__()


@pytest.fixture()
def submitted(tmp_path, fake) -> dict:
    """What `torchkfp tune --vertex --dry-run --epochs 3` would create: the study's parameters
    (``parameter_specs`` of the config's space, as REST JSON) and the trials' container args."""
    cfg_file = _vertex_config(tmp_path)
    args = ["tune", "--vertex", "-c", cfg_file, "--dry-run", "--epochs", "3"]
    for k, v in GS_INPUTS.items():
        args += [f"--{k}", v]
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 0, res.output
    request = _last_json(res)["request"]
    return {
        "config": cfg_file,
        "parameters": request["studySpec"]["parameters"],
        "args": request["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"],
    }


def _draw(parameters: list[dict], i: int) -> dict:
    """Trial values drawn from the study's parameters (REST JSON) the way Vertex AI sends
    them: the ``i``-th listed value of discrete and categorical ones, for ranges the low end,
    the middle or the high end."""
    out = {}
    for p in parameters:
        if "discreteValueSpec" in p:
            vals = p["discreteValueSpec"]["values"]
            out[p["parameterId"]] = float(vals[i % len(vals)])
        elif "categoricalValueSpec" in p:
            vals = p["categoricalValueSpec"]["values"]
            out[p["parameterId"]] = vals[i % len(vals)]
        elif "integerValueSpec" in p:
            spec = p["integerValueSpec"]  # proto3 JSON leaves out zeros
            lo, hi = int(spec.get("minValue", 0)), int(spec.get("maxValue", 0))
            out[p["parameterId"]] = float([lo, (lo + hi) // 2, hi][i % 3])
        else:
            spec = p["doubleValueSpec"]
            lo, hi = spec.get("minValue", 0.0), spec.get("maxValue", 0.0)
            out[p["parameterId"]] = [lo, (lo + hi) / 2, hi][i % 3]
    return out


def _trials(parameters: list[dict], values: list[float | None], metric="roc_auc") -> list:
    """One trial per value; None: a failed (INFEASIBLE) trial."""
    from fake_vertex import tuning_trial

    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(
                tuning_trial(
                    i + 1,
                    _draw(parameters, i),
                    state="INFEASIBLE",
                    infeasible_reason="The replica workerpool0-0 exited with a non-zero status",
                )
            )
        else:
            out.append(tuning_trial(i + 1, _draw(parameters, i), v, metric=metric))
    return out


JOB = f"projects/{PROJECT}/locations/{LOCATION}/hyperparameterTuningJobs/4242"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("goal", "best"),
    [("MAXIMIZE", "4"), ("MINIMIZE", "3")],
)
def test_best_trial_is_decoded_and_applied(fake, submitted, tmp_path, goal, best):
    values = [0.70, None, 0.66, 0.74, 0.70]  # trial 2 failed
    params = submitted["parameters"]
    fake.add_tuning_job(
        "4242",
        trials=_trials(params, values),
        goal=goal,
        parameters=params,
        trial_args=submitted["args"],
        project=PROJECT,
        location=LOCATION,
    )
    out_file = tmp_path / "tuned" / "tuned.yaml"
    res = CliRunner().invoke(
        _app(),
        ["tune", "--vertex-result", JOB, "-c", submitted["config"], "--apply", str(out_file)],
    )
    assert res.exit_code == 0, res.output
    line = _last_json(res)
    assert line["job"] == JOB and line["state"] == "JOB_STATE_SUCCEEDED"
    assert line["metric"] == "roc_auc" and line["direction"] == goal.lower()
    assert line["best_trial"] == best
    assert line["best_value"] == values[int(best) - 1]
    assert [t["state"] for t in line["trials"]] == [
        "SUCCEEDED",
        "INFEASIBLE",
        "SUCCEEDED",
        "SUCCEEDED",
        "SUCCEEDED",
    ]
    assert line["trials"][1]["value"] is None and "non-zero status" in line["trials"][1]["error"]
    assert [t["value"] for t in line["trials"]] == values
    assert line["succeeded"] == 4

    # the drawn values, decoded back into the config's train settings (round trip)
    drawn = _draw(params, int(best) - 1)
    decoded = line["best_params"]
    space = TuneConfig().search_space()
    assert set(decoded) == set(space) == set(drawn)
    for name, value in decoded.items():
        if space[name].choices is not None:
            assert value in space[name].choices
        if name == "hidden_sizes":
            assert json.dumps(value) == drawn[name] and isinstance(value, list)
        elif name in ("batch_size", "numeric_embedding_dim"):
            assert value == int(drawn[name]) and isinstance(value, int)
        else:
            assert value == drawn[name]
    settings = line["best_settings"]
    assert settings["epochs"] == 3  # the epochs the trials trained (tune --vertex --epochs 3)
    assert settings["tuning"] == f"{JOB}#trial-{best}"
    assert f'train.tuning="{JOB}#trial-{best}"' in line["set"]

    # the applied config: the whole config with those settings; training records train.tuning
    assert line["applied_config"] == str(out_file.resolve())
    tuned = Config.load(out_file, resolve_paths=False)
    for name, value in decoded.items():
        assert getattr(tuned.train, name) == value
    assert tuned.train.epochs == 3 and tuned.train.tuning == f"{JOB}#trial-{best}"
    assert tuned.vertex.project == PROJECT  # the rest of the config kept
    assert not list(out_file.parent.glob(".*tmp*"))
    # read through the SDK: GETs of the job only, nothing created
    assert [r.method for r in fake.requests] == ["GET"] * len(fake.requests)
    assert fake.find("GET", r"/hyperparameterTuningJobs/4242$")


@pytest.mark.integration
def test_minimized_metric_and_a_bare_job_id(fake, tmp_path):
    """A log_loss study (MINIMIZE) read by its id (project and region from the config), from a
    job that names none of the trials' base settings: epochs from the config, with a note."""
    cfg_file = _vertex_config(tmp_path, **{"tune.metric": "log_loss"})
    parameters = [
        {"parameterId": "learning_rate", "doubleValueSpec": {"minValue": 3e-4, "maxValue": 1e-2}}
    ]
    from fake_vertex import tuning_trial

    trials = [
        tuning_trial(1, {"learning_rate": 0.001}, 0.52, metric="log_loss"),
        tuning_trial(2, {"learning_rate": 0.004}, 0.49, metric="log_loss"),
        tuning_trial(3, {"learning_rate": 0.009}, 0.49, metric="log_loss"),  # a tie: earlier wins
        tuning_trial(4, {"learning_rate": 0.002}, None, metric="log_loss", state="ACTIVE"),
    ]
    fake.add_tuning_job(
        "77",
        trials=trials,
        metric="log_loss",
        goal="MINIMIZE",
        parameters=parameters,
        project=PROJECT,
        location=LOCATION,
    )
    res = CliRunner().invoke(_app(), ["tune", "--vertex-result", "77", "-c", cfg_file])
    assert res.exit_code == 0, res.output
    line = _last_json(res)
    name = f"projects/{PROJECT}/locations/{LOCATION}/hyperparameterTuningJobs/77"
    assert line["job"] == name and line["direction"] == "minimize"
    assert line["best_trial"] == "2" and line["best_value"] == 0.49
    assert line["best_settings"] == {
        "epochs": 8,  # train.epochs of the config
        "learning_rate": 0.004,
        "tuning": f"{name}#trial-2",
    }
    assert line["applied_config"] is None  # no --apply: nothing written
    assert any("carry no --train-settings" in n for n in line["notes"])
    assert any("did not search" in n for n in line["notes"])


@pytest.mark.integration
def test_wait_polls_until_the_job_succeeds(fake, submitted, tmp_path):
    params = submitted["parameters"]
    fake.add_tuning_job(
        "4242",
        trials=_trials(params, [0.61, 0.63]),
        states=["JOB_STATE_RUNNING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"],
        parameters=params,
        trial_args=submitted["args"],
        project=PROJECT,
        location=LOCATION,
    )
    cfg = submitted["config"]
    out_file = tmp_path / "tuned.yaml"
    args = ["tune", "--vertex-result", JOB, "-c", cfg, "--wait", "--poll-interval", "0.01"]
    res = CliRunner().invoke(_app(), [*args, "--apply", str(out_file)])
    assert res.exit_code == 0, res.output
    line = _last_json(res)
    assert line["state"] == "JOB_STATE_SUCCEEDED" and line["best_trial"] == "2"
    assert len(fake.find("GET", r"/hyperparameterTuningJobs/4242$")) == 3
    assert "state: JOB_STATE_RUNNING" in res.stderr and "state: JOB_STATE_SUCCEEDED" in res.stderr
    assert Config.load(out_file, resolve_paths=False).train.tuning == f"{JOB}#trial-2"


@pytest.mark.integration
def test_a_running_job_without_wait_or_past_the_timeout(fake, submitted, tmp_path):
    fake.add_tuning_job(
        "4242",
        trials=_trials(submitted["parameters"], [0.61]),
        state="JOB_STATE_RUNNING",
        project=PROJECT,
        location=LOCATION,
    )
    out_file = tmp_path / "tuned.yaml"
    base = ["tune", "--vertex-result", JOB, "-c", submitted["config"], "--apply", str(out_file)]
    res = CliRunner().invoke(_app(), base)
    assert res.exit_code == 1
    assert f"{JOB} is still JOB_STATE_RUNNING" in res.output and "add --wait" in res.output
    res = CliRunner().invoke(
        _app(), [*base, "--wait", "--poll-interval", "0.01", "--timeout", "0.05"]
    )
    assert res.exit_code == 1
    assert f"{JOB} is still JOB_STATE_RUNNING after 0.05s" in res.output
    assert len(fake.find("GET", r"/hyperparameterTuningJobs/4242$")) >= 3
    assert not out_file.exists()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("setup", "needles"),
    [
        ("missing", ["hyperparameterTuningJobs/4242", "not found"]),
        ("failed", [f"{JOB} ended JOB_STATE_FAILED: Trials failed: 3 of 3", "0 of 2 trial(s)"]),
        ("cancelled", [f"{JOB} ended JOB_STATE_CANCELLED", "1 of 2 trial(s) succeeded"]),
        ("no_success", [f"{JOB} has no SUCCEEDED trial", "trial 1: INFEASIBLE", "non-zero"]),
        ("foreign_param", [f"{JOB}, trial 1: parameter 'momentum'", "not in this config's"]),
        ("removed_param", ["parameter 'periodic_sigma' is not in this config's search space"]),
        ("foreign_value", ["parameter 'hidden_sizes'='[1024, 512]'", "configured choices"]),
    ],
)
def test_job_errors_name_the_job_and_the_problem(fake, submitted, tmp_path, setup, needles):
    from fake_vertex import tuning_trial

    params = submitted["parameters"]
    cfg = submitted["config"]
    kw: dict = {"parameters": params, "project": PROJECT, "location": LOCATION}
    if setup == "failed":
        fake.add_tuning_job(
            "4242",
            trials=_trials(params, [None, None]),
            state="JOB_STATE_FAILED",
            error={"code": 13, "message": "Trials failed: 3 of 3"},
            **kw,
        )
    elif setup == "cancelled":
        fake.add_tuning_job(
            "4242", trials=_trials(params, [0.6, None]), state="JOB_STATE_CANCELLED", **kw
        )
    elif setup == "no_success":
        fake.add_tuning_job("4242", trials=_trials(params, [None, None]), **kw)
    elif setup == "foreign_param":
        fake.add_tuning_job(
            "4242", trials=[tuning_trial(1, {**_draw(params, 0), "momentum": 0.9}, 0.7)], **kw
        )
    elif setup == "removed_param":
        fake.add_tuning_job("4242", trials=_trials(params, [0.7]), **kw)
        cfg = _vertex_config(tmp_path, **{"tune.space": {"periodic_sigma": None}})
    elif setup == "foreign_value":
        drawn = {**_draw(params, 0), "hidden_sizes": "[1024, 512]"}
        fake.add_tuning_job("4242", trials=[tuning_trial(1, drawn, 0.7)], **kw)
    out_file = tmp_path / "tuned.yaml"
    res = CliRunner().invoke(
        _app(), ["tune", "--vertex-result", JOB, "-c", cfg, "--apply", str(out_file)]
    )
    assert res.exit_code == 1, res.output
    for needle in needles:
        assert needle in res.output
    assert not out_file.exists()  # no applied config from a job without a result


@pytest.mark.integration
def test_a_malformed_job_name_sends_nothing(fake, tmp_path):
    cfg = _vertex_config(tmp_path)
    res = CliRunner().invoke(
        _app(),
        ["tune", "--vertex-result", f"projects/{PROJECT}/locations/x/pipelineJobs/1", "-c", cfg],
    )
    assert res.exit_code == 2 and "give a hyperparameter tuning job id" in res.output
    assert fake.requests == []


# ---- tune --vertex --wait: submit, then follow the job it created --------------------------

CREATED = re.compile(r"submitted hyperparameter tuning job (\S+) \(JOB_STATE_PENDING\)")


def _submit_args(cfg_file: str, *more: str) -> list[str]:
    args = ["tune", "--vertex", "-c", cfg_file, "--epochs", "3"]
    for k, v in GS_INPUTS.items():
        args += [f"--{k}", v]
    return args + list(more)


def _created_trials(values: list[float | None]):
    """Trials for the next created job, drawn from the study parameters it was created with."""
    return lambda body: _trials(body["studySpec"]["parameters"], values)


@pytest.mark.integration
def test_vertex_wait_submits_follows_and_applies(fake, tmp_path):
    cfg_file = _vertex_config(tmp_path)
    values = [0.70, None, 0.74, 0.66]  # trial 2 failed; trial 3 is the best (MAXIMIZE roc_auc)
    fake.script_tuning_job(
        ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"],
        trials=_created_trials(values),
    )
    out_file = tmp_path / "tuned" / "tuned.yaml"
    res = CliRunner().invoke(
        _app(),
        _submit_args(cfg_file, "--wait", "--poll-interval", "0", "--apply", str(out_file)),
    )
    assert res.exit_code == 0, res.output
    (create,) = fake.find("POST", r"/hyperparameterTuningJobs$")
    m = CREATED.search(res.stderr)
    assert m, res.stderr
    job = m.group(1)
    assert job.startswith(f"projects/{PROJECT}/locations/{LOCATION}/hyperparameterTuningJobs/")
    # the job's name comes right after the submission, before any state, with the command
    # that picks it up again
    resume = f"torchkfp tune --vertex-result {job} -c {cfg_file} --wait --apply {out_file}"
    assert resume in res.stderr
    states = [ln for ln in res.stderr.splitlines() if ln.startswith("state: ")]
    assert states == [
        "state: JOB_STATE_PENDING",
        "state: JOB_STATE_RUNNING",
        "state: JOB_STATE_SUCCEEDED",
    ]
    assert res.stderr.index(m.group(0)) < res.stderr.index("state: JOB_STATE_PENDING")
    # one create, then GETs of that job only (one per poll)
    job_id = job.rsplit("/", 1)[1]
    assert fake.requests[0] is create
    assert [repr(r) for r in fake.requests[1:]] == [
        f"GET /v1/{job}",
        f"GET /v1/{job}",
        f"GET /v1/{job}",
    ], fake.requests
    assert fake.find("GET", rf"/hyperparameterTuningJobs/{job_id}$")

    # stdout: one JSON line, the result as --vertex-result prints it
    (line_text,) = res.stdout.strip().splitlines()
    line = json.loads(line_text)
    assert line["job"] == job and line["state"] == "JOB_STATE_SUCCEEDED"
    assert line["best_trial"] == "3" and line["best_value"] == 0.74
    assert [t["state"] for t in line["trials"]] == [
        "SUCCEEDED",
        "INFEASIBLE",
        "SUCCEEDED",
        "SUCCEEDED",
    ]
    drawn = _draw(create.body["studySpec"]["parameters"], 2)
    space = TuneConfig().search_space()
    assert set(line["best_params"]) == set(drawn) == set(space)
    for name, value in line["best_params"].items():
        if name == "hidden_sizes":
            assert json.dumps(value) == drawn[name]
        else:
            assert value == drawn[name]
    assert line["best_settings"]["epochs"] == 3
    assert line["best_settings"]["tuning"] == f"{job}#trial-3"

    # the applied config: the best trial's settings, train.tuning = <job>#trial-<id>
    assert line["applied_config"] == str(out_file.resolve())
    tuned = Config.load(out_file, resolve_paths=False)
    for name, value in line["best_params"].items():
        assert getattr(tuned.train, name) == value
    assert tuned.train.epochs == 3 and tuned.train.tuning == f"{job}#trial-3"
    assert tuned.vertex.project == PROJECT

    # exactly what following the same job with --vertex-result gives
    again = tmp_path / "again.yaml"
    res2 = CliRunner().invoke(
        _app(),
        ["tune", "--vertex-result", job, "-c", cfg_file, "--wait", "--apply", str(again)],
    )
    assert res2.exit_code == 0, res2.output
    line2 = _last_json(res2)
    assert {**line2, "applied_config": None} == {**line, "applied_config": None}
    assert again.read_text() == out_file.read_text()


@pytest.mark.integration
def test_vertex_wait_on_a_job_that_fails(fake, tmp_path):
    cfg_file = _vertex_config(tmp_path)
    fake.script_tuning_job(
        ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_FAILED"],
        trials=_created_trials([None, None]),
        error={"code": 13, "message": "Trials failed: 2 of 2"},
    )
    out_file = tmp_path / "tuned.yaml"
    res = CliRunner().invoke(
        _app(),
        _submit_args(cfg_file, "--wait", "--poll-interval", "0", "--apply", str(out_file)),
    )
    assert res.exit_code == 1, res.output
    job = CREATED.search(res.stderr).group(1)
    (err,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert f"hyperparameter tuning job {job} ended JOB_STATE_FAILED: Trials failed: 2 of 2" in err
    assert "(0 of 2 trial(s) succeeded)" in err and "submit the search again" in err
    assert "state: JOB_STATE_FAILED" in res.stderr
    assert res.stdout.strip() == ""  # no result line
    assert not out_file.exists() and not list(tmp_path.glob(".tuned.yaml*"))


@pytest.mark.integration
def test_vertex_wait_timeout_says_how_to_pick_the_job_up(fake, tmp_path):
    folder = tmp_path / "my configs"  # a space: the printed command must quote it
    folder.mkdir()
    cfg_file = _vertex_config(folder)
    fake.script_tuning_job(["JOB_STATE_RUNNING"], trials=_created_trials([0.61, 0.66]))
    out_file = folder / "tuned.yaml"
    args = _submit_args(cfg_file, "--set", "train.dropout=0.2", "--wait", "--poll-interval", "0.01")
    res = CliRunner().invoke(_app(), [*args, "--timeout", "0.05", "--apply", str(out_file)])
    assert res.exit_code == 1, res.output
    job = CREATED.search(res.stderr).group(1)
    (err,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert f"{job} is still JOB_STATE_RUNNING after 0.05s of --wait" in err
    assert f"it keeps running on Vertex AI, nothing written to {out_file}" in err
    resume = shlex.join(
        [
            "torchkfp",
            "tune",
            "--vertex-result",
            job,
            "-c",
            cfg_file,
            "--set",
            "train.dropout=0.2",
            "--wait",
            "--apply",
            str(out_file),
        ]
    )
    assert f"pick it up later with `{resume}`" in err
    assert "'" in resume  # the folder with a space is quoted
    assert len(fake.find("GET", rf"{job}$")) >= 2
    assert not out_file.exists()

    # the printed command, run once the job has ended, applies the best trial
    fake.state.tuning_scripts[job] = ["JOB_STATE_SUCCEEDED"]
    res = CliRunner().invoke(_app(), shlex.split(resume)[1:])
    assert res.exit_code == 0, res.output
    line = _last_json(res)
    assert line["job"] == job and line["best_trial"] == "2"
    tuned = Config.load(out_file, resolve_paths=False)
    assert tuned.train.tuning == f"{job}#trial-2"


@pytest.mark.integration
def test_vertex_wait_interrupted_says_how_to_pick_the_job_up(fake, tmp_path, monkeypatch):
    """Ctrl-C while following (a KeyboardInterrupt in the sleep between two polls, where the
    command spends its time): exit 130, the job named with the command that picks it up."""
    import types

    from torchkfp.vertex import tuning

    cfg_file = _vertex_config(tmp_path)
    fake.script_tuning_job(["JOB_STATE_RUNNING"], trials=_created_trials([0.61]))
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(
        tuning, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep)
    )
    res = CliRunner().invoke(
        _app(), _submit_args(cfg_file, "--wait", "--poll-interval", "0.01", "--timeout", "30")
    )
    assert res.exit_code == 130, res.output
    assert len(sleeps) == 2
    job = CREATED.search(res.stderr).group(1)
    assert len(fake.find("GET", rf"{job}$")) == 2
    (err,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert f"interrupted: stopped following hyperparameter tuning job {job}" in err
    assert "it keeps running on Vertex AI" in err
    assert f"`torchkfp tune --vertex-result {job} -c {cfg_file} --wait`" in err
    assert res.stdout.strip() == ""


def test_vertex_apply_without_wait_and_dry_run_with_wait_are_refused(fake, tmp_path):
    cfg_file = _vertex_config(tmp_path)
    out_file = tmp_path / "tuned.yaml"
    res = CliRunner().invoke(_app(), _submit_args(cfg_file, "--apply", str(out_file)))
    assert res.exit_code == 2, res.output
    assert f"--apply {out_file} with --vertex needs --wait" in res.output
    assert "can only be applied once the job has ended; add --wait" in res.output
    assert "torchkfp tune --vertex-result JOB -c CONFIG --wait --apply" in res.output
    for more, drop in (
        (["--wait"], "drop --wait to see"),
        (["--apply", str(out_file)], "drop --apply to see"),
        (["--wait", "--apply", str(out_file)], "drop --wait and --apply to see"),
    ):
        res = CliRunner().invoke(_app(), _submit_args(cfg_file, "--dry-run", *more))
        assert res.exit_code == 2, res.output
        assert "--dry-run sends nothing, so there is no job to follow" in res.output
        assert drop in res.output, res.output
    res = CliRunner().invoke(_app(), _submit_args(cfg_file, "--wait", "--apply", str(tmp_path)))
    assert res.exit_code == 2 and "is a folder: give the config file to write" in res.output
    assert fake.requests == []  # nothing was sent
    assert not out_file.exists()
