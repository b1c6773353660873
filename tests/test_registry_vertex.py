"""The Vertex AI registry (torchkfp.registry.vertex: Model Registry versions and aliases, the
endpoint's traffic split) through the Registry interface, ``open_registry`` with
``deploy.registry='vertex'``, against the local Vertex AI stand-in: the real SDK sends its real
REST requests to tests/fake_vertex.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fake_vertex import FakeVertex

from torchkfp.config import Config, ConfigError
from torchkfp.registry import DeployResult, RegistryError, open_registry
from torchkfp.registry.vertex import VertexDeployError, VertexRegistry

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
            api_endpoint=server.endpoint,
            api_transport="rest",
            credentials=AnonymousCredentials(),
        )
        yield server
        initializer.global_config.__init__()


@pytest.fixture()
def cfg() -> Config:
    cfg = Config.load(EXAMPLE, resolve_paths=False).override(
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
    assert cfg.deploy.registry == "vertex"
    return cfg


def registry(cfg: Config) -> VertexRegistry:
    reg = open_registry(cfg.deploy, cfg.vertex)
    assert isinstance(reg, VertexRegistry)
    return reg


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


def _aliases(fake: FakeVertex, model_resource: str) -> dict[str, list[str]]:
    model_id = model_resource.rsplit("/", 1)[1]
    return {v["versionId"]: v["versionAliases"] for v in fake.state.model_versions[model_id]}


def _assert_alias_moved_after_deploy(fake: FakeVertex, result: DeployResult) -> None:
    """The upload carries no alias; the alias (and "default") move to the new version only
    after its deployModel went through."""
    [up] = fake.find("POST", r"/models:upload$")
    assert "versionAliases" not in up.body["model"]
    [merge] = fake.find("POST", r":mergeVersionAliases$")
    assert merge.path == f"/v1/{result.location}@{result.version}:mergeVersionAliases"
    assert merge.body["versionAliases"] == ["champion", "default"]
    upload = _index(fake, "POST", r"/models:upload$")
    deploy = _index(fake, "POST", r":deployModel$")
    alias = _index(fake, "POST", r":mergeVersionAliases$")
    assert upload < deploy < alias, fake.requests


def test_open_registry_names_the_vertex_registry(cfg):
    reg = registry(cfg)
    assert reg.model_name == "flights-delay" and reg.alias == "champion"
    assert reg.describe() == f"Vertex AI Model Registry {PROJECT}/{REGION}"


def test_upload_versions_alias_and_traffic_split(fake, cfg):
    reg = registry(cfg)
    assert reg.champion() is None  # no registered model yet
    assert fake.find("GET", r"/models$")[0].query["filter"] == 'display_name="flights-delay"'

    # first version: a new model, a new endpoint, all traffic (nothing to split with)
    first = reg.publish("/gcs/tkfp-bucket/root/run-1/train/model")
    assert (first.registry, first.model_name, first.alias) == (
        "vertex",
        "flights-delay",
        "champion",
    )
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
    assert dep1.path == f"/v1/{first.endpoint}:deployModel"
    dm = dep1.body["deployedModel"]
    assert dm["model"] == f"{first.location}@1"
    assert dm["dedicatedResources"]["machineSpec"]["machineType"] == "n1-standard-4"
    assert dm["dedicatedResources"]["minReplicaCount"] == 1
    assert dm["dedicatedResources"]["maxReplicaCount"] == 3
    assert dm["serviceAccount"] == cfg.vertex.service_account
    assert dep1.body["trafficSplit"] == {"0": 100}
    _assert_alias_moved_after_deploy(fake, first)
    assert fake.find("POST", r":undeployModel$") == [] and first.undeployed == []
    assert first.version == "1" and first.location.startswith(f"{LOC}/models/")
    assert first.endpoint.startswith(f"{LOC}/endpoints/")
    assert reg.champion() == "gs://tkfp-bucket/root/run-1/train/model"
    [first_deployed], _ = _deployed(fake, first.endpoint)

    # second version: under the same parent model, configured traffic share, then the alias
    fake.clear()
    second = reg.publish("gs://tkfp-bucket/root/run-2/train/model", labels={"run": "r2"})
    [up2] = fake.find("POST", r"/models:upload$")
    assert up2.body["parentModel"] == first.location
    assert up2.body["model"]["labels"] == {**cfg.vertex.labels, "run": "r2"}
    assert fake.find("POST", r"/endpoints$") == []  # the endpoint is reused
    [dep2] = fake.find("POST", r":deployModel$")
    assert dep2.body["deployedModel"]["model"] == f"{first.location}@2"
    assert dep2.body["trafficSplit"] == {"0": 30, first_deployed: 70}
    _assert_alias_moved_after_deploy(fake, second)
    assert second.version == "2" and second.endpoint == first.endpoint
    assert second.location == first.location  # versions of one registered model

    fake.clear()
    assert reg.champion() == "gs://tkfp-bucket/root/run-2/train/model"
    assert [r.path for r in fake.find("GET", "@")] == [f"/v1/{first.location}@champion"]
    assert _aliases(fake, first.location) == {"1": [], "2": ["champion", "default"]}  # both moved
    # locate reads any alias; one nobody set is None
    assert reg.locate("default") == "gs://tkfp-bucket/root/run-2/train/model"
    assert reg.locate("challenger") is None


@pytest.mark.parametrize(
    "in_operation, status",
    [(True, "FAILED_PRECONDITION"), (False, "RESOURCE_EXHAUSTED")],
    ids=["operation-error", "rejected"],
)
def test_failed_deploy_leaves_the_alias_on_the_serving_version(fake, cfg, in_operation, status):
    reg = registry(cfg)
    first = reg.publish("gs://tkfp-bucket/root/run-1/train/model")
    before = _deployed(fake, first.endpoint)

    fake.clear()
    fake.fail_next_deploy("Model server never became ready.", status, in_operation=in_operation)
    with pytest.raises(VertexDeployError) as err:
        reg.publish("gs://tkfp-bucket/root/run-2/train/model")
    msg = str(err.value)
    assert f"deploying {first.location} version 2 to {first.endpoint} failed" in msg
    assert "alias 'champion' was not moved" in msg
    assert "Model server never became ready." in msg
    assert isinstance(err.value, RegistryError)  # the CLI reports it as one line, exit 1
    assert len(fake.find("POST", r":deployModel$")) == 1
    assert fake.find("POST", r":mergeVersionAliases$") == []
    assert fake.find("POST", r":undeployModel$") == []
    assert _deployed(fake, first.endpoint) == before  # still serving version 1

    # the gate of the next run compares against version 1, which still serves
    assert reg.champion() == "gs://tkfp-bucket/root/run-1/train/model"
    assert _aliases(fake, first.location) == {"1": ["default", "champion"], "2": []}

    # a later promotion goes through as usual (version 2 stays registered, never served)
    third = reg.publish("gs://tkfp-bucket/root/run-3/train/model")
    assert third.version == "3"
    assert reg.champion() == "gs://tkfp-bucket/root/run-3/train/model"


def test_full_rollout_undeploys_the_previous_deployed_model(fake, cfg):
    reg = registry(cfg.override({"vertex.traffic_percentage": 100}))
    first = reg.publish("gs://tkfp-bucket/root/run-1/train/model")
    [first_deployed], _ = _deployed(fake, first.endpoint)

    fake.clear()
    second = reg.publish("gs://tkfp-bucket/root/run-2/train/model")
    [dep2] = fake.find("POST", r":deployModel$")
    assert dep2.body["trafficSplit"] == {"0": 100}  # version 1 is left with no traffic
    _assert_alias_moved_after_deploy(fake, second)
    [undeploy] = fake.find("POST", r":undeployModel$")
    assert undeploy.path == f"/v1/{first.endpoint}:undeployModel"
    assert undeploy.body["deployedModelId"] == first_deployed
    # cleanup comes last: after the new deployment and after the alias moved
    assert _index(fake, "POST", r":mergeVersionAliases$") < fake.requests.index(undeploy)
    assert second.undeployed == [first_deployed]
    [second_deployed], split = _deployed(fake, second.endpoint)
    assert split == {second_deployed: 100}
    assert reg.champion() == "gs://tkfp-bucket/root/run-2/train/model"


def test_canary_keeps_the_previous_deployed_model(fake, cfg):
    assert cfg.vertex.traffic_percentage == 30
    reg = registry(cfg)
    first = reg.publish("gs://tkfp-bucket/root/run-1/train/model")
    [first_deployed], _ = _deployed(fake, first.endpoint)

    fake.clear()
    second = reg.publish("gs://tkfp-bucket/root/run-2/train/model")
    assert fake.find("POST", r":undeployModel$") == []
    assert second.undeployed == []
    ids, split = _deployed(fake, first.endpoint)
    assert ids[0] == first_deployed and len(ids) == 2
    second_deployed = ids[1]
    assert split == {first_deployed: 70, second_deployed: 30}

    # rolling the next version out fully takes every deployed model left without traffic off
    fake.clear()
    full = registry(cfg.override({"vertex.traffic_percentage": 100}))
    third = full.publish("gs://tkfp-bucket/root/run-3/train/model")
    undeploys = fake.find("POST", r":undeployModel$")
    assert [r.body["deployedModelId"] for r in undeploys] == [first_deployed, second_deployed]
    assert third.undeployed == [first_deployed, second_deployed]
    [third_deployed], split = _deployed(fake, first.endpoint)
    assert split == {third_deployed: 100}


def test_champion_is_none_while_no_version_carries_the_alias(fake, cfg):
    from google.cloud import aiplatform

    from torchkfp.vertex import init

    init(cfg.vertex)
    aiplatform.Model.upload(
        display_name=cfg.deploy.model_name,
        artifact_uri="gs://tkfp-bucket/manual/model",
        serving_container_image_uri=cfg.vertex.serving_image,
    )
    assert registry(cfg).champion() is None
    [lookup] = fake.find("GET", "@champion$")
    assert lookup.path.startswith(f"/v1/{LOC}/models/")


def test_vertex_needs_a_project(fake, cfg):
    reg = registry(cfg.override({"vertex.project": None}))
    with pytest.raises(ConfigError, match="vertex.project is required"):
        reg.publish("gs://b/m")
    with pytest.raises(ConfigError, match="vertex.project is required"):
        reg.champion()
    assert fake.requests == []
