"""The registry interface (:class:`Registry`), what its actions return (:class:`DeployResult`)
and the rollout rules both registries follow.

Rollout (the same meaning on the local registry and on Vertex AI):

- ``publish`` registers a new version. With ``traffic_percentage`` p < 100 and a champion that
  serves, the new version is a **canary**: it serves p %, the champion keeps 100 - p, every other
  deployed version (older canaries) is undeployed, and the champion alias stays where it is.
  With p = 100 (or no serving champion to split with) the new version takes all traffic, every
  other version is undeployed, and the champion alias moves to it.
- ``promote`` shifts the canary to 100 %: the champion alias moves to it, the old champion is
  undeployed and becomes the previous champion.
- ``rollback`` returns to the previous champion: it serves 100 % and carries the champion alias
  again; the version rolled back from (and any canary) is undeployed.

Whenever the champion alias moves from one version to another, the version it leaves gets the
:func:`previous_alias` (``previous-champion`` for the alias ``champion``): that is what
``rollback`` returns to. A rollback consumes it (a second rollback in a row is refused until a
version takes over from a champion again).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

PREVIOUS_PREFIX = "previous-"


def previous_alias(alias: str) -> str:
    """The alias that names the champion before the last change of champion: rollback's target."""
    return PREVIOUS_PREFIX + alias


@dataclass
class Deployed:
    """One version on the endpoint (local: in the registry's ``traffic.json``)."""

    version: str | None
    """The registered version (None: a deployed model of another registered model)."""
    percent: int
    """Share of the endpoint's traffic (0 for a model that is deployed but gets none)."""
    deployed_model_id: str | None = None
    """Vertex: the DeployedModel's id on the endpoint."""
    model: str | None = None
    """Vertex: the registered model resource the deployed model comes from."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "version"}


@dataclass
class DeployResult:
    """What ``Registry.publish`` / ``promote`` / ``rollback`` did, and the state after it."""

    registry: str
    """``local`` or ``vertex``."""
    model_name: str
    version: str
    """publish: the new version; promote: the canary promoted; rollback: the version returned
    to."""
    alias: str
    location: str
    """Local: the version's folder. Vertex: the registered model's resource name (the version
    is ``{location}@{version}``)."""
    seconds: float
    previous: str | None = None
    """The version the champion alias named before (None: it was unset or unknown)."""
    endpoint: str | None = None
    """Vertex: the endpoint resource the version was deployed to."""
    undeployed: list[dict[str, Any]] = field(default_factory=list)
    """Versions taken off the endpoint (local: out of ``traffic.json``), as
    :class:`Deployed` dicts."""
    action: str = "publish"
    """``publish``, ``promote`` or ``rollback``."""
    champion: str | None = None
    """The version the champion alias names after the action."""
    previous_champion: str | None = None
    """The version ``rollback`` would return to after the action (None: none)."""
    canary: bool = False
    """publish: the new version serves a share below 100 % next to the champion."""
    serving: list[dict[str, Any]] = field(default_factory=list)
    """What is deployed after the action, with its traffic: :class:`Deployed` dicts (version,
    percent; Vertex: deployed_model_id, model)."""
    artifact_uri: str | None = None
    """Vertex: where the version's artifacts live (the registry's own copy under
    ``vertex.models_root``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry(Protocol):
    notes: list[str]
    """Warnings from the last ``champion()`` (why there is no usable champion), for reports."""

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
        evaluation gate compares against. None: no usable champion. An alias naming a version
        that is gone, or whose artifacts are gone or damaged, is "no usable champion" with the
        reason in ``notes`` (so a damaged champion does not fail every later run: the next
        promotion moves the alias and repairs it)."""
        ...

    def publish(self, model_uri: str, labels: dict[str, str] | None = None) -> DeployResult:
        """Register ``model_uri`` as a new version and roll it out (see the module docstring:
        a canary below 100 %, else the new champion)."""
        ...

    def promote(self) -> DeployResult:
        """Shift the canary to 100 % and make it the champion (RegistryError: no canary)."""
        ...

    def rollback(self) -> DeployResult:
        """Return to the previous champion (RegistryError: none recorded)."""
        ...

    def status(self) -> dict[str, Any]:
        """The champion, the previous champion and what serves with which share."""
        ...
