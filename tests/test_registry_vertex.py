"""The Vertex AI registry (torchkfp.registry.vertex: Model Registry versions and aliases, the
endpoint's traffic split, the registry's own copy of each version's artifacts) through the
Registry interface, ``open_registry`` with ``deploy.registry='vertex'``, against the local
stand-ins: the real aiplatform SDK sends its real REST requests to tests/fake_vertex.py and the
real google-cloud-storage client talks to fake-gcs-server. The canary / promote / rollback
sequence is in tests/test_canary.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import registry_env as env
from fake_vertex import FakeVertex
from registry_env import LOC, PROJECT, REGION

from torchkfp.config import Config, ConfigError
from torchkfp.errors import ArtifactError
from torchkfp.registry import DeployResult, RegistryError, open_registry
from torchkfp.registry.vertex import VertexDeployError, VertexRegistry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gcs():
    with env.gcs_server() as server:
        yield server


@pytest.fixture()
def fake(gcs, monkeypatch):
    with env.vertex_session(gcs, monkeypatch) as server:
        yield server


@pytest.fixture()
def bucket(fake) -> str:
    return env.new_bucket()


@pytest.fixture()
def cfg(bucket) -> Config:
    cfg = env.vertex_config(bucket, **{"vertex.traffic_percentage": 30})
    assert cfg.deploy.registry == "vertex"
    return cfg


def registry(cfg: Config) -> VertexRegistry:
    reg = open_registry(cfg.deploy, cfg.vertex)
    assert isinstance(reg, VertexRegistry)
    return reg


def run_model(bucket: str, n: int) -> str:
    """A model folder in run ``n``'s pipeline-root folder; its gs:// URI."""
    uri = f"gs://{bucket}/root/run-{n}/train/model"
    env.put_model(uri, f"run-{n}")
    return uri


def _index(fake: FakeVertex, method: str, pattern: str) -> int:
    """Position in fake.requests of the one request with this method matching ``pattern``."""
    [i] = [
        i for i, r in enumerate(fake.requests) if r.method == method and re.search(pattern, r.path)
    ]
    return i


def _assert_alias_moved_after_deploy(fake: FakeVertex, result: DeployResult) -> None:
    """The upload carries no alias; the alias (and "default") move to the new version only
    after its deployModel went through."""
    [up] = fake.find("POST", r"/models:upload$")
    assert "versionAliases" not in up.body["model"]
    merges = fake.find("POST", r":mergeVersionAliases$")
    assert merges[0].path == f"/v1/{result.location}@{result.version}:mergeVersionAliases"
    assert merges[0].body["versionAliases"] == ["champion", "default"]
    upload = _index(fake, "POST", r"/models:upload$")
    deploy = _index(fake, "POST", r":deployModel$")
    assert upload < deploy < fake.requests.index(merges[0]), fake.requests


def test_open_registry_names_the_vertex_registry(cfg):
    reg = registry(cfg)
    assert reg.model_name == "flights-delay" and reg.alias == "champion"
    assert reg.previous_alias == "previous-champion"
    assert reg.describe() == f"Vertex AI Model Registry {PROJECT}/{REGION}"
    assert reg.models_root() == f"gs://{cfg.vertex.pipeline_root[5:].split('/')[0]}/torchkfp-models"


