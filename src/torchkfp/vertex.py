"""Vertex AI: Model Registry (versions under one parent model, aliases) and Endpoints
(deploying a new version next to the current one with a traffic split).

Everything goes through the google-cloud-aiplatform SDK; tests drive the real SDK against a
local server at its REST transport boundary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from torchkfp.artifacts import fuse_to_gcs, gcs_to_fuse
from torchkfp.config import Config, ConfigError
from torchkfp.images import SERVING_IMAGE
from torchkfp.registry import RegistryError


class VertexDeployError(RegistryError):
    """Deploying a new version failed, or the steps after it (alias move, cleanup) did."""


@dataclass
class VertexDeployResult:
    version: str
    location: str
    model_resource: str
    endpoint_resource: str
    seconds: float
    # ids of the deployed models taken off the endpoint because they had no traffic left
    undeployed: list[str] = field(default_factory=list)


def init(cfg: Config, **kwargs: Any) -> None:
    from google.cloud import aiplatform

    v = cfg.vertex
    if not v.project:
        raise ConfigError("vertex.project is required for Vertex AI; set it in the config")
    aiplatform.init(
        project=v.project,
        location=v.region,
        staging_bucket=v.pipeline_root,
        encryption_spec_key_name=v.encryption_key,
        **kwargs,
    )


def find_parent_model(cfg: Config):
    """The registered model (all versions) with the configured display name, or None."""
    from google.cloud import aiplatform

    models = aiplatform.Model.list(filter=f'display_name="{cfg.deploy.model_name}"')
    return models[0] if models else None


def champion_local_path(cfg: Config) -> str | None:
    from google.cloud import aiplatform

    init(cfg)
    parent = find_parent_model(cfg)
    if parent is None:
        return None
    try:
        champ = aiplatform.Model(model_name=f"{parent.resource_name}@{cfg.deploy.alias}")
    except Exception as e:  # the alias is unset: NotFound from the API
        if type(e).__name__ == "NotFound":
            return None
        raise
    return gcs_to_fuse(champ.uri)


def upload_and_deploy(cfg: Config, model_uri: str) -> VertexDeployResult:
    """Upload ``model_uri`` (a gs:// model artifact folder) as a new version of the registered
    model, deploy it to the endpoint with the configured traffic, and only then move the alias
    (and the model's default version) to it. Deployed models left with no traffic (earlier
    versions the new one replaced) are then undeployed so they stop holding replicas; ones still
    taking traffic (the previous version during a canary split) stay.

    The alias names the version that serves: if the deploy fails it stays where it was (the
    next run's promotion gate compares against it) and VertexDeployError is raised.
    """
    from google.cloud import aiplatform

    t0 = time.perf_counter()
    init(cfg)
    v = cfg.vertex
    alias = cfg.deploy.alias
    parent = find_parent_model(cfg)
    model = aiplatform.Model.upload(
        display_name=cfg.deploy.model_name,
        artifact_uri=fuse_to_gcs(model_uri),
        serving_container_image_uri=v.serving_image or SERVING_IMAGE,
        serving_container_predict_route="/predict",
        serving_container_health_route="/health",
        serving_container_ports=[8080],
        parent_model=parent.resource_name if parent else None,
        # no aliases yet, "default" included: they move once the version is serving (the very
        # first version of a model is its default whatever this says)
        is_default_version=False,
        labels=v.labels or None,
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
    return VertexDeployResult(
        version=version,
        location=model.resource_name,
        model_resource=model.resource_name,
        endpoint_resource=endpoint.resource_name,
        seconds=time.perf_counter() - t0,
        undeployed=undeployed,
    )
