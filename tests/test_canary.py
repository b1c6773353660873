"""Canary, promote and rollback, with the same meaning on the local registry and on Vertex AI
(the real SDKs against tests/fake_vertex.py and fake-gcs-server): the sequence of the issue
(publish three times with 10%, then promote, then roll back) checks, after every step, what the
endpoint serves with which share and where the champion alias is; plus the refusals (no canary,
no previous champion) and the ``torchkfp promote|rollback|traffic`` commands."""

from __future__ import annotations

import json

import pytest
import registry_env as env
from typer.testing import CliRunner

from torchkfp.cli import app
from torchkfp.config import Config
from torchkfp.errors import RegistryError
from torchkfp.registry import open_registry
from torchkfp.registry.local import LocalRegistry
from torchkfp.registry.vertex import VertexRegistry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gcs():
    with env.gcs_server() as server:
        yield server


@pytest.fixture()
def fake(gcs, monkeypatch):
    with env.vertex_session(gcs, monkeypatch) as server:
        yield server


class Local:
    """The local registry, publishing copies of a trained model."""

    def __init__(self, cfg: Config, model: str):
        self.reg = open_registry(cfg.deploy, cfg.vertex)
        assert isinstance(self.reg, LocalRegistry)
        self.model = model
        self.location: dict[str, str] = {}
        """version -> the model folder ``champion()`` answers for it."""

    def publish(self, n: int):
        r = self.reg.publish(self.model)
        self.location[r.version] = r.location
        return r

    def serving(self) -> dict[str, int]:
        """version -> percent, from the registry folder itself."""
        return {str(v): pct for v, pct in self.reg.traffic().items()}

    def aliases(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.reg.aliases().items()}


class Vertex:
    """The Vertex registry, publishing model folders from run folders of the fake bucket; what
    serves is read from the fake endpoint."""

    def __init__(self, cfg: Config, fake, bucket: str):
        self.reg = open_registry(cfg.deploy, cfg.vertex)
        assert isinstance(self.reg, VertexRegistry)
        self.fake, self.bucket = fake, bucket
        self.endpoint = self.model = None
        self.location: dict[str, str] = {}

    def publish(self, n: int):
        src = f"gs://{self.bucket}/root/run-{n}/train/model"
        env.put_model(src, f"run-{n}")
        r = self.reg.publish(src.replace("gs://", "/gcs/"))  # as the deploy step passes it
        self.endpoint, self.model = r.endpoint, r.location
        self.location[r.version] = r.artifact_uri
        return r

    def serving(self) -> dict[str, int]:
        deployed, split = env.endpoint_state(self.fake, self.endpoint)
        assert set(split) <= set(deployed)
        return {deployed[d]: split.get(d, 0) for d in deployed}  # every deployed model

    def aliases(self) -> dict[str, str]:
        out = {}
        for version, names in env.aliases(self.fake, self.model).items():
            out.update({a: version for a in names if a != "default"})
        return out


@pytest.fixture(params=["local", "vertex"])
def backend(request, tmp_path):
    if request.param == "local":
        cfg = Config().override(
            {"deploy.registry_dir": str(tmp_path / "registry"), "vertex.traffic_percentage": 10}
        )
        return Local(cfg, request.getfixturevalue("trained_model"))
    fake = request.getfixturevalue("fake")
    bucket = env.new_bucket()
    return Vertex(env.vertex_config(bucket, **{"vertex.traffic_percentage": 10}), fake, bucket)


