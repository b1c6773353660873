"""Vertex AI Model Registry (versions under one parent model, aliases) and the Endpoint the
versions serve from, with the rollout rules of :mod:`torchkfp.registry.base`:

- ``publish`` copies the model artifact folder into the registry's own location,
  ``<vertex.models_root>/<model name>/<content id>/`` (default ``gs://<bucket of
  vertex.pipeline_root>/torchkfp-models``), uploads the version with that ``artifact_uri`` (so
  no version points into a run's pipeline-root folder, which a bucket lifecycle rule may
  delete), and deploys it: below 100 % as a canary next to the deployed champion (the endpoint's
  traffic split is set to exactly ``{champion: 100-p, canary: p}``), else as the new champion;
- ``promote`` and ``rollback`` move the traffic split and the aliases (``champion`` and
  ``default`` together; ``previous-champion`` names what rollback returns to);
- every deployed model left out of the new split is undeployed, so none keeps holding nodes.

The model and the endpoint are found by display name (``deploy.model_name``,
``vertex.endpoint_display_name``); two resources with the same name are refused, never guessed.

Everything goes through the google-cloud-aiplatform and google-cloud-storage SDKs, imported
inside the methods; tests drive the real SDKs against a local server at their REST transport
boundary (tests/fake_vertex.py) and fake-gcs-server.
"""

from __future__ import annotations

import time
from typing import Any

from torchkfp.artifacts import MARKER, fuse_to_gcs
from torchkfp.config import ConfigError, DeployConfig, VertexConfig
from torchkfp.errors import RegistryError
from torchkfp.images import check_image
from torchkfp.registry import gcs as registry_gcs
from torchkfp.registry.base import Deployed, DeployResult, previous_alias
from torchkfp.vertex import init

MODELS_FOLDER = "torchkfp-models"
"""Default registry location in the pipeline root's bucket: ``gs://BUCKET/torchkfp-models``."""


class VertexDeployError(RegistryError):
    """Deploying a version failed, or the steps after it (alias move, cleanup) did."""


def _not_found(e: BaseException) -> bool:
    return type(e).__name__ == "NotFound"


