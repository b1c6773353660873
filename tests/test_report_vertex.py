"""``torchkfp report --vertex [JOB]``: the HTML evaluation report of a Vertex AI pipeline run.

The real google-cloud-aiplatform SDK reads the runs from tests/fake_vertex.py (pipeline jobs
with ``jobDetail.taskDetails`` as the API returns them: the evaluate task's ``html_report``
output artifact and its gs:// URI), and the real google-cloud-storage client downloads the file
from fake-gcs-server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fake_vertex import pipeline_task
from registry_env import (
    LOC,
    PROJECT,
    REGION,
    gcs_server,
    new_bucket,
    storage_client,
    vertex_config,
    vertex_session,
)
from typer.testing import CliRunner

from torchkfp.config import ConfigError
from torchkfp.vertex.report import job_resource_name

PIPELINE = "torchkfp-flights-delay"  # run.pipeline_name of the example config


def page(text: str) -> bytes:
    return f"<!doctype html>\n<html><body><h1>{text}</h1></body></html>\n".encode()


# ---- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gcs():
    with gcs_server() as server:
        yield server


@pytest.fixture()
def fake(gcs, monkeypatch):
    with vertex_session(gcs, monkeypatch) as server:
        yield server


@pytest.fixture()
def env(fake, tmp_path):
    """A bucket, a config file on the fake project whose run.pipeline_root is a temp folder,
    and a way to put a run (with its report object, if any) in place."""
    bucket = new_bucket()
    cfg = vertex_config(bucket).override({"run.pipeline_root": str(tmp_path / "runs")})
    conf = tmp_path / "vertex.yaml"
    conf.write_text(yaml.safe_dump(cfg.to_dict()))

    def add_run(
        job_id: str,
        day: int,
        report: bytes | None = None,
        *,
        evaluate: str | None = "SUCCEEDED",
        state: str = "PIPELINE_STATE_SUCCEEDED",
        pipeline: str = PIPELINE,
        upload: bool = True,
        artifact_state: str = "LIVE",
        failed: tuple[str, str] | None = None,
    ) -> str:
        """A run; ``report``: the evaluate task's HTML (None: no html_report output);
        ``evaluate``: its task state (None: no evaluate task); ``upload``: put the object
        in the bucket; ``failed``: (task, its error): that task FAILED. Returns the report's
        gs:// URI."""
        uri = f"gs://{bucket}/root/123456789/{job_id}/evaluate_-4{day}/html_report"
        tasks = [
            pipeline_task(t, "FAILED", error=failed[1])
            if failed and failed[0] == t
            else pipeline_task(t)
            for t in ("fingerprint", "ingest", "preprocess", "train")
        ]
        if evaluate is not None:
            outputs = {"report": uri.replace("html_report", "report")}
            if report is not None:
                outputs["html_report"] = uri
            tasks.append(
                pipeline_task("evaluate", evaluate, outputs, artifact_state=artifact_state)
            )
        fake.add_pipeline_job(
            job_id,
            pipeline_name=pipeline,
            state=state,
            create_time=f"2025-01-{day:02d}T12:00:00.000000Z",
            tasks=tasks,
            project=PROJECT,
            location=REGION,
        )
        if report is not None and upload:
            name = uri.split("/", 3)[3]
            storage_client().bucket(bucket).blob(name).upload_from_string(report)
        return uri

    return {"cfg": cfg, "conf": str(conf), "root": tmp_path / "runs", "add_run": add_run}


def cli(env: dict, *args: str) -> tuple[int, str, str]:
    from torchkfp.cli import app

    r = CliRunner().invoke(app, ["report", "--vertex", *args, "-c", env["conf"]])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout, r.stderr


def cached(env: dict) -> list[str]:
    """Every file under the report cache (leftover partial downloads included)."""
    folder = env["root"] / "vertex-reports"
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ---- tests --------------------------------------------------------------------------------
@pytest.mark.integration
def test_the_latest_run_with_a_report_is_downloaded(env, fake):
    import json

    env["add_run"]("run-old", 1, page("first"))
    uri = env["add_run"]("run-mid", 2, page("second"), state="PIPELINE_STATE_FAILED")
    env["add_run"]("run-new", 3, None, evaluate=None, state="PIPELINE_STATE_RUNNING")
    env["add_run"]("batch-run", 4, page("batch"), pipeline="torchkfp-batch-scoring")
    fake.clear()

    code, out, err = cli(env)
    assert code == 0, err
    result = json.loads(out)
    # the newest run is still before evaluate and the batch run is another pipeline: the
    # failed run (it failed after evaluate, at deploy) holds the latest report
    assert result["run"] == "run-mid"
    assert result["job"] == f"{LOC}/pipelineJobs/run-mid"
    assert result["uri"] == uri
    assert result["state"] == "PIPELINE_STATE_FAILED"
    assert result["url"].endswith(f"/locations/{REGION}/pipelines/runs/run-mid?project={PROJECT}")
    report = Path(result["report"])
    assert report == (env["root"] / "vertex-reports" / "run-mid" / "report.html").resolve()
    assert report.read_bytes() == page("second")
    assert cached(env) == ["run-mid/report.html"]
    # what the SDK asked: the list filtered to this pipeline, then the newest runs one by one
    (listing,) = fake.find("GET", r"/pipelineJobs$")
    assert listing.query["filter"] == f'pipeline_name="{PIPELINE}"'
    gets = [r.path.rsplit("/", 1)[1] for r in fake.find("GET", r"/pipelineJobs/[^/]+$")]
    assert gets == ["run-new", "run-mid"]

    # asked again: the same file, fetched again over the cached copy
    code, out, err = cli(env)
    assert code == 0, err
    assert json.loads(out)["report"] == str(report)
    assert cached(env) == ["run-mid/report.html"]


