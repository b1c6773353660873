from typing import NamedTuple

from kfp.dsl import Input, Model
from torchkfp.components._base import component


@component
def deploy(
    deploy_config: dict,
    vertex_config: dict,
    model: Input[Model],
) -> NamedTuple("DeployOutputs", version=str, location=str, seconds=float):
    """Publish the promoted model through the configured registry (local folder or Vertex AI
    Model Registry + Endpoint) and roll it out: with ``vertex.traffic_percentage`` below 100
    and a champion serving, as a canary next to it (older canaries undeployed, the serving alias
    unchanged; ``torchkfp promote`` finishes the rollout); otherwise it takes all traffic and the
    serving alias, and the old champion becomes the one ``torchkfp rollback`` returns to. On
    Vertex AI the model folder is first copied to ``vertex.models_root``, so the version never
    points into this run's pipeline-root folder.

    deploy_config: the config's ``deploy`` section (registry, model name, alias).
    vertex_config: the config's ``vertex`` section (endpoint, traffic, serving machines,
    models_root).
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