class VertexRegistry:
    def __init__(self, deploy: DeployConfig, vertex: VertexConfig):
        self.model_name = deploy.model_name
        self.alias = deploy.alias
        self.previous_alias = previous_alias(deploy.alias)
        self.vertex = vertex
        self.notes: list[str] = []
        """Why the last ``champion()`` found no usable champion, for reports."""

    def describe(self) -> str:
        return f"Vertex AI Model Registry {self.vertex.project}/{self.vertex.region}"

    def _init(self) -> None:
        init(self.vertex)

    def models_root(self) -> str:
        """The gs:// folder version artifacts are copied to (``vertex.models_root``, default
        ``gs://<bucket of vertex.pipeline_root>/torchkfp-models``)."""
        v = self.vertex
        if v.models_root:
            return v.models_root.rstrip("/")
        if v.pipeline_root:
            bucket, _ = registry_gcs.split_uri(v.pipeline_root)
            return f"gs://{bucket}/{MODELS_FOLDER}"
        raise ConfigError(
            "vertex.models_root (or vertex.pipeline_root, whose bucket it defaults to) is "
            "required to publish a model: the registry keeps a copy of each version there"
        )

    # ---- lookups -------------------------------------------------------------------------
    def _ambiguous(self, kind: str, setting: str, name: str, found: list[Any]) -> RegistryError:
        listed = "; ".join(
            f"{r.resource_name} (created {getattr(r, 'create_time', '?')})" for r in found
        )
        return RegistryError(
            f"{len(found)} Vertex AI {kind}s are named {name!r} ({setting}) in "
            f"{self.vertex.project}/{self.vertex.region}: {listed}. torchkfp will not guess "
            f"which one is yours: delete or rename the others (in the console, or with `gcloud "
            f"ai {kind}s delete ID --region={self.vertex.region}`), or set {setting} to a "
            "name no other resource has"
        )

    def parent_model(self):
        """The registered model (all versions) named ``deploy.model_name``, or None;
        RegistryError when several models carry that display name."""
        from google.cloud import aiplatform

        models = aiplatform.Model.list(filter=f'display_name="{self.model_name}"')
        if len(models) > 1:
            raise self._ambiguous("model", "deploy.model_name", self.model_name, models)
        return models[0] if models else None

    def endpoint(self, create: bool = False):
        """The endpoint named ``vertex.endpoint_display_name`` (created when ``create`` and
        there is none; else None); RegistryError when several endpoints carry that name."""
        from google.cloud import aiplatform

        v = self.vertex
        found = aiplatform.Endpoint.list(filter=f'display_name="{v.endpoint_display_name}"')
        if len(found) > 1:
            raise self._ambiguous(
                "endpoint", "vertex.endpoint_display_name", v.endpoint_display_name, found
            )
        if found:
            return found[0]
        if not create:
            return None
        return aiplatform.Endpoint.create(
            display_name=v.endpoint_display_name, labels=v.labels or None
        )

    def _version(self, parent, alias: str):
        """The version of ``parent`` (a registered model, or its resource name) that carries
        ``alias`` (None: no version does)."""
        from google.cloud import aiplatform

        name = parent if isinstance(parent, str) else parent.resource_name
        try:
            return aiplatform.Model(model_name=f"{name}@{alias}")
        except Exception as e:  # the alias is unset: NotFound from the API
            if _not_found(e):
                return None
            raise

    @staticmethod
    def _deployed(endpoint, model_id: str | None) -> list[Deployed]:
        """The endpoint's deployed models with their traffic share; ``version`` is set for
        versions of the registered model ``model_id`` (its resource id)."""
        models = endpoint.list_models()  # syncs the endpoint from the API
        split = dict(endpoint.gca_resource.traffic_split)
        out = []
        for d in models:
            base, _, at = d.model.partition("@")
            version = d.model_version_id or (at if at.isdigit() else None)
            ours = model_id is not None and base.rsplit("/", 1)[-1] == model_id
            out.append(Deployed(version if ours else None, split.get(d.id, 0), d.id, base))
        return out

    def locate(self, alias: str) -> str | None:
        """The gs:// artifact URI of the version ``alias`` names (None: no such version)."""
        self._init()
        parent = self.parent_model()
        if parent is None:
            return None
        version = self._version(parent, alias)
        return None if version is None else version.uri

    def champion(self) -> str | None:
        """``locate(deploy.alias)``, except that a champion whose artifacts are gone (deleted
        from its artifact URI, e.g. by a bucket lifecycle rule on an old pipeline root) or whose
        artifact URI is not a gs:// folder is "no usable champion": None, with the reason in
        ``notes`` and logged. Evaluation then gates on the absolute thresholds alone and the
        next promotion moves the alias, which repairs it; failing instead would fail every
        later run in evaluate, with no way to promote a replacement."""
        import logging

        self.notes = []
        self._init()
        parent = self.parent_model()
        if parent is None:
            return None
        version = self._version(parent, self.alias)
        if version is None:
            return None
        uri = version.uri
        if not uri or not uri.startswith("gs://"):
            problem = f"has the artifact URI {uri!r}, not a gs:// folder"
        elif not registry_gcs.is_complete(registry_gcs.client(self.vertex.project), uri):
            problem = (
                f"has no artifacts at {uri} any more (no {MARKER}: deleted, e.g. by a bucket "
                "lifecycle rule)"
            )
        else:
            return uri
        note = (
            f"alias {self.alias!r} names {parent.resource_name} version {version.version_id}, "
            f"which {problem}: treated as no usable champion, so the gate uses the absolute "
            "thresholds only; the next promotion moves the alias and repairs it (keep "
            f"vertex.models_root, {self._models_root_or_none()}, out of lifecycle rules)"
        )
        logging.getLogger(__name__).warning("warning: %s", note)
        self.notes.append(note)
        return None

    def _models_root_or_none(self) -> str:
        try:
            return self.models_root()
        except ConfigError:
            return "unset"

    # ---- the registry's own copy ------------------------------------------------------------
    def copy_to_models_root(self, model_uri: str) -> str:
        """Copy the model artifact folder ``model_uri`` (gs://, a /gcs/ FUSE path, or a local
        folder) to ``<models_root>/<model name>/<content id>/`` (marker last; an existing
        complete copy of the same content is reused) and return that gs:// folder. A folder
        that is not a committed model artifact is refused (ArtifactError)."""
        from torchkfp.artifacts import model as model_artifact

        root = self.models_root()  # a missing setting fails before any request
        source = fuse_to_gcs(str(model_uri))
        client = registry_gcs.client(self.vertex.project)
        if source.startswith("gs://"):
            fuse = registry_gcs.readable_path(source)
            if fuse:  # inside a Vertex AI job: check it as the local registry does
                model_artifact.verify(fuse)
            files = registry_gcs.list_files(client, source)
        elif "://" in source:
            raise RegistryError(
                f"model {source!r}: give a gs:// URI, a /gcs/ path or a local model folder"
            )
        else:
            model_artifact.verify(source)
            files = registry_gcs.local_files(source)
        registry_gcs.require_complete(files, source)
        dest = registry_gcs.join(root, self.model_name, registry_gcs.content_id(files))
        registry_gcs.copy_folder(client, source, files, dest)
        return dest

    # ---- rollout -------------------------------------------------------------------------
    def _deploy(self, model, endpoint, split: dict[str, int], what: str) -> str:
        """Deploy ``model`` with the traffic ``split`` ("0": the new deployed model); returns
        its deployed model id. VertexDeployError when the deployment fails."""
        v = self.vertex
        before = {d.id for d in endpoint.list_models()}
        try:
            model.deploy(
                endpoint=endpoint,
                machine_type=v.serving_machine_type,
                min_replica_count=v.min_replica_count,
                max_replica_count=v.max_replica_count,
                traffic_split=split,
                service_account=v.service_account,
            )
        except Exception as e:
            raise VertexDeployError(
                f"deploying {model.resource_name} version {model.version_id} to "
                f"{endpoint.resource_name} failed, so {what} ({type(e).__name__}: {e})"
            ) from e
        new = [d.id for d in endpoint.list_models() if d.id not in before]
        if len(new) != 1:
            raise VertexDeployError(
                f"deploying {model.resource_name} version {model.version_id} to "
                f"{endpoint.resource_name} reported success, but the endpoint shows "
                f"{len(new)} new deployed models; check it in the console"
            )
        return new[0]

    def _set_split(self, endpoint, split: dict[str, int], what: str) -> None:
        try:
            endpoint.update(traffic_split=split)
        except Exception as e:
            raise VertexDeployError(
                f"setting the traffic split of {endpoint.resource_name} to {split} failed, so "
                f"{what} ({type(e).__name__}: {e})"
            ) from e

    def _move_champion(self, registry, version: str, old: str | None, state: str) -> None:
        """The champion (and default) alias to ``version``; the version it leaves becomes the
        previous champion. An alias names one version: adding it takes it off the other."""
        try:
            registry.add_version_aliases(new_aliases=[self.alias, "default"], version=version)
        except Exception as e:
            raise VertexDeployError(
                f"{state}, but moving alias {self.alias!r} to version {version} failed "
                f"({type(e).__name__}: {e}); nothing was undeployed"
            ) from e
        if old is None or old == version:
            return
        try:
            registry.add_version_aliases(new_aliases=[self.previous_alias], version=old)
        except Exception as e:
            raise VertexDeployError(
                f"{state} and carries alias {self.alias!r}, but setting {self.previous_alias!r} "
                f"on version {old} (what rollback returns to) failed ({type(e).__name__}: {e}); "
                "nothing was undeployed"
            ) from e

    def _undeploy_others(
        self, endpoint, keep: set[str], state: str, model_id: str
    ) -> list[dict[str, Any]]:
        """Undeploy every deployed model not in ``keep`` (they have no traffic left); returns
        what was undeployed (version: set for versions of ``model_id``)."""
        others = [d for d in self._deployed(endpoint, model_id) if d.deployed_model_id not in keep]
        done: list[dict[str, Any]] = []
        for d in others:
            try:
                endpoint.undeploy(deployed_model_id=d.deployed_model_id)
            except Exception as e:
                raise VertexDeployError(
                    f"{state}, but undeploying deployed model {d.deployed_model_id} (no "
                    f"traffic) from {endpoint.resource_name} failed ({type(e).__name__}: {e}); "
                    f"undeployed so far: {[x['deployed_model_id'] for x in done] or 'none'}; "
                    f"still to undeploy: {[x.deployed_model_id for x in others[len(done) :]]}"
                ) from e
            done.append(
                {"version": d.version, "deployed_model_id": d.deployed_model_id, "model": d.model}
            )
        return done

    def _result(
        self,
        action: str,
        parent_name: str,
        version: str,
        previous: str | None,
        endpoint,
        undeployed: list[dict[str, Any]],
        t0: float,
        canary: bool = False,
        artifact_uri: str | None = None,
    ) -> DeployResult:
        deployed = self._deployed(endpoint, parent_name.rsplit("/", 1)[-1])
        champion = self._version(parent_name, self.alias)
        previous_champion = self._version(parent_name, self.previous_alias)
        return DeployResult(
            registry="vertex",
            model_name=self.model_name,
            version=version,
            alias=self.alias,
            location=parent_name,
            seconds=time.perf_counter() - t0,
            previous=previous,
            endpoint=endpoint.resource_name,
            undeployed=undeployed,
            action=action,
            champion=None if champion is None else str(champion.version_id),
            previous_champion=(
                None if previous_champion is None else str(previous_champion.version_id)
            ),
            canary=canary,
            serving=[d.to_dict() for d in deployed],
            artifact_uri=artifact_uri or (None if champion is None else champion.uri),
        )

    def publish(
        self,
        model_uri: str,
        labels: dict[str, str] | None = None,
        traffic_percentage: int | None = None,
    ) -> DeployResult:
        """Copy ``model_uri`` (a gs:// or /gcs/ model artifact folder, or a local one) into the
        registry's location, upload it as a new version of the registered model and deploy it
        to the endpoint: with ``vertex.traffic_percentage`` p < 100 and a deployed champion, as
        a canary (split exactly ``{champion: 100-p, new: p}``, the alias stays); otherwise with
        all traffic, and only then the alias (and the default version) moves to it. Deployed
        models left out of the split (older canaries, the replaced champion) are undeployed.

        The alias names a version that serves: if the deploy fails it stays where it was (the
        next run's promotion gate compares against it) and VertexDeployError is raised."""
        from google.cloud import aiplatform

        t0 = time.perf_counter()
        v = self.vertex
        pct = v.traffic_percentage if traffic_percentage is None else traffic_percentage
        if type(pct) is not int or not 0 < pct <= 100:
            raise RegistryError(f"traffic percentage {pct!r} is not a whole number from 1 to 100")
        self._init()
        parent = self.parent_model()
        endpoint = self.endpoint(create=False)  # an ambiguous name fails before any upload
        artifact_uri = self.copy_to_models_root(model_uri)
        old = None if parent is None else self._version(parent, self.alias)
        old_id = None if old is None else str(old.version_id)
        model = aiplatform.Model.upload(
            display_name=self.model_name,
            artifact_uri=artifact_uri,
            serving_container_image_uri=check_image(v.serving_image, "serving", v.project),
            serving_container_predict_route="/predict",
            serving_container_health_route="/health",
            serving_container_ports=[8080],
            serving_container_environment_variables={"TORCHKFP_SERVING_RUNTIME": v.serving_runtime},
            parent_model=None if parent is None else parent.resource_name,
            # no aliases yet, "default" included: they move once the version is serving (the very
            # first version of a model is its default whatever this says)
            is_default_version=False,
            version_description=f"torchkfp: copied from {fuse_to_gcs(str(model_uri))}"[:1000],
            labels={**v.labels, **(labels or {})} or None,
        )
        version = str(model.version_id)
        if endpoint is None:
            endpoint = self.endpoint(create=True)
        serving = [
            d
            for d in self._deployed(endpoint, model.name)
            if old_id is not None and d.version == old_id and d.percent > 0
        ]
        champ = max(serving, key=lambda d: d.percent, default=None)
        canary = pct < 100 and champ is not None
        if canary:
            split = {"0": pct, champ.deployed_model_id: 100 - pct}
            kept = f"alias {self.alias!r} still names version {old_id}"
        else:
            split = {"0": 100}
            kept = f"alias {self.alias!r} was not moved and still names the version it named before"
        new_id = self._deploy(model, endpoint, split, kept)
        state = (
            f"{model.resource_name} version {version} is deployed to {endpoint.resource_name} "
            f"with {split['0']}% of the traffic"
        )
        if not canary:
            self._move_champion(model.versioning_registry, version, old_id, state)
        keep = {new_id} | ({champ.deployed_model_id} if canary else set())
        undeployed = self._undeploy_others(endpoint, keep, state, model.name)
        return self._result(
            "publish",
            model.resource_name,
            version,
            old_id,
            endpoint,
            undeployed,
            t0,
            canary=canary,
            artifact_uri=artifact_uri,
        )

    def _parent_or_fail(self, action: str):
        parent = self.parent_model()
        if parent is None:
            raise RegistryError(
                f"nothing to {action}: no model named {self.model_name!r} (deploy.model_name) "
                f"in the {self.describe()}; run the pipeline (torchkfp submit) to publish one"
            )
        return parent

    def _serving_text(self, deployed: list[Deployed], champion: str | None) -> str:
        who = "no champion" if champion is None else f"the champion is version {champion}"
        parts = [
            f"version {d.version} {d.percent}%"
            if d.version is not None
            else f"deployed model {d.deployed_model_id} of {d.model} {d.percent}%"
            for d in deployed
        ]
        return f"{who}, serving: {', '.join(parts) or 'nothing'}"

    def promote(self) -> DeployResult:
        """Shift the canary (the newest version of the model deployed next to the champion) to
        100 %: the traffic split first, then the champion alias moves to it (the old champion
        gets ``previous-<alias>``), then every other deployed model is undeployed."""
        t0 = time.perf_counter()
        self._init()
        parent = self._parent_or_fail("promote")
        endpoint = self.endpoint(create=False)
        old = self._version(parent, self.alias)
        old_id = None if old is None else str(old.version_id)
        deployed = [] if endpoint is None else self._deployed(endpoint, parent.name)
        canaries = [d for d in deployed if d.version is not None and d.version != old_id]
        if not canaries:
            where = "no endpoint yet" if endpoint is None else endpoint.resource_name
            raise RegistryError(
                f"no canary to promote on {self.vertex.endpoint_display_name!r} ({where}): "
                f"{self._serving_text(deployed, old_id)}; a canary is a version published with "
                "vertex.traffic_percentage below 100"
            )
        canary = max(canaries, key=lambda d: (int(d.version or 0), d.percent))
        version = str(canary.version)
        self._set_split(
            endpoint,
            {canary.deployed_model_id: 100},
            f"nothing changed (alias {self.alias!r} still names version {old_id})",
        )
        state = f"{parent.resource_name} version {version} serves 100% of {endpoint.resource_name}"
        self._move_champion(parent.versioning_registry, version, old_id, state)
        undeployed = self._undeploy_others(endpoint, {canary.deployed_model_id}, state, parent.name)
        return self._result(
            "promote", parent.resource_name, version, old_id, endpoint, undeployed, t0
        )

    def rollback(self) -> DeployResult:
        """Return to the previous champion (``previous-<alias>``): it is deployed again (or,
        if still deployed, given all traffic) with 100 %, takes the champion and default
        aliases back, loses ``previous-<alias>`` (a rollback uses it up), and every other
        deployed model is undeployed."""
        t0 = time.perf_counter()
        self._init()
        parent = self._parent_or_fail("roll back")
        target = self._version(parent, self.previous_alias)
        old = self._version(parent, self.alias)
        old_id = None if old is None else str(old.version_id)
        if target is None:
            raise RegistryError(
                f"no previous champion to roll back to: no version of {parent.resource_name} "
                f"carries alias {self.previous_alias!r} (it is set when a version takes over "
                "from a champion, by a publish at 100% or by torchkfp promote, and a rollback "
                f"uses it up); the champion is version {old_id}"
            )
        version = str(target.version_id)
        uri = target.uri
        client = registry_gcs.client(self.vertex.project)
        if not uri or not uri.startswith("gs://") or not registry_gcs.is_complete(client, uri):
            raise RegistryError(
                f"cannot roll back to {parent.resource_name} version {version} (alias "
                f"{self.previous_alias!r}): its artifacts at {uri or '(none)'} are gone (no "
                f"{MARKER}), so it could not start; the champion stays version {old_id}"
            )
        endpoint = self.endpoint(create=True)
        there = [d for d in self._deployed(endpoint, parent.name) if d.version == version]
        kept = f"nothing changed (alias {self.alias!r} still names version {old_id})"
        if there:
            new_id = there[0].deployed_model_id
            self._set_split(endpoint, {new_id: 100}, kept)
        else:
            new_id = self._deploy(target, endpoint, {"0": 100}, kept)
        state = f"{parent.resource_name} version {version} serves 100% of {endpoint.resource_name}"
        registry = parent.versioning_registry
        self._move_champion(registry, version, None, state)
        try:
            registry.remove_version_aliases(target_aliases=[self.previous_alias], version=version)
        except Exception as e:
            raise VertexDeployError(
                f"{state} and carries alias {self.alias!r}, but removing "
                f"{self.previous_alias!r} from it failed ({type(e).__name__}: {e}); nothing "
                "was undeployed"
            ) from e
        undeployed = self._undeploy_others(endpoint, {new_id}, state, parent.name)
        return self._result(
            "rollback", parent.resource_name, version, old_id, endpoint, undeployed, t0
        )

    def status(self) -> dict[str, Any]:
        """The champion, the previous champion and the endpoint's deployed models."""
        self._init()
        parent = self.parent_model()
        endpoint = self.endpoint(create=False)
        champion = previous = None
        if parent is not None:
            champion = self._version(parent, self.alias)
            previous = self._version(parent, self.previous_alias)
        model_id = parent.name if parent is not None else None
        deployed = [] if endpoint is None else self._deployed(endpoint, model_id)
        return {
            "registry": "vertex",
            "model_name": self.model_name,
            "location": None if parent is None else parent.resource_name,
            "alias": self.alias,
            "champion": None if champion is None else str(champion.version_id),
            "champion_artifact_uri": None if champion is None else champion.uri,
            "previous_champion": None if previous is None else str(previous.version_id),
            "endpoint": None if endpoint is None else endpoint.resource_name,
            "serving": [d.to_dict() for d in deployed],
        }
