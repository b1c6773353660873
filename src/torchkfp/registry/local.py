"""The local model registry: a folder with numbered versions and aliases (the embedded default).

Layout::

    <registry_dir>/<model_name>/versions/<N>/   # a copy of the model artifact + version.json
    <registry_dir>/<model_name>/aliases.json    # {"champion": N, ...}

Every change is atomic (copy to a temp folder then rename; aliases via os.replace) under a
file lock, so concurrent runs never see a half-registered version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from torchkfp import artifacts
from torchkfp.artifacts import model as model_artifact
from torchkfp.errors import RegistryError
from torchkfp.registry.base import DeployResult


class LocalRegistry:
    def __init__(self, root: str | os.PathLike, model_name: str, alias: str = "champion"):
        self.root = Path(root) / model_name
        self.model_name = model_name
        self.alias = alias

    def describe(self) -> str:
        return f"local registry {self.root}"

    @contextlib.contextmanager
    def _lock(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def versions(self) -> list[int]:
        if not self.versions_dir.exists():
            return []
        return sorted(int(p.name) for p in self.versions_dir.iterdir() if p.name.isdigit())

    def aliases(self) -> dict[str, int]:
        p = self.root / "aliases.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def version_info(self, version: int) -> dict[str, Any]:
        return json.loads((self.versions_dir / str(version) / "version.json").read_text())

    def resolve(self, ref: str | int) -> Path | None:
        """Folder of a version given its number or an alias; None if the alias is unset."""
        if isinstance(ref, int) or str(ref).isdigit():
            v = int(ref)
        else:
            v = self.aliases().get(str(ref))
            if v is None:
                return None
        p = self.versions_dir / str(v)
        if not p.is_dir():
            raise RegistryError(f"{self.model_name} version {v} does not exist in {self.root}")
        return p

    def register(self, model_dir: str | os.PathLike, labels: dict[str, Any] | None = None) -> int:
        meta = artifacts.require(model_dir, model_artifact.KIND)
        with self._lock():
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            version = (self.versions()[-1] + 1) if self.versions() else 1
            tmp = self.versions_dir / f".tmp-{version}-{os.getpid()}"
            if tmp.exists():
                shutil.rmtree(tmp)
            shutil.copytree(model_dir, tmp)
            artifacts.write_json(
                tmp / "version.json",
                {
                    "version": version,
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(),
                    "source": str(model_dir),
                    "data_fingerprint": meta.get("data_fingerprint"),
                    "labels": labels or {},
                },
            )
            os.rename(tmp, self.versions_dir / str(version))
        return version

    def set_alias(self, alias: str, version: int) -> int | None:
        """Point ``alias`` at ``version``; returns the version it pointed at before."""
        with self._lock():
            if not (self.versions_dir / str(version)).is_dir():
                raise RegistryError(f"{self.model_name} version {version} does not exist")
            aliases = self.aliases()
            previous = aliases.get(alias)
            aliases[alias] = version
            artifacts.write_json(self.root / "aliases.json", aliases)
        return previous

    # ---- the Registry interface ------------------------------------------------------
    def locate(self, alias: str) -> str | None:
        p = self.resolve(alias)
        return str(p) if p else None

    def champion(self) -> str | None:
        return self.locate(self.alias)

    def publish(self, model_uri: str, labels: dict[str, str] | None = None) -> DeployResult:
        """A new version, then the alias moved to it (the local endpoint serves the alias)."""
        t0 = time.perf_counter()
        version = self.register(model_uri, labels)
        previous = self.set_alias(self.alias, version)
        return DeployResult(
            registry="local",
            model_name=self.model_name,
            version=str(version),
            alias=self.alias,
            previous=None if previous is None else str(previous),
            location=str(self.resolve(version)),
            seconds=time.perf_counter() - t0,
        )
