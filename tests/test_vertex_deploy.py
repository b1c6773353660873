"""torchkfp.vertex (Model Registry versions and aliases, endpoint traffic split) against the
local Vertex AI stand-in: the real SDK sends its real REST requests to tests/fake_vertex.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_vertex import FakeVertex

from torchkfp.config import Config

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "vertex.example.yaml"
PROJECT, REGION = "test-project", "us-central1"
LOC = f"projects/{PROJECT}/locations/{REGION}"


@pytest.fixture()
def fake():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    with FakeVertex() as server:
        initializer.global_config.__init__()  # forget settings of earlier tests
        aiplatform.init(
            api_endpoint=server.endpoint, api_transport="rest",
            credentials=AnonymousCredentials(),
        )  # fmt: skip
        yield server
        initializer.global_config.__init__()


@pytest.fixture()
def cfg() -> Config:
    return Config.load(EXAMPLE, resolve_paths=False).override(
        {
            "vertex.project": PROJECT,
            "vertex.region": REGION,
            "vertex.pipeline_root": "gs://tkfp-bucket/root",
            "vertex.traffic_percentage": 30,
            "vertex.serving_machine_type": "n1-standard-4",
            "vertex.min_replica_count": 1,
            "vertex.max_replica_count": 3,
        }
    )


def test_upload_versions_alias_and_traffic_split(fake, cfg):
    from torchkfp import vertex

    assert vertex.champion_local_path(cfg) is None  # no registered model yet
    assert fake.find("GET", r"/models$")[0].query["filter"] == 'display_name="flights-delay"'

    # first version: a new model, a new endpoint, all traffic (nothing to split with)
    first = vertex.upload_and_deploy(cfg, "/gcs/tkfp-bucket/root/run-1/train/model")
    [up1] = fake.find("POST", r"/models:upload$")
    assert "parentModel" not in up1.body
    m = up1.body["model"]
    assert m["displayName"] == "flights-delay"
    assert m["artifactUri"] == "gs://tkfp-bucket/root/run-1/train/model"  # /gcs/ -> gs://
    assert "champion" in m["versionAliases"]
    assert m["containerSpec"]["imageUri"] == cfg.vertex.serving_image
    assert m["containerSpec"]["predictRoute"] == "/predict"
    assert m["containerSpec"]["healthRoute"] == "/health"
    assert m["containerSpec"]["ports"] == [{"containerPort": 8080}]
    assert m["labels"] == cfg.vertex.labels
    [ep_create] = fake.find("POST", r"/endpoints$")
    assert ep_create.body["displayName"] == cfg.vertex.endpoint_display_name
    [dep1] = fake.find("POST", r":deployModel$")
    assert dep1.path == f"/v1/{first.endpoint_resource}:deployModel"
    dm = dep1.body["deployedModel"]
    assert dm["model"] == f"{first.model_resource}@1"
    assert dm["dedicatedResources"]["machineSpec"]["machineType"] == "n1-standard-4"
    assert dm["dedicatedResources"]["minReplicaCount"] == 1
    assert dm["dedicatedResources"]["maxReplicaCount"] == 3
    assert dm["serviceAccount"] == cfg.vertex.service_account
    assert dep1.body["trafficSplit"] == {"0": 100}
    assert first.version == "1" and first.model_resource.startswith(f"{LOC}/models/")
    assert vertex.champion_local_path(cfg) == "/gcs/tkfp-bucket/root/run-1/train/model"
    first_deployed = fake.state.endpoints[first.endpoint_resource.rsplit("/", 1)[1]][
        "deployedModels"
    ][0]["id"]

    # second version: under the same parent model, alias moved, configured traffic share
    fake.clear()
    second = vertex.upload_and_deploy(cfg, "gs://tkfp-bucket/root/run-2/train/model")
    [up2] = fake.find("POST", r"/models:upload$")
    assert up2.body["parentModel"] == first.model_resource
    assert sorted(up2.body["model"]["versionAliases"]) == ["champion", "default"]
    assert fake.find("POST", r"/endpoints$") == []  # the endpoint is reused
    [dep2] = fake.find("POST", r":deployModel$")
    assert dep2.body["deployedModel"]["model"] == f"{first.model_resource}@2"
    assert dep2.body["trafficSplit"] == {"0": 30, first_deployed: 70}
    assert second.version == "2" and second.endpoint_resource == first.endpoint_resource

    fake.clear()
    assert vertex.champion_local_path(cfg) == "/gcs/tkfp-bucket/root/run-2/train/model"
    assert [r.path for r in fake.find("GET", "@")] == [f"/v1/{first.model_resource}@champion"]


def test_champion_is_none_while_no_version_carries_the_alias(fake, cfg):
    from google.cloud import aiplatform

    from torchkfp import vertex

    vertex.init(cfg)
    aiplatform.Model.upload(
        display_name=cfg.deploy.model_name,
        artifact_uri="gs://tkfp-bucket/manual/model",
        serving_container_image_uri=cfg.vertex.serving_image,
    )
    assert vertex.champion_local_path(cfg) is None
    [lookup] = fake.find("GET", "@champion$")
    assert lookup.path.startswith(f"/v1/{LOC}/models/")


def test_vertex_needs_a_project(fake, cfg):
    from torchkfp import vertex
    from torchkfp.config import ConfigError

    with pytest.raises(ConfigError, match="vertex.project is required"):
        vertex.upload_and_deploy(cfg.override({"vertex.project": None}), "gs://b/m")
    assert fake.requests == []
