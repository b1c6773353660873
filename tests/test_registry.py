"""torchkfp.registry with the local folder registry: versions and aliases, and the Registry
interface (open_registry, locate, champion, publish) that evaluation, deploy and serving use."""

import errno
import json
import os
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


# ---- rollout: traffic.json, the previous champion, promote and rollback -------------------------
# (the full canary sequence, the same on Vertex AI, is in tests/test_canary.py)
def test_open_registry_rolls_out_with_the_configured_traffic(small_config):
    reg = open_registry(
        small_config.deploy, small_config.override({"vertex.traffic_percentage": 15}).vertex
    )
    assert isinstance(reg, LocalRegistry) and reg.traffic_percentage == 15
    assert open_registry(small_config.deploy).traffic_percentage == 100  # the default
    with pytest.raises(RegistryError, match="not a whole number from 1 to 100"):
        LocalRegistry(small_config.deploy.registry_dir, "m", traffic_percentage=0)


def test_traffic_json_records_what_serves(tmp_path, trained_model):
    reg = LocalRegistry(tmp_path, "m", traffic_percentage=20)
    assert reg.traffic() == {} and reg.status()["serving"] == []
    reg.publish(trained_model)
    assert json.loads(reg.traffic_file.read_text()) == {"1": 100}
    reg.publish(trained_model)
    assert json.loads(reg.traffic_file.read_text()) == {"1": 80, "2": 20}
    assert reg.traffic() == {1: 80, 2: 20}
    assert reg.status() == {
        "registry": "local",
        "model_name": "m",
        "location": str(reg.root),
        "alias": "champion",
        "champion": "1",
        "previous_champion": None,
        "serving": [{"version": "1", "percent": 80}, {"version": "2", "percent": 20}],
        "versions": ["1", "2"],
    }


def test_a_registry_without_traffic_json_reads_as_its_champion_serving(tmp_path, trained_model):
    """Registries written before traffic was recorded: the champion serves 100%, so the next
    canary splits with it."""
    reg = LocalRegistry(tmp_path, "m", traffic_percentage=10)
    reg.set_alias("champion", reg.register(trained_model))
    assert not reg.traffic_file.exists() and reg.traffic() == {1: 100}
    r = reg.publish(trained_model)
    assert r.canary and reg.traffic() == {1: 90, 2: 10} and reg.aliases() == {"champion": 1}


def test_a_full_rollout_records_the_previous_champion(tmp_path, trained_model):
    reg = LocalRegistry(tmp_path, "m", alias="prod")
    reg.publish(trained_model)
    r = reg.publish(trained_model)
    assert (r.champion, r.previous_champion, r.undeployed) == ("2", "1", [{"version": "1"}])
    assert reg.aliases() == {"prod": 2, "previous-prod": 1}
    assert reg.locate("previous-prod") == str(reg.versions_dir / "1")  # serve --alias works


def test_a_gone_champion_is_not_recorded_as_previous(tmp_path, trained_model):
    reg = LocalRegistry(tmp_path, "m")
    reg.publish(trained_model)
    reg.publish(trained_model)
    shutil.rmtree(reg.versions_dir / "2")  # the champion's folder, deleted by hand
    r = reg.publish(trained_model)
    assert (r.version, r.champion, r.previous_champion) == ("3", "3", None)
    assert reg.aliases() == {"champion": 3}
    with pytest.raises(RegistryError, match="no previous champion to roll back to"):
        reg.rollback()


def test_rollback_to_a_damaged_version_changes_nothing(tmp_path, trained_model):
    reg = LocalRegistry(tmp_path, "m")
    reg.publish(trained_model)
    reg.publish(trained_model)
    (reg.versions_dir / "1" / model_artifact.SPEC_FILE).write_text("{}")
    before = (reg.aliases_file.read_text(), reg.traffic_file.read_text())
    with pytest.raises(RegistryError, match="previous champion .* fails verification"):
        reg.rollback()
    shutil.rmtree(reg.versions_dir / "1")
    with pytest.raises(RegistryError, match="version 1 no longer exists"):
        reg.rollback()
    assert (reg.aliases_file.read_text(), reg.traffic_file.read_text()) == before


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"1": ', "is not valid JSON"),
        ("[1]", "holds a JSON list, not an object"),
        ('{"01": 100}', "has the key '01', not a version number"),
        ('{"1": 50.5, "2": 49.5}', "not a whole percentage"),
        ('{"1": true}', "not a whole percentage"),
        ('{"1": 90}', "adds up to 90%, not 100%"),
    ],
)
def test_a_broken_traffic_json_is_refused_before_anything_is_copied(
    tmp_path, trained_model, content, problem
):
    reg = LocalRegistry(tmp_path, "m")
    reg.publish(trained_model)
    reg.traffic_file.write_text(content)
    for call in (lambda: reg.publish(trained_model), reg.promote, reg.rollback, reg.status):
        with pytest.raises(RegistryError) as err:
            call()
        msg = str(err.value)
        assert str(reg.traffic_file) in msg and problem in msg, msg
        assert "Repair it" in msg and "or delete the file" in msg
    assert reg.versions() == [1]


def test_a_failed_alias_write_undoes_the_traffic_write(tmp_path, trained_model, monkeypatch):
    reg = LocalRegistry(tmp_path, "m", traffic_percentage=100)
    reg.publish(trained_model)
    before = (reg.aliases_file.read_text(), reg.traffic_file.read_text())
    real = artifacts.write_json

    def full_disk_for_aliases(path, obj):
        if str(path).endswith("aliases.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, obj)

    monkeypatch.setattr(artifacts, "write_json", full_disk_for_aliases)
    with pytest.raises(RegistryError, match="version 2 was registered, but rolling out.*No spa"):
        reg.publish(trained_model)
    assert (reg.aliases_file.read_text(), reg.traffic_file.read_text()) == before


def test_promote_and_rollback_refusals_name_the_state(tmp_path, trained_model):
    reg = LocalRegistry(tmp_path, "m")
    with pytest.raises(RegistryError, match="no canary to promote .*no champion, serving: nothing"):
        reg.promote()
    reg.publish(trained_model)
    with pytest.raises(
        RegistryError, match="no canary to promote .*champion is version 1, serving: version 1 100%"
    ):
        reg.promote()
    with pytest.raises(RegistryError, match="alias 'previous-champion' is unset"):
        reg.rollback()
