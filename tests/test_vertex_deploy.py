"""torchkfp.vertex (Model Registry versions and aliases, endpoint traffic split) against the
local Vertex AI stand-in: the real SDK sends its real REST requests to tests/fake_vertex.py."""

from __future__ import annotations

import re
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


def _index(fake: FakeVertex, method: str, pattern: str) -> int:
    """Position in fake.requests of the one request with this method matching ``pattern``."""
    [i] = [
        i for i, r in enumerate(fake.requests) if r.method == method and re.search(pattern, r.path)
    ]
    return i


def _deployed(fake: FakeVertex, endpoint_resource: str) -> tuple[list[str], dict[str, int]]:
    """The endpoint as the fake holds it: deployed model ids and traffic split."""
    ep = fake.state.endpoints[endpoint_resource.rsplit("/", 1)[1]]
    return [d["id"] for d in ep.get("deployedModels", [])], ep.get("trafficSplit", {})


def _assert_alias_moved_after_deploy(fake: FakeVertex, result) -> None:
    """The upload carries no alias; the alias (and "default") move to the new version only
    after its deployModel went through."""
    [up] = fake.find("POST", r"/models:upload$")
    assert "versionAliases" not in up.body["model"]
    [merge] = fake.find("POST", r":mergeVersionAliases$")
    assert merge.path == f"/v1/{result.model_resource}@{result.version}:mergeVersionAliases"
    assert merge.body["versionAliases"] == ["champion", "default"]
    upload = _index(fake, "POST", r"/models:upload$")
    deploy = _index(fake, "POST", r":deployModel$")
    alias = _index(fake, "POST", r":mergeVersionAliases$")
    assert upload < deploy < alias, fake.requests


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
    _assert_alias_moved_after_deploy(fake, first)
    assert fake.find("POST", r":undeployModel$") == [] and first.undeployed == []
    assert first.version == "1" and first.model_resource.startswith(f"{LOC}/models/")
    assert vertex.champion_local_path(cfg) == "/gcs/tkfp-bucket/root/run-1/train/model"
    [first_deployed], _ = _deployed(fake, first.endpoint_resource)

    # second version: under the same parent model, configured traffic share, then the alias
    fake.clear()
    second = vertex.upload_and_deploy(cfg, "gs://tkfp-bucket/root/run-2/train/model")
    [up2] = fake.find("POST", r"/models:upload$")
    assert up2.body["parentModel"] == first.model_resource
    assert fake.find("POST", r"/endpoints$") == []  # the endpoint is reused
    [dep2] = fake.find("POST", r":deployModel$")
    assert dep2.body["deployedModel"]["model"] == f"{first.model_resource}@2"
    assert dep2.body["trafficSplit"] == {"0": 30, first_deployed: 70}
    _assert_alias_moved_after_deploy(fake, second)
    assert second.version == "2" and second.endpoint_resource == first.endpoint_resource

    fake.clear()
    assert vertex.champion_local_path(cfg) == "/gcs/tkfp-bucket/root/run-2/train/model"
    assert [r.path for r in fake.find("GET", "@")] == [f"/v1/{first.model_resource}@champion"]
    model_id = first.model_resource.rsplit("/", 1)[1]
    aliases = {v["versionId"]: v["versionAliases"] for v in fake.state.model_versions[model_id]}
    assert aliases == {"1": [], "2": ["champion", "default"]}  # both moved off version 1


