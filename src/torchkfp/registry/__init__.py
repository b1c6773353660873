"""Model registries behind one interface, mirroring ``Warehouse`` / ``open_warehouse``:

- :class:`~torchkfp.registry.local.LocalRegistry`: a folder with numbered versions and
  aliases (the embedded default);
- :class:`~torchkfp.registry.vertex.VertexRegistry`: Vertex AI Model Registry versions under
  one parent model, aliases, and the endpoint the promoted version serves from.

Finding the champion (the version the serving alias names) is the registry's job; evaluation
and serving ask :func:`open_registry` for it.
"""

from __future__ import annotations

from torchkfp.config import DeployConfig, VertexConfig
from torchkfp.errors import RegistryError
from torchkfp.registry.base import DeployResult, Registry


def open_registry(deploy: DeployConfig, vertex: VertexConfig | None = None) -> Registry:
    """The registry ``deploy.registry`` names (``vertex`` also needs the vertex section)."""
    if deploy.registry == "local":
        from torchkfp.registry.local import LocalRegistry

        return LocalRegistry(deploy.registry_dir, deploy.model_name, alias=deploy.alias)
    from torchkfp.registry.vertex import VertexRegistry

    return VertexRegistry(deploy, vertex or VertexConfig())


__all__ = ["DeployResult", "Registry", "RegistryError", "open_registry"]
