"""Scheduling the batch-scoring pipeline on Vertex AI (``torchkfp schedule create --pipeline
batch``), against the local Vertex AI stand-in of tests/test_submit.py: the real SDK sends the
schedule, whose run is the batch pipeline with the ``batch`` section and the sections it uses."""

from __future__ import annotations

import json

import pytest
from test_submit import cfg, cli, fake, fake_server, gcs, write_config  # noqa: F401

from torchkfp.batch_predict import BATCH_SECTIONS, pipeline_parameters
from torchkfp.config import Config, ConfigError
from torchkfp.config.batch import BatchConfig
from torchkfp.images import with_images
from torchkfp.vertex import schedules

pytestmark = pytest.mark.integration
WIRED = "batch" in Config.model_fields
"""Whether Config has the ``batch`` section (then the CLI reads it from the config file)."""
BATCH = BatchConfig(input="bq:ml.flights_today", output="bq:ml.scores", if_exists="replace")


def test_a_schedule_runs_the_batch_pipeline_with_its_sections(fake, cfg, tmp_path):  # noqa: F811
    from torchkfp.pipelines.batch_scoring import compile_batch_pipeline

    template = compile_batch_pipeline("vertex", cfg, tmp_path / "b.yaml", BATCH)
    values = pipeline_parameters(with_images(cfg), BATCH)
    dry = schedules.create_schedule(
        cfg,
        template,
        cron="0 7 * * *",
        display_name="scores",
        parameter_values=values,
        pipeline="batch",
        dry_run=True,
    )
    assert fake.requests == []
    result = schedules.create_schedule(
        cfg,
        template,
        cron="0 7 * * *",
        display_name="scores",
        parameter_values=values,
        pipeline="batch",
    )
    [post] = fake.find("POST", r"/schedules$")
    assert post.body == dry.request["body"]
    job = post.body["createPipelineJobRequest"]["pipelineJob"]
    assert job["pipelineSpec"]["pipelineInfo"]["name"] == f"{cfg.run.pipeline_name}-batch"
    params = job["runtimeConfig"]["parameterValues"]
    assert set(params) == {f"{s}_config" for s in BATCH_SECTIONS}
    assert params["batch_config"]["input"] == "bq:ml.flights_today"
    assert params["vertex_config"]["training_image"] == cfg.vertex.training_image
    assert result.schedule.state == "ACTIVE" and result.schedule.display_name == "scores"


def test_a_batch_schedule_without_input_and_output_is_refused_offline(fake, cfg, tmp_path):  # noqa: F811
    if WIRED:
        cfg = cfg.override({"batch.input": None, "batch.output": None})
    with pytest.raises(ConfigError, match="batch.input and batch.output must be set"):
        schedules.pipeline_values(cfg, "batch")
    with pytest.raises(ConfigError, match="use one of"):
        schedules.pipeline_values(cfg, "nightly")
    conf = write_config(cfg, tmp_path / "v.yaml")
    r = cli("schedule", "create", "--pipeline", "batch", "--cron", "0 7 * * *", "-c", conf)
    assert r.exit_code == 2 and "batch.input and batch.output must be set" in r.stderr
    r = cli("schedule", "create", "--pipeline", "nope", "--cron", "0 7 * * *", "-c", conf)
    assert r.exit_code == 2 and "--pipeline 'nope'" in r.stderr
    assert fake.requests == []


@pytest.mark.skipif(not WIRED, reason="Config has no batch section yet")
def test_cli_schedules_the_batch_pipeline_from_the_config(fake, cfg, tmp_path):  # noqa: F811
    cfg = cfg.override({"batch.input": "bq:ml.flights_today", "batch.output": "bq:ml.scores"})
    conf = write_config(cfg, tmp_path / "v.yaml")
    r = cli("schedule", "create", "--pipeline", "batch", "--cron", "0 7 * * *", "-c", conf)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["display_name"] == f"{cfg.run.pipeline_name}-batch"
    [post] = fake.find("POST", r"/schedules$")
    job = post.body["createPipelineJobRequest"]["pipelineJob"]
    assert job["runtimeConfig"]["parameterValues"]["batch_config"]["output"] == "bq:ml.scores"
    assert job["pipelineSpec"]["pipelineInfo"]["name"].endswith("-batch")
    # a local path cannot be read on Vertex AI: refused before anything is sent
    bad = write_config(cfg.override({"batch.output": "scores.parquet"}), tmp_path / "b.yaml")
    r = cli("schedule", "create", "--pipeline", "batch", "--cron", "0 7 * * *", "-c", bad)
    assert r.exit_code == 2 and "is a local path" in r.stderr