def test_canary_sequence_promote_and_rollback(backend):
    # the first version has nothing to split with: it takes all traffic and the alias
    first = backend.publish(1)
    assert (first.version, first.champion, first.canary) == ("1", "1", False)
    assert backend.serving() == {"1": 100}
    assert backend.aliases() == {"champion": "1"}

    # three promotions with 10%: exactly champion 90 + the newest canary 10, older canaries
    # undeployed, the champion alias unchanged
    for n in (2, 3, 4):
        r = backend.publish(n)
        assert (r.action, r.version, r.canary, r.champion) == ("publish", str(n), True, "1")
        assert r.previous_champion is None and r.previous == "1"
        assert backend.serving() == {"1": 90, str(n): 10}, f"after publish {n}"
        assert {d["version"]: d["percent"] for d in r.serving} == {"1": 90, str(n): 10}
        assert backend.aliases() == {"champion": "1"}
        assert [u["version"] for u in r.undeployed] == ([] if n == 2 else [str(n - 1)])

    # promote: the canary takes 100% alone and is the champion; the old one is previous
    p = backend.reg.promote()
    assert (p.action, p.version, p.champion, p.previous_champion, p.previous) == (
        "promote",
        "4",
        "4",
        "1",
        "1",
    )
    assert backend.serving() == {"4": 100}
    assert [d["version"] for d in p.serving] == ["4"]
    assert [u["version"] for u in p.undeployed] == ["1"]
    assert backend.aliases() == {"champion": "4", "previous-champion": "1"}
    assert backend.reg.champion() == backend.location["4"]  # what the next gate compares with

    # rollback: the previous champion takes 100% alone and the alias again
    b = backend.reg.rollback()
    assert (b.action, b.version, b.champion, b.previous_champion, b.previous) == (
        "rollback",
        "1",
        "1",
        None,
        "4",
    )
    assert backend.serving() == {"1": 100}
    assert [u["version"] for u in b.undeployed] == ["4"]
    assert backend.aliases() == {"champion": "1"}
    assert backend.reg.champion() == backend.location["1"]

    # nothing left to do: each refusal names what is missing and changes nothing
    with pytest.raises(RegistryError, match="no previous champion to roll back to"):
        backend.reg.rollback()
    with pytest.raises(RegistryError, match="no canary to promote.*champion is version 1"):
        backend.reg.promote()
    assert backend.serving() == {"1": 100}
    assert backend.aliases() == {"champion": "1"}
    status = backend.reg.status()
    assert (status["champion"], status["previous_champion"]) == ("1", None)
    assert [(d["version"], d["percent"]) for d in status["serving"]] == [("1", 100)]


def test_full_rollout_after_a_canary_replaces_both(backend):
    """A version published at 100% while a canary runs: it takes everything, the champion and
    the canary are undeployed, the alias moves and the old champion becomes previous."""
    backend.publish(1)
    backend.publish(2)  # canary
    assert backend.serving() == {"1": 90, "2": 10}
    _set_traffic(backend, 100)
    r = backend.publish(3)
    assert (r.canary, r.champion, r.previous_champion) == (False, "3", "1")
    assert backend.serving() == {"3": 100}
    assert sorted(u["version"] for u in r.undeployed) == ["1", "2"]
    assert backend.aliases() == {"champion": "3", "previous-champion": "1"}
    # rolling back skips the canary that never became champion
    assert backend.reg.rollback().version == "1"
    assert backend.serving() == {"1": 100}


def _set_traffic(backend, pct: int) -> None:
    if isinstance(backend, Vertex):
        backend.reg.vertex = backend.reg.vertex.model_copy(update={"traffic_percentage": pct})
    else:
        backend.reg.traffic_percentage = pct


def test_rollback_with_a_canary_running_drops_the_canary(backend):
    _set_traffic(backend, 100)
    backend.publish(1)
    backend.publish(2)  # takes over: the previous champion is 1
    _set_traffic(backend, 10)
    backend.publish(3)  # a canary next to 2
    assert backend.serving() == {"2": 90, "3": 10}
    assert backend.aliases() == {"champion": "2", "previous-champion": "1"}
    r = backend.reg.rollback()
    assert (r.version, r.champion, r.previous_champion, r.previous) == ("1", "1", None, "2")
    assert sorted(u["version"] for u in r.undeployed) == ["2", "3"]
    assert backend.serving() == {"1": 100}
    assert backend.aliases() == {"champion": "1"}
    with pytest.raises(RegistryError, match="no previous champion"):
        backend.reg.rollback()