def test_upload_copies_into_the_registry_then_canaries(fake, cfg, bucket):
    reg = registry(cfg)
    assert reg.champion() is None  # no registered model yet
    assert fake.find("GET", r"/models$")[0].query["filter"] == 'display_name="flights-delay"'

    # first version: a new model, a new endpoint, all traffic (nothing to split with)
    src1 = run_model(bucket, 1)
    fake.clear()
    first = reg.publish(src1.replace("gs://", "/gcs/"))  # the deploy step's FUSE path
    assert (first.registry, first.model_name, first.alias, first.champion) == (
        "vertex",
        "flights-delay",
        "champion",
        "1",
    )
    # the artifacts were copied to <models_root>/<model>/<content id>/ and the version points
    # there, not into the run folder
    assert re.fullmatch(
        rf"gs://{bucket}/torchkfp-models/flights-delay/[0-9a-f]{{16}}", first.artifact_uri
    )
    assert env.read_folder(first.artifact_uri) == env.read_folder(src1)
    [up1] = fake.find("POST", r"/models:upload$")
    assert "parentModel" not in up1.body
    m = up1.body["model"]
    assert m["displayName"] == "flights-delay"
    assert m["artifactUri"] == first.artifact_uri
    assert m["versionDescription"] == f"torchkfp: copied from {src1}"
    assert m["containerSpec"]["imageUri"] == cfg.vertex.serving_image
    assert m["containerSpec"]["predictRoute"] == "/predict"
    assert m["containerSpec"]["healthRoute"] == "/health"
    assert m["containerSpec"]["ports"] == [{"containerPort": 8080}]
    assert m["containerSpec"]["env"] == [{"name": "TORCHKFP_SERVING_RUNTIME", "value": "torch"}]
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
    assert reg.champion() == first.artifact_uri
    [first_deployed] = env.endpoint_state(fake, first.endpoint)[0]

    # second version: under the same parent model, a canary with exactly 30/70, no alias move
    fake.clear()
    second = reg.publish(run_model(bucket, 2), labels={"run": "r2"})
    [up2] = fake.find("POST", r"/models:upload$")
    assert up2.body["parentModel"] == first.location
    assert up2.body["model"]["labels"] == {**cfg.vertex.labels, "run": "r2"}
    assert fake.find("POST", r"/endpoints$") == []  # the endpoint is reused
    [dep2] = fake.find("POST", r":deployModel$")
    assert dep2.body["deployedModel"]["model"] == f"{first.location}@2"
    assert dep2.body["trafficSplit"] == {"0": 30, first_deployed: 70}
    assert fake.find("POST", r":mergeVersionAliases$") == []  # the champion stays
    assert (second.version, second.canary, second.champion) == ("2", True, "1")
    assert second.location == first.location  # versions of one registered model
    assert second.artifact_uri != first.artifact_uri
    assert [(d["version"], d["percent"]) for d in second.serving] == [("1", 70), ("2", 30)]

    fake.clear()
    assert reg.champion() == first.artifact_uri
    assert [r.path for r in fake.find("GET", "@")] == [f"/v1/{first.location}@champion"]
    assert env.aliases(fake, first.location) == {"1": ["champion", "default"], "2": []}
    # locate reads any alias; one nobody set is None
    assert reg.locate("default") == first.artifact_uri
    assert reg.locate("challenger") is None


@pytest.mark.parametrize(
    "in_operation, status",
    [(True, "FAILED_PRECONDITION"), (False, "RESOURCE_EXHAUSTED")],
    ids=["operation-error", "rejected"],
)
def test_failed_deploy_leaves_the_alias_on_the_serving_version(
    fake, cfg, bucket, in_operation, status
):
    reg = registry(cfg.override({"vertex.traffic_percentage": 100}))
    first = reg.publish(run_model(bucket, 1))
    before = env.endpoint_state(fake, first.endpoint)

    fake.clear()
    fake.fail_next_deploy("Model server never became ready.", status, in_operation=in_operation)
    with pytest.raises(VertexDeployError) as err:
        reg.publish(run_model(bucket, 2))
    msg = str(err.value)
    assert f"deploying {first.location} version 2 to {first.endpoint} failed" in msg
    assert "alias 'champion' was not moved" in msg
    assert "Model server never became ready." in msg
    assert isinstance(err.value, RegistryError)  # the CLI reports it as one line, exit 1
    assert len(fake.find("POST", r":deployModel$")) == 1
    assert fake.find("POST", r":mergeVersionAliases$") == []
    assert fake.find("POST", r":undeployModel$") == []
    assert env.endpoint_state(fake, first.endpoint) == before  # still serving version 1

    # the gate of the next run compares against version 1, which still serves
    assert reg.champion() == first.artifact_uri
    assert env.aliases(fake, first.location) == {"1": ["champion", "default"], "2": []}

    # a later promotion goes through as usual (version 2 stays registered, never served)
    third = reg.publish(run_model(bucket, 3))
    assert third.version == "3" and third.previous_champion == "1"
    assert reg.champion() == third.artifact_uri


def test_failed_canary_deploy_keeps_the_endpoint_as_it_was(fake, cfg, bucket):
    reg = registry(cfg)
    first = reg.publish(run_model(bucket, 1))
    fake.fail_next_deploy("no capacity", "RESOURCE_EXHAUSTED", in_operation=False)
    with pytest.raises(VertexDeployError, match="alias 'champion' still names version 1"):
        reg.publish(run_model(bucket, 2))
    deployed, split = env.endpoint_state(fake, first.endpoint)
    assert list(deployed.values()) == ["1"] and list(split.values()) == [100]