@pytest.mark.integration
def test_a_named_run_by_id_or_resource_name(env):
    import json

    uri = env["add_run"]("run-old", 1, page("first"))
    env["add_run"]("run-mid", 2, page("second"))
    for job in ("run-old", f"{LOC}/pipelineJobs/run-old"):
        code, out, err = cli(env, job)
        assert code == 0, (job, err)
        result = json.loads(out)
        assert (result["run"], result["uri"]) == ("run-old", uri)
        assert Path(result["report"]).read_bytes() == page("first")
    assert cached(env) == ["run-old/report.html"]


@pytest.mark.integration
def test_a_run_without_an_evaluate_report_is_a_clear_error(env):
    env["add_run"]("run-early", 1, None, evaluate=None, state="PIPELINE_STATE_RUNNING")
    env["add_run"](
        "run-evaluating", 2, page("x"), evaluate="RUNNING", artifact_state="PENDING",
        state="PIPELINE_STATE_RUNNING", upload=False,
    )  # fmt: skip
    env["add_run"]("run-old-pipeline", 3, None)  # evaluate ran, but wrote no HTML output
    env["add_run"]("run-pending", 4, page("x"), artifact_state="PENDING", upload=False)
    env["add_run"](
        "run-train-failed", 5, None, evaluate=None, state="PIPELINE_STATE_FAILED",
        failed=("train", "The replica workerpool0-0 exited with a non-zero status of 137."),
    )  # fmt: skip
    cases = {
        "run-early": "has no 'evaluate' task yet (the run is PIPELINE_STATE_RUNNING)",
        "run-train-failed": "has no 'evaluate' task yet (the run is PIPELINE_STATE_FAILED; "
        "train FAILED: The replica workerpool0-0 exited with a non-zero status of 137.)",
        "run-pending": "its 'html_report' artifact is still PENDING",
        "run-evaluating": "its 'evaluate' task is RUNNING (wait for it to finish)",
        "run-old-pipeline": "finished without an 'html_report' output artifact",
    }
    for job, why in cases.items():
        code, out, err = cli(env, job)
        assert code == 1, (job, out)
        assert out == ""
        assert f"pipeline job {LOC}/pipelineJobs/{job} has no evaluation report" in err
        assert why in " ".join(err.split()), err
    # the latest-run search finds none of them usable, and says why for the newest
    code, out, err = cli(env)
    assert code == 1
    err = " ".join(err.split())
    assert "none of the 5 newest pipeline jobs of pipeline 'torchkfp-flights-delay'" in err
    assert "the latest, run-train-failed: it has no 'evaluate' task yet" in err
    assert cached(env) == []


@pytest.mark.integration
def test_a_report_gone_from_the_bucket_is_a_clear_error(env):
    uri = env["add_run"]("run-a", 1, page("a"), upload=False)
    code, out, err = cli(env, "run-a")
    assert code == 1 and out == ""
    err = " ".join(err.split())
    assert f"the report of pipeline job {LOC}/pipelineJobs/run-a is gone" in err
    assert f"{uri} does not exist" in err
    # the latest run's report gone is an error too, not a silent fall back to an older run
    env["add_run"]("run-b", 2, page("b"), upload=False)
    code, _, err = cli(env)
    assert code == 1 and "pipelineJobs/run-b is gone" in " ".join(err.split())
    assert cached(env) == []


@pytest.mark.integration
def test_a_truncated_report_is_never_kept(env):
    env["add_run"]("run-cut", 1, page("whole")[:30])
    code, _, err = cli(env, "run-cut")
    assert code == 1
    assert "is not a complete HTML page (30 bytes, no closing </html>)" in " ".join(err.split())
    assert cached(env) == []


@pytest.mark.integration
def test_unknown_runs_and_an_empty_project(env):
    code, _, err = cli(env)
    assert code == 1
    assert f"no pipeline job of pipeline '{PIPELINE}' (run.pipeline_name) in {PROJECT}/" in err
    code, _, err = cli(env, "run-nope")
    assert code == 1
    assert f"pipeline job {LOC}/pipelineJobs/run-nope does not exist" in " ".join(err.split())
    code, _, err = cli(env, "Not A Job!")
    assert code == 2 and "is not a pipeline job" in err


def test_job_names_are_checked_before_any_request():
    loc = "projects/p/locations/europe-west4"
    assert job_resource_name("run-1", "p", "europe-west4") == f"{loc}/pipelineJobs/run-1"
    full = "projects/other/locations/us-east1/pipelineJobs/run-2"
    assert job_resource_name(full, "p", "europe-west4") == full
    for bad in ("Run_1", "projects/p/pipelineJobs/x", "gs://b/x", ""):
        with pytest.raises(ConfigError, match="is not a pipeline job"):
            job_resource_name(bad, "p", "europe-west4")
