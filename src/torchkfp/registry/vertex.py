"""Vertex AI Model Registry (versions under one parent model, aliases) and the Endpoint the
promoted version serves from (deployed next to the current one with a traffic split).

Everything goes through the google-cloud-aiplatform SDK, imported inside the methods; tests
drive the real SDK against a local server at its REST transport boundary.
"""

from __future__ import annotations

import time

from torchkfp.artifacts import fuse_to_gcs
from torchkfp.config import DeployConfig, VertexConfig
from torchkfp.errors import RegistryError
from torchkfp.images import SERVING_IMAGE
from torchkfp.registry.base import DeployResult
from torchkfp.vertex import init


class VertexDeployError(RegistryError):
    """Deploying a new version failed, or the steps after it (alias move, cleanup) did."""


class VertexRegistry:
    def __init__(self, deploy: DeployConfig, vertex: VertexConfig):
        self.model_name = deploy.model_name
        self.alias = deploy.alias
        self.vertex = vertex

    def describe(self) -> str:
        return f"Vertex AI Model Registry {self.vertex.project}/{self.vertex.region}"

    def _init(self) -> None:
        init(self.vertex)

    def parent_model(self):
        """The registered model (all versions) with the configured display name, or None."""
        from google.cloud import aiplatform

        models = aiplatform.Model.list(filter=f'display_name="{self.model_name}"')
        return models[0] if models else None

    def locate(self, alias: str) -> str | None:
        """The gs:// artifact URI of the version ``alias`` names (None: no such version)."""
        from google.cloud import aiplatform

        self._init()
        parent = self.parent_model()
        if parent is None:
            return None
        try:
            version = aiplatform.Model(model_name=f"{parent.resource_name}@{alias}")
        except Exception as e:  # the alias is unset: NotFound from the API
            if type(e).__name__ == "NotFound":
                return None
            raise
        return version.uri

    def champion(self) -> str | None:
        return self.locate(self.alias)

    def publish(self, model_uri: str, labels: dict[str, str] | None = None) -> DeployResult:
        """Upload ``model_uri`` (a gs:// or /gcs/ model artifact folder) as a new version of
        the registered model, deploy it to the endpoint with the configured traffic, and only
        then move the alias (and the model's default version) to it. Deployed models left with
        no traffic (earlier versions the new one replaced) are then undeployed so they stop
        holding replicas; ones still taking traffic (the previous version during a canary
        split) stay.

        The alias names the version that serves: if the deploy fails it stays where it was
        (the next run's promotion gate compares against it) and VertexDeployError is raised.
        """
        from google.cloud import aiplatform

        t0 = time.perf_counter()
        self._init()
        v = self.vertex
        alias = self.alias
        parent = self.parent_model()
        model = aiplatform.Model.upload(
            display_name=self.model_name,
            artifact_uri=fuse_to_gcs(str(model_uri)),
            serving_container_image_uri=v.serving_image or SERVING_IMAGE,
            serving_container_predict_route="/predict",
            serving_container_health_route="/health",
            serving_container_ports=[8080],
            parent_model=parent.resource_name if parent else None,
            # no aliases yet, "default" included: they move once the version is serving (the very
            # first version of a model is its default whatever this says)
            is_default_version=False,
            labels={**v.labels, **(labels or {})} or None,
        )
        version = str(model.version_id)
        endpoints = aiplatform.Endpoint.list(filter=f'display_name="{v.endpoint_display_name}"')
        endpoint = (
            endpoints[0]
            if endpoints
            else aiplatform.Endpoint.create(
                display_name=v.endpoint_display_name, labels=v.labels or None
            )
        )
        previously_deployed = [d.id for d in endpoint.list_models()]
        # A split needs something to split with: the first model on an endpoint takes all traffic
        # (the API rejects anything else); later versions take the configured share.
        traffic = v.traffic_percentage if endpoint.traffic_split else 100
        try:
            model.deploy(
                endpoint=endpoint,
                machine_type=v.serving_machine_type,
                min_replica_count=v.min_replica_count,
                max_replica_count=v.max_replica_count,
                traffic_percentage=traffic,
                service_account=v.service_account,
            )
        except Exception as e:
            raise VertexDeployError(
                f"deploying {model.resource_name} version {version} to {endpoint.resource_name} "
                f"failed, so alias {alias!r} was not moved and still names the version it named "
                f"before ({type(e).__name__}: {e})"
            ) from e

        try:  # an alias names one version of a model: this takes both off the previous version
            model.versioning_registry.add_version_aliases(
                new_aliases=[alias, "default"], version=version
            )
        except Exception as e:
            raise VertexDeployError(
                f"{model.resource_name} version {version} is deployed to {endpoint.resource_name} "
                f"with {traffic}% of the traffic, but moving alias {alias!r} to it failed "
                f"({type(e).__name__}: {e}); nothing was undeployed"
            ) from e

        split = endpoint.traffic_split  # re-read from the API after the deploy
        idle = [d for d in previously_deployed if not split.get(d)]
        undeployed: list[str] = []
        for deployed_model_id in idle:
            try:
                endpoint.undeploy(deployed_model_id=deployed_model_id)
            except Exception as e:
                raise VertexDeployError(
                    f"{model.resource_name} version {version} is deployed and carries alias "
                    f"{alias!r}, but undeploying deployed model {deployed_model_id} (0% traffic) "
                    f"from {endpoint.resource_name} failed ({type(e).__name__}: {e}); undeployed "
                    f"so far: {undeployed or 'none'}; still to undeploy: "
                    f"{idle[len(undeployed) :]}"
                ) from e
            undeployed.append(deployed_model_id)
        return DeployResult(
            registry="vertex",
            model_name=self.model_name,
            version=version,
            alias=alias,
            location=model.resource_name,
            seconds=time.perf_counter() - t0,
            endpoint=endpoint.resource_name,
            undeployed=undeployed,
        )