def test_full_rollout_undeploys_the_previous_deployed_model(fake, cfg, bucket):
    reg = registry(cfg.override({"vertex.traffic_percentage": 100}))
    first = reg.publish(run_model(bucket, 1))
    [first_deployed] = env.endpoint_state(fake, first.endpoint)[0]

    fake.clear()
    second = reg.publish(run_model(bucket, 2))
    [dep2] = fake.find("POST", r":deployModel$")
    assert dep2.body["trafficSplit"] == {"0": 100}  # version 1 is left with no traffic
    _assert_alias_moved_after_deploy(fake, second)
    merges = fake.find("POST", r":mergeVersionAliases$")
    assert [(m.path.rsplit("@", 1)[1], m.body["versionAliases"]) for m in merges] == [
        ("2:mergeVersionAliases", ["champion", "default"]),
        ("1:mergeVersionAliases", ["previous-champion"]),  # what rollback returns to
    ]
    [undeploy] = fake.find("POST", r":undeployModel$")
    assert undeploy.path == f"/v1/{first.endpoint}:undeployModel"
    assert undeploy.body["deployedModelId"] == first_deployed
    # cleanup comes last: after the new deployment and after the aliases moved
    assert fake.requests.index(merges[-1]) < fake.requests.index(undeploy)
    assert [u["deployed_model_id"] for u in second.undeployed] == [first_deployed]
    assert [u["version"] for u in second.undeployed] == ["1"]
    deployed, split = env.endpoint_state(fake, second.endpoint)
    assert list(deployed.values()) == ["2"] and list(split.values()) == [100]
    assert reg.champion() == second.artifact_uri


def test_champion_is_none_while_no_version_carries_the_alias(fake, cfg):
    from google.cloud import aiplatform

    from torchkfp.vertex import init

    init(cfg.vertex)
    aiplatform.Model.upload(
        display_name=cfg.deploy.model_name,
        artifact_uri="gs://tkfp-bucket/manual/model",
        serving_container_image_uri=cfg.vertex.serving_image,
    )
    reg = registry(cfg)
    assert reg.champion() is None and reg.notes == []
    [lookup] = fake.find("GET", "@champion$")
    assert lookup.path.startswith(f"/v1/{LOC}/models/")


def test_vertex_needs_a_project(fake, cfg):
    reg = registry(cfg.override({"vertex.project": None}))
    fake.clear()
    for call in (lambda: reg.publish("gs://b/m"), reg.champion, reg.promote, reg.rollback):
        with pytest.raises(ConfigError, match="vertex.project is required"):
            call()
    assert fake.requests == []


# ---- the registry's own copy of the artifacts ----------------------------------------------
def test_models_root_setting_and_content_addressed_copies(fake, cfg, bucket):
    root = f"gs://{bucket}/registry/models"
    reg = registry(
        cfg.override({"vertex.models_root": root + "/", "vertex.traffic_percentage": 100})
    )
    src = run_model(bucket, 1)
    first = reg.publish(src)
    assert first.artifact_uri.startswith(f"{root}/flights-delay/")
    # the same content again (a rerun): the same folder, copied once
    again = reg.publish(src)
    assert again.artifact_uri == first.artifact_uri and again.version == "2"
    # a different model: its own folder
    other = reg.publish(run_model(bucket, 2))
    assert other.artifact_uri != first.artifact_uri
    folders = {
        f"gs://{bucket}/{b.name.rsplit('/', 1)[0]}"
        for b in env.storage_client().list_blobs(bucket, prefix="registry/models/")
    }
    assert folders == {first.artifact_uri, other.artifact_uri}
    # the run folder can go (a lifecycle rule): the champion does not depend on it
    env.delete_folder(f"gs://{bucket}/root")
    assert reg.champion() == other.artifact_uri and reg.notes == []


def test_a_half_copied_folder_is_completed_not_trusted(fake, cfg, bucket):
    reg = registry(cfg)
    src = run_model(bucket, 1)
    dest = reg.copy_to_models_root(src)
    env.delete_folder(dest)
    env.put_model(dest, "run-1", marker=False)  # an earlier copy that stopped before _SUCCESS
    client = env.storage_client()
    client.bucket(bucket).blob(dest[len(f"gs://{bucket}/") :] + "/model.pt").upload_from_string(
        b"truncated"
    )
    assert reg.copy_to_models_root(src) == dest
    assert env.read_folder(dest) == env.read_folder(src)


def test_an_incomplete_model_is_refused_before_anything_is_registered(fake, cfg, bucket):
    reg = registry(cfg)
    src = f"gs://{bucket}/root/run-9/train/model"
    env.put_model(src, "run-9", marker=False)  # training did not finish
    fake.clear()
    with pytest.raises(ArtifactError, match=r"incomplete \(no _SUCCESS marker\).*train again"):
        reg.publish(src)
    with pytest.raises(ArtifactError, match="no files there"):
        reg.publish(f"gs://{bucket}/root/nowhere")
    assert fake.find("POST", r"/models:upload$") == []
    assert list(env.storage_client().list_blobs(bucket, prefix="torchkfp-models/")) == []


def test_a_local_model_folder_is_verified_and_uploaded(fake, cfg, bucket, trained_model):
    reg = registry(cfg)
    r = reg.publish(trained_model)
    local = {
        p.relative_to(trained_model).as_posix(): p.read_bytes()
        for p in Path(trained_model).rglob("*")
        if p.is_file()
    }
    assert env.read_folder(r.artifact_uri) == local


