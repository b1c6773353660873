"""Stage 5: register the promoted model and move the serving alias.

Local: a new version in the folder registry, alias ``champion`` moved to it (the local HTTP
endpoint serves that alias). Vertex: ``torchkfp.vertex.upload_and_deploy``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from torchkfp import artifacts
from torchkfp.config import Config
from torchkfp.registry import LocalRegistry


@dataclass
class DeployResult:
    registry: str
    model_name: str
    version: str
    alias: str
    previous: str | None
    location: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def deploy_local(
    cfg: Config, model_dir: str | os.PathLike, labels: dict | None = None
) -> DeployResult:
    t0 = time.perf_counter()
    artifacts.require(model_dir, "model")
    reg = LocalRegistry(cfg.deploy.registry_dir, cfg.deploy.model_name)
    version = reg.register(model_dir, labels)
    previous = reg.set_alias(cfg.deploy.alias, version)
    return DeployResult(
        registry="local",
        model_name=cfg.deploy.model_name,
        version=str(version),
        alias=cfg.deploy.alias,
        previous=None if previous is None else str(previous),
        location=str(reg.resolve(version)),
        seconds=time.perf_counter() - t0,
    )
