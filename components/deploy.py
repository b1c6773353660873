from typing import NamedTuple

from kfp.dsl import Input, Model
from torchkfp.components._base import component


@component
def deploy(
    deploy_config: dict,
    vertex_config: dict,
    model: Input[Model],
) -> NamedTuple("DeployOutputs", version=str, location=str, seconds=float):
    """Publish the promoted model through the configured registry: local (a new version, the
    serving alias moved to it) or Vertex AI (upload as a new version, deploy it to the endpoint
    with the configured traffic share, then move the alias and undeploy idle older models).

    deploy_config: the config's ``deploy`` section (registry, model name, alias).
    vertex_config: the config's ``vertex`` section (endpoint, traffic, serving machines).
    """
    import time

    t0 = time.perf_counter()
    from torchkfp.config import DeployConfig, VertexConfig
    from torchkfp.registry import open_registry

    registry = open_registry(
        DeployConfig.from_dict(deploy_config), VertexConfig.from_dict(vertex_config)
    )
    r = registry.publish(model.path)
    return (r.version, r.location, time.perf_counter() - t0)
