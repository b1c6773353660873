"""torchkfp.registry with the local folder registry: versions and aliases, and the Registry
interface (open_registry, locate, champion, publish) that evaluation, deploy and serving use."""

import shutil

import pytest

from torchkfp import artifacts
from torchkfp.artifacts import model as model_artifact
from torchkfp.errors import ArtifactError
from torchkfp.registry import DeployResult, RegistryError, open_registry
from torchkfp.registry.local import LocalRegistry


def test_local_registry_versions_and_aliases(tmp_path, trained_model):
    reg = LocalRegistry(tmp_path, "m")
    assert reg.resolve("champion") is None
    v1 = reg.register(trained_model)
    assert reg.set_alias("champion", v1) is None
    v2 = reg.register(trained_model, labels={"run": "r2"})
    assert reg.set_alias("champion", v2) == v1
    assert reg.versions() == [1, 2] and reg.aliases() == {"champion": 2}
    assert artifacts.require(reg.resolve("champion"), model_artifact.KIND)
    assert reg.resolve(1) == reg.resolve("1") == reg.versions_dir / "1"
    info = reg.version_info(2)
    assert info["version"] == 2 and info["source"] == trained_model
    assert info["labels"] == {"run": "r2"}
    assert info["data_fingerprint"] == artifacts.require(trained_model, "model")["data_fingerprint"]
    with pytest.raises(RegistryError):
        reg.set_alias("champion", 9)
    with pytest.raises(RegistryError, match="version 9 does not exist"):
        reg.resolve(9)


def test_open_registry_is_the_local_folder_by_default(small_config):
    reg = open_registry(small_config.deploy)
    assert isinstance(reg, LocalRegistry)
    assert reg.root == LocalRegistry(small_config.deploy.registry_dir, "flights-delay").root
    assert reg.alias == small_config.deploy.alias == "champion"
    assert reg.describe().startswith("local registry ")


def test_publish_moves_the_alias_and_locate_finds_it(small_config, trained_model):
    reg = open_registry(small_config.deploy, small_config.vertex)
    assert reg.champion() is None and reg.locate("champion") is None

    first = reg.publish(trained_model)
    assert isinstance(first, DeployResult)
    assert (first.registry, first.model_name, first.version, first.alias, first.previous) == (
        "local",
        "flights-delay",
        "1",
        "champion",
        None,
    )
    assert first.endpoint is None and first.undeployed == [] and first.seconds >= 0
    assert artifacts.require(first.location, model_artifact.KIND)
    assert reg.champion() == reg.locate("champion") == first.location

    second = reg.publish(trained_model, labels={"run": "2"})
    assert second.version == "2" and second.previous == "1"
    assert reg.champion() == second.location != first.location
    assert second.to_dict()["location"] == second.location
    assert reg.locate("challenger") is None  # an alias nobody set


def test_publish_uses_the_configured_alias(small_config, trained_model):
    cfg = small_config.override({"deploy.alias": "prod", "deploy.model_name": "other"})
    reg = open_registry(cfg.deploy)
    r = reg.publish(trained_model)
    assert r.alias == "prod" and r.model_name == "other"
    assert reg.champion() == reg.locate("prod") == r.location
    assert reg.locate("champion") is None
    assert open_registry(small_config.deploy).champion() is None  # another model name


def test_publish_refuses_an_incomplete_model_and_registers_nothing(
    small_config, trained_model, tmp_path
):
    broken = tmp_path / "model"
    shutil.copytree(trained_model, broken)
    (broken / artifacts.MARKER).unlink()
    reg = open_registry(small_config.deploy)
    with pytest.raises(ArtifactError, match="incomplete"):
        reg.publish(str(broken))
    assert reg.champion() is None
    assert LocalRegistry(small_config.deploy.registry_dir, "flights-delay").versions() == []


def test_alias_naming_a_missing_version_is_no_champion_until_the_next_promotion(
    small_config, trained_model
):
    reg = open_registry(small_config.deploy)
    r = reg.publish(trained_model)
    shutil.rmtree(r.location)
    with pytest.raises(RegistryError, match="version 1 does not exist"):
        reg.locate("champion")  # asked for by name: an error
    # the gate's question: no champion (with the reason), so evaluate does not fail forever
    assert reg.champion() is None
    assert "version 1, which no longer exists" in reg.notes[0]
    again = reg.publish(trained_model)  # the next promotion repairs the alias
    assert again.version == "2" and again.previous == "1"  # 1 is not reused
    assert reg.champion() == again.location and reg.notes == []
