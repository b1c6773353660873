"""The registry interface (:class:`Registry`) and what publishing returns (``DeployResult``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass
class DeployResult:
    """What ``Registry.publish`` did."""

    registry: str
    """``local`` or ``vertex``."""
    model_name: str
    version: str
    alias: str
    location: str
    """Local: the version's folder. Vertex: the registered model's resource name (the version
    is ``{location}@{version}``)."""
    seconds: float
    previous: str | None = None
    """The version the alias named before (None: it was unset or unknown)."""
    endpoint: str | None = None
    """Vertex: the endpoint resource the version was deployed to."""
    undeployed: list[str] = field(default_factory=list)
    """Vertex: deployed models taken off the endpoint because they had no traffic left."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry(Protocol):
    def describe(self) -> str:
        """Where the registry is, for messages."""
        ...

    def locate(self, alias: str) -> str | None:
        """The model artifact of the version ``alias`` names: a local folder or a gs:// URI;
        None when no version carries the alias. RegistryError when the registry cannot answer
        (unreadable, or the alias names a version that does not exist)."""
        ...

    def champion(self) -> str | None:
        """``locate`` of the configured serving alias (``deploy.alias``): the model the
        evaluation gate compares against. None: no champion. A registry may answer None for an
        alias it knows is dangling (the local registry: its version folder is gone), with the
        reason in a ``notes`` list attribute, so a damaged alias does not fail every later run:
        the next promotion moves the alias and repairs it."""
        ...

    def publish(self, model_uri: str, labels: dict[str, str] | None = None) -> DeployResult:
        """Register ``model_uri`` as a new version, make it serve, and move the serving
        alias to it (only once it serves)."""
        ...