def test_models_root_needs_a_bucket(fake, cfg):
    reg = registry(cfg.override({"vertex.pipeline_root": None}))
    with pytest.raises(ConfigError, match="vertex.models_root .* is required to publish"):
        reg.publish("gs://b/m")


# ---- names that are not unique -----------------------------------------------------------
def test_two_models_with_the_display_name_are_refused(fake, cfg, bucket):
    from google.cloud import aiplatform

    from torchkfp.vertex import init

    init(cfg.vertex)
    made = [
        aiplatform.Model.upload(
            display_name=cfg.deploy.model_name,
            artifact_uri=f"gs://{bucket}/manual/{i}",
            serving_container_image_uri=cfg.vertex.serving_image,
        )
        for i in range(2)
    ]
    reg = registry(cfg)
    fake.clear()
    for call in (reg.champion, lambda: reg.publish(run_model(bucket, 1)), reg.promote):
        with pytest.raises(RegistryError) as err:
            call()
        msg = str(err.value)
        assert "2 Vertex AI models are named 'flights-delay' (deploy.model_name)" in msg
        for m in made:
            assert m.resource_name in msg
        assert "delete or rename the others" in msg and "set deploy.model_name" in msg
    assert fake.find("POST", r"/models:upload$") == []


def test_two_endpoints_with_the_display_name_are_refused_before_any_upload(fake, cfg, bucket):
    from google.cloud import aiplatform

    from torchkfp.vertex import init

    init(cfg.vertex)
    made = [
        aiplatform.Endpoint.create(display_name=cfg.vertex.endpoint_display_name) for _ in range(2)
    ]
    reg = registry(cfg)
    fake.clear()
    with pytest.raises(RegistryError) as err:
        reg.publish(run_model(bucket, 1))
    msg = str(err.value)
    assert "2 Vertex AI endpoints are named 'flights-delay' (vertex.endpoint_display_name)" in msg
    assert all(e.resource_name in msg for e in made)
    assert "set vertex.endpoint_display_name to a name no other resource has" in msg
    assert fake.find("POST", r"/models:upload$") == [] and fake.find("POST", ":deployModel") == []
    with pytest.raises(RegistryError, match="2 Vertex AI endpoints"):
        reg.status()


# ---- a champion that is gone ---------------------------------------------------------------
def test_a_champion_whose_artifacts_were_deleted_is_no_usable_champion(fake, cfg, bucket):
    reg = registry(cfg.override({"vertex.traffic_percentage": 100}))
    first = reg.publish(run_model(bucket, 1))
    env.delete_folder(first.artifact_uri)  # a lifecycle rule, or a hand
    assert reg.champion() is None
    [note] = reg.notes
    assert f"alias 'champion' names {first.location} version 1" in note
    assert f"has no artifacts at {first.artifact_uri} any more" in note
    assert "the next promotion moves the alias" in note
    assert reg.locate("champion") == first.artifact_uri  # asked for by name: the URI
    # the next promotion repairs it
    second = reg.publish(run_model(bucket, 2))
    assert reg.champion() == second.artifact_uri and reg.notes == []
    # but rolling back to the gone version is refused, before anything changes
    fake.clear()
    with pytest.raises(RegistryError, match="cannot roll back to .* version 1 .* are gone"):
        reg.rollback()
    assert fake.find("POST", ":deployModel|:mergeVersionAliases|:undeployModel") == []


def test_evaluate_against_a_vertex_champion(fake, cfg, bucket, stage_outputs):
    """The gate downloads the champion from Cloud Storage (no FUSE mount here) and compares;
    once its artifacts are deleted it gates on the thresholds, saying why."""
    from torchkfp.evaluation import NO_USABLE_CHAMPION, evaluate_against_registry

    reg = registry(cfg.override({"vertex.traffic_percentage": 100}))
    src = f"gs://{bucket}/root/run-1/train/model"
    env.upload_folder(stage_outputs["model"], src)
    published = reg.publish(src)
    ec = stage_outputs["config"].evaluate
    r = evaluate_against_registry(ec, reg, stage_outputs["model"], stage_outputs["dataset"])
    assert r.champion == published.artifact_uri
    assert r.champion_metrics["roc_auc"] == pytest.approx(r.metrics["roc_auc"])
    assert not r.promote and "does not beat champion" in r.reasons[0] and r.notes == []

    env.delete_folder(published.artifact_uri)
    r = evaluate_against_registry(ec, reg, stage_outputs["model"], stage_outputs["dataset"])
    assert r.promote and r.champion is None and r.champion_metrics is None
    assert r.reasons[:2] == ["promote", NO_USABLE_CHAMPION]
    [note] = r.notes
    assert "version 1" in note and published.artifact_uri in note and note in r.reasons
    assert r.to_dict()["notes"] == [note]
