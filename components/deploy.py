from typing import NamedTuple

from kfp.dsl import Input, Model
from torchkfp.components._base import component


@component
def deploy_local(config_json: str, model: Input[Model]) -> NamedTuple(
    "DeployOutputs", version=str, location=str, seconds=float
):
    """Register a new version in the local registry and move the serving alias to it."""
    import time

    t0 = time.perf_counter()
    from torchkfp.config import Config
    from torchkfp.deploy import deploy_local as run

    r = run(Config.from_json(config_json), model.path)
    return (r.version, r.location, time.perf_counter() - t0)


@component
def deploy_vertex(config_json: str, model: Input[Model]) -> NamedTuple(
    "DeployOutputs", version=str, location=str, seconds=float
):
    """Upload to Vertex AI Model Registry as a new version, deploy it to the endpoint with the
    configured traffic share, then move the alias to it and undeploy idle older models."""
    import time

    t0 = time.perf_counter()
    from torchkfp.config import Config
    from torchkfp.vertex import upload_and_deploy

    r = upload_and_deploy(Config.from_json(config_json), model.uri)
    return (r.version, r.location, time.perf_counter() - t0)