@pytest.mark.parametrize(
    "in_operation, status",
    [(True, "FAILED_PRECONDITION"), (False, "RESOURCE_EXHAUSTED")],
    ids=["operation-error", "rejected"],
)
def test_failed_deploy_leaves_the_alias_on_the_serving_version(fake, cfg, in_operation, status):
    from torchkfp import vertex
    from torchkfp.registry import RegistryError

    first = vertex.upload_and_deploy(cfg, "gs://tkfp-bucket/root/run-1/train/model")
    before = _deployed(fake, first.endpoint_resource)

    fake.clear()
    fake.fail_next_deploy("Model server never became ready.", status, in_operation=in_operation)
    with pytest.raises(vertex.VertexDeployError) as err:
        vertex.upload_and_deploy(cfg, "gs://tkfp-bucket/root/run-2/train/model")
    msg = str(err.value)
    assert f"deploying {first.model_resource} version 2 to {first.endpoint_resource} failed" in msg
    assert "alias 'champion' was not moved" in msg
    assert "Model server never became ready." in msg
    assert isinstance(err.value, RegistryError)  # the CLI reports it as one line, exit 1
    assert len(fake.find("POST", r":deployModel$")) == 1
    assert fake.find("POST", r":mergeVersionAliases$") == []
    assert fake.find("POST", r":undeployModel$") == []
    assert _deployed(fake, first.endpoint_resource) == before  # still serving version 1

    # the gate of the next run compares against version 1, which still serves
    assert vertex.champion_local_path(cfg) == "/gcs/tkfp-bucket/root/run-1/train/model"
    model_id = first.model_resource.rsplit("/", 1)[1]
    aliases = {v["versionId"]: v["versionAliases"] for v in fake.state.model_versions[model_id]}
    assert aliases == {"1": ["default", "champion"], "2": []}

    # a later promotion goes through as usual (version 2 stays registered, never served)
    third = vertex.upload_and_deploy(cfg, "gs://tkfp-bucket/root/run-3/train/model")
    assert third.version == "3"
    assert vertex.champion_local_path(cfg) == "/gcs/tkfp-bucket/root/run-3/train/model"


def test_full_rollout_undeploys_the_previous_deployed_model(fake, cfg):
    from torchkfp import vertex

    cfg = cfg.override({"vertex.traffic_percentage": 100})
    first = vertex.upload_and_deploy(cfg, "gs://tkfp-bucket/root/run-1/train/model")
    [first_deployed], _ = _deployed(fake, first.endpoint_resource)

    fake.clear()
    second = vertex.upload_and_deploy(cfg, "gs://tkfp-bucket/root/run-2/train/model")
    [dep2] = fake.find("POST", r":deployModel$")
    assert dep2.body["trafficSplit"] == {"0": 100}  # version 1 is left with no traffic
    _assert_alias_moved_after_deploy(fake, second)
    [undeploy] = fake.find("POST", r":undeployModel$")
    assert undeploy.path == f"/v1/{first.endpoint_resource}:undeployModel"
    assert undeploy.body["deployedModelId"] == first_deployed
    # cleanup comes last: after the new deployment and after the alias moved
    assert _index(fake, "POST", r":mergeVersionAliases$") < fake.requests.index(undeploy)
    assert second.undeployed == [first_deployed]
    [second_deployed], split = _deployed(fake, second.endpoint_resource)
    assert split == {second_deployed: 100}
    assert vertex.champion_local_path(cfg) == "/gcs/tkfp-bucket/root/run-2/train/model"


def test_canary_keeps_the_previous_deployed_model(fake, cfg):
    from torchkfp import vertex

    assert cfg.vertex.traffic_percentage == 30
    first = vertex.upload_and_deploy(cfg, "gs://tkfp-bucket/root/run-1/train/model")
    [first_deployed], _ = _deployed(fake, first.endpoint_resource)

    fake.clear()
    second = vertex.upload_and_deploy(cfg, "gs://tkfp-bucket/root/run-2/train/model")
    assert fake.find("POST", r":undeployModel$") == []
    assert second.undeployed == []
    ids, split = _deployed(fake, first.endpoint_resource)
    assert ids[0] == first_deployed and len(ids) == 2
    second_deployed = ids[1]
    assert split == {first_deployed: 70, second_deployed: 30}

    # rolling the next version out fully takes every deployed model left without traffic off
    fake.clear()
    third = vertex.upload_and_deploy(
        cfg.override({"vertex.traffic_percentage": 100}), "gs://tkfp-bucket/root/run-3/train/model"
    )
    undeploys = fake.find("POST", r":undeployModel$")
    assert [r.body["deployedModelId"] for r in undeploys] == [first_deployed, second_deployed]
    assert third.undeployed == [first_deployed, second_deployed]
    [third_deployed], split = _deployed(fake, first.endpoint_resource)
    assert split == {third_deployed: 100}


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