def test_the_deploy_component_rolls_out_with_the_configured_traffic(tmp_path, trained_model):
    """The DAG's deploy step passes the vertex section through: the second promotion is a
    canary next to the first."""
    from kfp import dsl
    from torchkfp.components import deploy

    from torchkfp.stage_settings import section_parameter

    cfg = Config().override(
        {"deploy.registry_dir": str(tmp_path / "registry"), "vertex.traffic_percentage": 10}
    )
    model = dsl.Model(name="model", uri=trained_model)
    for n in ("1", "2"):
        version, location, _ = deploy.python_func(
            deploy_config=section_parameter(cfg.deploy),
            vertex_config=section_parameter(cfg.vertex),
            model=model,
        )
        assert version == n and location.endswith(f"/versions/{n}")
    reg = LocalRegistry(tmp_path / "registry", "flights-delay")
    assert reg.traffic() == {1: 90, 2: 10} and reg.aliases() == {"champion": 1}


# ---- the commands --------------------------------------------------------------------------
def _invoke(*args: str):
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_promote_rollback_and_traffic_commands_on_the_local_registry(tmp_path, trained_model):
    registry = tmp_path / "registry"
    conf = tmp_path / "local.yaml"
    conf.write_text(f"deploy:\n  registry_dir: {registry}\nvertex:\n  traffic_percentage: 25\n")
    common = ("--config", str(conf))

    code, out, err = _invoke("promote", *common)
    assert code == 1 and out == ""
    assert "error: promote: no canary to promote" in err and "no champion" in err

    reg = LocalRegistry(registry, "flights-delay", traffic_percentage=25)
    reg.publish(trained_model)
    reg.publish(trained_model)
    code, out, err = _invoke("traffic", *common)
    assert code == 0, err
    assert json.loads(out)["serving"] == [
        {"version": "1", "percent": 75},
        {"version": "2", "percent": 25},
    ]

    code, out, err = _invoke("promote", *common)
    assert code == 0, err
    got = json.loads(out)
    assert (got["action"], got["version"], got["champion"], got["previous_champion"]) == (
        "promote",
        "2",
        "2",
        "1",
    )
    assert got["serving"] == [{"version": "2", "percent": 100}]
    assert got["undeployed"] == [{"version": "1"}]

    code, out, err = _invoke("rollback", *common)
    assert code == 0, err
    got = json.loads(out)
    assert (got["version"], got["champion"], got["previous_champion"]) == ("1", "1", None)
    assert got["serving"] == [{"version": "1", "percent": 100}]

    code, out, err = _invoke("rollback", *common)
    assert code == 1 and out == ""
    assert err.startswith("error: rollback: no previous champion to roll back to")
    assert "'previous-champion' is unset" in err

    code, out, err = _invoke("promote", *common, "--set", "deploy.alias=Bad Alias")
    assert code == 2 and "deploy.alias" in err


def test_promote_and_rollback_commands_on_vertex(fake, tmp_path):
    bucket = env.new_bucket()
    cfg = env.vertex_config(bucket, **{"vertex.traffic_percentage": 10})
    reg = open_registry(cfg.deploy, cfg.vertex)
    for n in (1, 2):
        src = f"gs://{bucket}/root/run-{n}/train/model"
        env.put_model(src, f"r{n}")
        first = reg.publish(src)
    args = ["--config", str(env.EXAMPLE)]
    for k, v in {
        "vertex.project": env.PROJECT,
        "vertex.region": env.REGION,
        "vertex.pipeline_root": f"gs://{bucket}/root",
    }.items():
        args += ["--set", f"{k}={v}"]

    code, out, err = _invoke("promote", *args)
    assert code == 0, err
    got = json.loads(out)  # stdout holds only the JSON (the SDK's logs go to stderr)
    assert (got["registry"], got["champion"], got["previous_champion"]) == ("vertex", "2", "1")
    assert [(d["version"], d["percent"]) for d in got["serving"]] == [("2", 100)]
    assert got["endpoint"] == first.endpoint
    assert env.endpoint_state(fake, first.endpoint)[1] == {
        got["serving"][0]["deployed_model_id"]: 100
    }

    code, out, err = _invoke("rollback", *args)
    assert code == 0, err
    assert json.loads(out)["champion"] == "1"
    code, out, err = _invoke("traffic", *args)
    assert code == 0, err
    assert [(d["version"], d["percent"]) for d in json.loads(out)["serving"]] == [("1", 100)]

    code, out, err = _invoke("rollback", *args)
    assert code == 1 and out == "" and "no previous champion to roll back to" in err
