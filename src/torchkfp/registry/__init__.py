"""Model registries behind one interface, mirroring ``Warehouse`` / ``open_warehouse``:

- :class:`~torchkfp.registry.local.LocalRegistry`: a folder with numbered versions and
  aliases (the embedded default);
- :class:`~torchkfp.registry.vertex.VertexRegistry`: Vertex AI Model Registry versions under
  one parent model, aliases, and the endpoint the promoted version serves from.

Finding the champion (the version the serving alias names) is the registry's job; evaluation
and serving ask :func:`open_registry` for it. Rolling a version out (canary, promote, rollback)
follows the same rules on both (:mod:`torchkfp.registry.base`).
"""

from __future__ import annotations

from torchkfp.config import DeployConfig, VertexConfig
from torchkfp.errors import RegistryError
from torchkfp.registry.base import Deployed, DeployResult, Registry, previous_alias


def open_registry(deploy: DeployConfig, vertex: VertexConfig | None = None) -> Registry:
    """The registry ``deploy.registry`` names (``vertex`` also needs the vertex section).
    Both roll a new version out with ``vertex.traffic_percentage`` (below 100: a canary next
    to the champion; see :mod:`torchkfp.registry.base`)."""
    vertex = vertex or VertexConfig()
    if deploy.registry == "local":
        from torchkfp.registry.local import LocalRegistry

        return LocalRegistry(
            deploy.registry_dir,
            deploy.model_name,
            alias=deploy.alias,
            traffic_percentage=vertex.traffic_percentage,
        )
    from torchkfp.registry.vertex import VertexRegistry

    return VertexRegistry(deploy, vertex)


__all__ = [
    "Deployed",
    "DeployResult",
    "Registry",
    "RegistryError",
    "open_registry",
    "previous_alias",
]
