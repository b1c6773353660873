"""The local model registry: a folder with numbered versions, aliases and a traffic record (the
embedded default).

Layout::

    <registry_dir>/<model_name>/versions/<N>/   # a copy of the model artifact + version.json
    <registry_dir>/<model_name>/aliases.json    # {"champion": N, "previous-champion": M, ...}
    <registry_dir>/<model_name>/traffic.json    # {"N": 90, "K": 10}: what serves, in percent

The rollout follows the same rules as on Vertex AI (:mod:`torchkfp.registry.base`): a version
published with ``traffic_percentage`` p < 100 is a canary next to the champion (``traffic.json``
``{champion: 100-p, new: p}``, older canaries dropped, the alias unchanged); at 100 it takes over
(``{new: 100}``, the alias moved, the old champion recorded as ``previous-<alias>``);
:meth:`LocalRegistry.promote` and :meth:`LocalRegistry.rollback` move traffic and aliases the same
way. ``traffic.json`` is the local stand-in for an endpoint's traffic split: ``torchkfp serve``
serves one version (``--alias``, default the champion; ``--alias N`` a version number), and a
registry written before ``traffic.json`` existed reads as ``{champion: 100}``.

Every change is atomic (copy to a temp folder then rename; aliases and traffic via os.replace)
under a file lock, so concurrent runs never see a half-registered version.

What is read back is checked, since anything may have edited the folder:

- a version is a folder named by a plain decimal number (``1``, ``2``, ...: ASCII digits, no
  sign, no leading zero); anything else under ``versions/`` (``.tmp-*`` copies of a killed
  process, ``01``, ``١``) is never a version, and ``.tmp-*`` leftovers are removed by the next
  ``register``; a new version never takes a number an alias or the traffic record still names;
- ``aliases.json`` must be a JSON object of alias names (lowercase letters, digits, ``-``) to
  version numbers (JSON integers >= 1); ``traffic.json`` a JSON object of version numbers (as
  strings) to whole percentages adding up to 100; anything else is a :class:`RegistryError`
  naming the file and how to repair it;
- a model is verified (:func:`torchkfp.artifacts.model.verify`: files, consistency, checksums)
  before it is registered and again in its registry copy; a copy that fails (a full disk, a
  read-only folder) leaves no temp folder and raises RegistryError naming the cause.

An alias naming a version whose folder is gone: ``locate`` raises RegistryError; ``champion``
(the evaluation gate's question) treats it, and a version that fails verification, as "no
usable champion" with the reason in ``notes``, so the next promotion moves the alias to the new
version and repairs it (see :meth:`LocalRegistry.champion`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from torchkfp import artifacts
from torchkfp.artifacts import model as model_artifact
from torchkfp.errors import RegistryError
from torchkfp.registry.base import Deployed, DeployResult, previous_alias

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"
TRAFFIC_FILE = "traffic.json"
TMP_PREFIX = ".tmp-"
MAX_ALIASES_BYTES = 1 << 20
_VERSION = re.compile(r"[1-9][0-9]{0,17}", re.ASCII)
_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}", re.ASCII)
_ALIAS = re.compile(r"[a-z][a-z0-9-]{0,127}", re.ASCII)
"""An alias name in aliases.json: longer than a model name, so ``previous-<alias>`` fits."""


def _reason(e: BaseException) -> str:
    if isinstance(e, shutil.Error) and e.args and isinstance(e.args[0], list) and e.args[0]:
        src, _, why = e.args[0][0]
        return f"copying {src}: {why}"
    if isinstance(e, OSError):
        where = f" ({e.filename})" if e.filename else ""
        return f"{type(e).__name__}: {e.strerror or e}{where}"
    return f"{type(e).__name__}: {e}"


class LocalRegistry:
    def __init__(
        self,
        root: str | os.PathLike,
        model_name: str,
        alias: str = "champion",
        traffic_percentage: int = 100,
    ):
        for what, value in (("model name", model_name), ("alias", alias)):
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                raise RegistryError(
                    f"local registry: {what} {value!r} is not a name (lowercase letters, "
                    "digits and '-', starting with a letter)"
                )
        if type(traffic_percentage) is not int or not 0 < traffic_percentage <= 100:
            raise RegistryError(
                f"local registry: traffic percentage {traffic_percentage!r} is not a whole "
                "number from 1 to 100"
            )
        self.root = Path(root) / model_name
        self.model_name = model_name
        self.alias = alias
        self.previous_alias = previous_alias(alias)
        self.traffic_percentage = traffic_percentage
        """Share a newly published version serves (below 100: a canary next to the champion)."""
        self.notes: list[str] = []
        """Warnings from the last ``champion()`` (a dangling alias), for reports."""

    def describe(self) -> str:
        return f"local registry {self.root}"

    @property
    def aliases_file(self) -> Path:
        return self.root / ALIASES_FILE

    @property
    def traffic_file(self) -> Path:
        return self.root / TRAFFIC_FILE

    @contextlib.contextmanager
    def _lock(self):
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(self.root / ".lock", "w")  # closed by the with below
        except OSError as e:
            raise RegistryError(
                f"cannot use the local registry folder {str(self.root)!r} ({_reason(e)}): "
                "deploy.registry_dir must be a folder this user can write"
            ) from None
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def versions(self) -> list[int]:
        """The registered versions: folders named by a plain decimal number, ascending."""
        try:
            entries = list(self.versions_dir.iterdir()) if self.versions_dir.is_dir() else []
        except OSError as e:
            raise RegistryError(f"cannot list {str(self.versions_dir)!r} ({_reason(e)})") from None
        return sorted(
            int(p.name)
            for p in entries
            if _VERSION.fullmatch(p.name) and p.is_dir() and not p.is_symlink()
        )

    def _broken_aliases(self, problem: str) -> RegistryError:
        return RegistryError(
            f"{str(self.aliases_file)!r} {problem}. Repair it: write a JSON object of alias "
            f'names to version numbers, e.g. {{"{self.alias}": N}} with N one of the '
            f"versions in {str(self.versions_dir)!r} ({self.versions() or 'none yet'}), or "
            "delete the file (every alias is then unset; the next promotion sets "
            f"{self.alias!r} again)"
        )

    def aliases(self) -> dict[str, int]:
        """``aliases.json`` read and checked: alias name -> version number (may name a
        version that no longer exists: ``resolve`` says so)."""
        p = self.aliases_file
        if not p.exists() and not p.is_symlink():
            return {}
        try:
            if not p.is_file():
                raise self._broken_aliases("is not a regular file")
            if p.stat().st_size > MAX_ALIASES_BYTES:
                raise self._broken_aliases(f"is larger than {MAX_ALIASES_BYTES} bytes")
            raw = json.loads(p.read_bytes().decode("utf-8"))
        except OSError as e:
            raise RegistryError(f"cannot read {str(p)!r} ({_reason(e)})") from None
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError
            detail = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise self._broken_aliases(f"is not valid JSON ({detail})") from None
        if not isinstance(raw, dict):
            raise self._broken_aliases(f"holds a JSON {type(raw).__name__}, not an object")
        for name, v in raw.items():
            if not _ALIAS.fullmatch(name):
                raise self._broken_aliases(f"has an alias named {name[:40]!r}, not an alias name")
            if type(v) is not int or v < 1:
                raise self._broken_aliases(
                    f"maps alias {name!r} to {str(v)[:40]!r}, not a version number (a JSON "
                    "integer >= 1)"
                )
        return raw

    def _broken_traffic(self, problem: str) -> RegistryError:
        return RegistryError(
            f"{str(self.traffic_file)!r} {problem}. Repair it: write a JSON object of version "
            'numbers to whole percentages adding up to 100, e.g. {"N": 100} with N the '
            f"champion, or delete the file (the champion then serves 100%)"
        )

    def _exists(self, version: int) -> bool:
        p = self.versions_dir / str(version)
        return p.is_dir() and not p.is_symlink()

    def traffic(self, aliases: dict[str, int] | None = None) -> dict[int, int]:
        """``traffic.json`` read and checked: version -> percent of the traffic it serves (the
        local stand-in for the endpoint's traffic split). Without the file: the champion serves
        100 (a registry from before traffic was recorded), or nothing serves yet."""
        p = self.traffic_file
        if not p.exists() and not p.is_symlink():
            champion = (self.aliases() if aliases is None else aliases).get(self.alias)
            return {champion: 100} if champion is not None and self._exists(champion) else {}
        try:
            if not p.is_file():
                raise self._broken_traffic("is not a regular file")
            if p.stat().st_size > MAX_ALIASES_BYTES:
                raise self._broken_traffic(f"is larger than {MAX_ALIASES_BYTES} bytes")
            raw = json.loads(p.read_bytes().decode("utf-8"))
        except OSError as e:
            raise RegistryError(f"cannot read {str(p)!r} ({_reason(e)})") from None
        except (ValueError, RecursionError) as e:
            detail = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise self._broken_traffic(f"is not valid JSON ({detail})") from None
        if not isinstance(raw, dict):
            raise self._broken_traffic(f"holds a JSON {type(raw).__name__}, not an object")
        out: dict[int, int] = {}
        for key, pct in raw.items():
            if not _VERSION.fullmatch(key):
                raise self._broken_traffic(f"has the key {key[:40]!r}, not a version number")
            if type(pct) is not int or not 0 <= pct <= 100:
                raise self._broken_traffic(
                    f"gives version {key} {str(pct)[:40]!r}, not a whole percentage (0-100)"
                )
            if pct:
                out[int(key)] = pct
        if out and sum(out.values()) != 100:
            raise self._broken_traffic(f"adds up to {sum(out.values())}%, not 100%")
        return out

    def version_info(self, version: int) -> dict[str, Any]:
        p = self._version_dir(version) / "version.json"
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise RegistryError(f"cannot read {str(p)!r} ({_reason(e)})") from None

    def _parse_ref(self, ref: str | int) -> tuple[int | None, str | None]:
        """(version, alias name) that ``ref`` means; RegistryError for anything else."""
        if isinstance(ref, int) and not isinstance(ref, bool):
            if ref < 1:
                raise RegistryError(f"{ref} is not a version number (1, 2, ...)")
            return ref, None
        s = ref if isinstance(ref, str) else None
        if s is not None and _VERSION.fullmatch(s):
            return int(s), None
        if s is not None and _ALIAS.fullmatch(s):
            return self.aliases().get(s), s
        raise RegistryError(
            f"{str(ref)[:40]!r} is neither a version number (1, 2, ...: ASCII digits) nor an "
            f"alias name (lowercase letters, digits, '-') of {self.describe()}"
        )

    def _version_dir(self, v: int, alias: str | None = None) -> Path:
        p = self.versions_dir / str(v)
        if p.is_symlink() or not p.is_dir():
            via = f" (alias {alias!r} in {str(self.aliases_file)!r} names it)" if alias else ""
            raise RegistryError(
                f"{self.model_name} version {v} does not exist in {self.root}{via}; versions: "
                f"{self.versions() or 'none'}"
            )
        return p

    def resolve(self, ref: str | int) -> Path | None:
        """Folder of a version given its number or an alias; None if the alias is unset.
        RegistryError for a ref that is neither, or a version that does not exist."""
        v, alias = self._parse_ref(ref)
        return None if v is None else self._version_dir(v, alias)

    def _clean_stale_tmp(self) -> None:
        """Remove ``.tmp-*`` copies left by a register that was killed (called under the lock:
        no live register is copying)."""
        for p in self.versions_dir.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(p, ignore_errors=True)

    def register(self, model_dir: str | os.PathLike, labels: dict[str, Any] | None = None) -> int:
        """Copy a verified model artifact in as the next version. ArtifactError: the model
        fails verification; RegistryError: the copy failed (nothing is left behind)."""
        src = Path(model_dir)
        meta, _, _ = model_artifact.verify(src)
        links = [p for p in src.rglob("*") if p.is_symlink()]
        if links:
            raise artifacts.ArtifactError(
                f"model artifact {str(src)!r}: {links[0].relative_to(src)} is a symbolic link; "
                "a model is registered only with regular files"
            )
        with self._lock():
            tmp: Path | None = None
            try:
                self.versions_dir.mkdir(parents=True, exist_ok=True)
                self._clean_stale_tmp()
                # never a number an alias still names (its folder deleted): the alias must
                # not come to name a different model
                aliases = self.aliases()
                used = [*self.versions(), *aliases.values(), *self.traffic(aliases)]
                version = max([0, *used]) + 1
                tmp = self.versions_dir / f"{TMP_PREFIX}{version}-{os.getpid()}"
                shutil.copytree(src, tmp)
                model_artifact.verify(tmp)  # what is registered is what was verified
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
            except BaseException as e:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
                if isinstance(e, OSError):  # shutil.Error included
                    raise RegistryError(
                        f"registering {str(src)!r} in {self.describe()} failed ({_reason(e)}); "
                        "nothing was registered and the partial copy was removed"
                    ) from None
                raise
        return version

    def set_alias(self, alias: str, version: int) -> int | None:
        """Point ``alias`` at ``version``; returns the version it pointed at before."""
        if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
            raise RegistryError(f"{alias!r} is not an alias name (lowercase letters, digits, '-')")
        if type(version) is not int or version < 1:
            raise RegistryError(f"{version!r} is not a version number (1, 2, ...)")
        with self._lock():
            if not (self.versions_dir / str(version)).is_dir():
                raise RegistryError(f"{self.model_name} version {version} does not exist")
            aliases = self.aliases()
            previous = aliases.get(alias)
            aliases[alias] = version
            try:
                artifacts.write_json(self.aliases_file, aliases)
            except OSError as e:
                raise RegistryError(
                    f"moving alias {alias!r} to version {version} failed ({_reason(e)}); "
                    f"{str(self.aliases_file)!r} is unchanged"
                ) from None
        return previous

    # ---- the Registry interface ------------------------------------------------------
    def locate(self, alias: str) -> str | None:
        p = self.resolve(alias)
        return str(p) if p else None

    def champion(self) -> str | None:
        """``locate(deploy.alias)``, except that an alias naming a version that is gone (its
        folder deleted by hand, a restored backup) or fails verification (a damaged file, see
        :func:`torchkfp.artifacts.model.verify`) is "no champion": a warning is logged and
        kept in ``notes``, and None is returned. Evaluation then gates on the absolute
        thresholds alone, and the next promotion points the alias at the new version, which
        repairs it; without this, every later run would fail in evaluate. A broken
        ``aliases.json`` is still a RegistryError (it needs a human: see :meth:`aliases`)."""
        self.notes = []
        v = self.aliases().get(self.alias)
        if v is None:
            return None
        p = self.versions_dir / str(v)
        where = f"alias {self.alias!r} in {str(self.aliases_file)!r} names {self.model_name}"
        problem = None
        if p.is_symlink() or not p.is_dir():
            problem = f"version {v}, which no longer exists (versions: {self.versions() or 'none'})"
        else:
            try:
                model_artifact.verify(p)
            except artifacts.ArtifactError as e:
                problem = f"version {v}, which fails verification ({e})"
        if problem is None:
            return str(p)
        note = (
            f"{where} {problem}: treated as no usable champion, so the gate uses the absolute "
            "thresholds only; the next promotion moves the alias and repairs it"
        )
        log.warning("warning: %s", note)
        self.notes.append(note)
        return None

    # ---- rollout: traffic and the champion alias -----------------------------------------
    def _moved(self, aliases: dict[str, int], new: int, old: int | None) -> dict[str, int]:
        """``aliases`` with the champion alias on ``new``; the version it leaves (if it still
        exists) becomes the previous champion, else there is none to roll back to."""
        out = dict(aliases)
        out[self.alias] = new
        if old is not None and old != new:
            if self._exists(old):
                out[self.previous_alias] = old
            else:
                out.pop(self.previous_alias, None)
        return out

    def _commit(self, aliases: dict[str, int], traffic: dict[int, int], what: str) -> None:
        """Write ``traffic.json`` then ``aliases.json`` (called under the lock); if the second
        write fails the first is undone, so the two always describe the same state."""
        t = self.traffic_file
        try:
            before = t.read_bytes() if t.is_file() and not t.is_symlink() else None
            artifacts.write_json(t, {str(v): pct for v, pct in sorted(traffic.items())})
        except OSError as e:
            raise RegistryError(f"{what} failed ({_reason(e)}); nothing changed") from None
        try:
            artifacts.write_json(self.aliases_file, aliases)
        except OSError as e:
            with contextlib.suppress(OSError):
                if before is None:
                    t.unlink()
                else:
                    artifacts.write_json(t, json.loads(before))
            raise RegistryError(
                f"{what} failed ({_reason(e)}); {str(self.aliases_file)!r} and "
                f"{str(self.traffic_file)!r} are unchanged"
            ) from None

    def _serving(self, traffic: dict[int, int]) -> list[dict[str, Any]]:
        return [Deployed(str(v), pct).to_dict() for v, pct in sorted(traffic.items())]

    def _result(
        self,
        action: str,
        version: int,
        previous: int | None,
        before: dict[int, int],
        aliases: dict[str, int],
        traffic: dict[int, int],
        t0: float,
        canary: bool = False,
    ) -> DeployResult:
        def s(v: int | None) -> str | None:
            return None if v is None else str(v)

        return DeployResult(
            registry="local",
            model_name=self.model_name,
            version=str(version),
            alias=self.alias,
            previous=s(previous),
            location=str(self.versions_dir / str(version)),
            seconds=time.perf_counter() - t0,
            undeployed=[{"version": str(v)} for v in sorted(before) if v not in traffic],
            action=action,
            champion=s(aliases.get(self.alias)),
            previous_champion=s(aliases.get(self.previous_alias)),
            canary=canary,
            serving=self._serving(traffic),
        )

    def _servable(self, version: int, role: str) -> None:
        """RegistryError unless ``version`` exists and passes verification."""
        if not self._exists(version):
            raise RegistryError(
                f"the {role} {self.model_name} version {version} no longer exists in "
                f"{self.root} (versions: {self.versions() or 'none'})"
            )
        try:
            model_artifact.verify(self.versions_dir / str(version))
        except artifacts.ArtifactError as e:
            raise RegistryError(f"the {role} fails verification: {e}") from None

    def publish(
        self,
        model_uri: str,
        labels: dict[str, str] | None = None,
        traffic_percentage: int | None = None,
    ) -> DeployResult:
        """Register a new version and roll it out (see :mod:`torchkfp.registry.base`): with a
        traffic percentage below 100 and a champion that serves, a canary next to it (the
        alias stays); otherwise it takes all traffic and the champion alias."""
        t0 = time.perf_counter()
        pct = self.traffic_percentage if traffic_percentage is None else traffic_percentage
        if type(pct) is not int or not 0 < pct <= 100:
            raise RegistryError(f"traffic percentage {pct!r} is not a whole number from 1 to 100")
        self.traffic(self.aliases())  # a broken record fails before anything is copied
        version = self.register(model_uri, labels)
        with self._lock():
            aliases = self.aliases()
            before = self.traffic(aliases)
            old = aliases.get(self.alias)
            canary = pct < 100 and old is not None and self._exists(old) and old in before
            if canary:
                traffic, new_aliases = {old: 100 - pct, version: pct}, aliases
            else:
                traffic, new_aliases = {version: 100}, self._moved(aliases, version, old)
            try:
                self._commit(new_aliases, traffic, f"rolling out version {version}")
            except RegistryError as e:
                raise RegistryError(
                    f"{self.model_name} version {version} was registered, but {e}; rerun the "
                    "deploy to register it again and roll it out"
                ) from None
        return self._result("publish", version, old, before, new_aliases, traffic, t0, canary)

    def promote(self) -> DeployResult:
        """Shift the canary (the newest version serving next to the champion) to 100 %: the
        champion alias moves to it and the old champion becomes the previous champion."""
        t0 = time.perf_counter()
        with self._lock():
            aliases = self.aliases()
            before = self.traffic(aliases)
            old = aliases.get(self.alias)
            canaries = [v for v in before if v != old and self._exists(v)]
            if not canaries:
                raise RegistryError(
                    f"no canary to promote in the {self.describe()}: "
                    f"{self._describe_serving(before, old)}; a canary is a version published "
                    "with vertex.traffic_percentage below 100 (torchkfp run or torchkfp "
                    "component deploy with --set vertex.traffic_percentage=10)"
                )
            canary = max(canaries)
            self._servable(canary, "canary")
            traffic, new_aliases = {canary: 100}, self._moved(aliases, canary, old)
            self._commit(new_aliases, traffic, f"promoting version {canary}")
        return self._result("promote", canary, old, before, new_aliases, traffic, t0)

    def rollback(self) -> DeployResult:
        """Return to the previous champion: it serves 100 % and carries the champion alias
        again; the version rolled back from and any canary stop serving. The previous-champion
        alias is used up (a second rollback in a row is refused)."""
        t0 = time.perf_counter()
        with self._lock():
            aliases = self.aliases()
            before = self.traffic(aliases)
            old = aliases.get(self.alias)
            target = aliases.get(self.previous_alias)
            if target is None:
                raise RegistryError(
                    f"no previous champion to roll back to in the {self.describe()}: alias "
                    f"{self.previous_alias!r} is unset (it is set when a version takes over "
                    "from a champion, by a publish at 100% or by torchkfp promote, and a "
                    f"rollback uses it up); {self._describe_serving(before, old)}"
                )
            self._servable(target, f"previous champion (alias {self.previous_alias!r})")
            new_aliases = {**aliases, self.alias: target}
            del new_aliases[self.previous_alias]
            traffic = {target: 100}
            self._commit(new_aliases, traffic, f"rolling back to version {target}")
        return self._result("rollback", target, old, before, new_aliases, traffic, t0)

    def _describe_serving(self, traffic: dict[int, int], champion: int | None) -> str:
        serving = ", ".join(f"version {v} {pct}%" for v, pct in sorted(traffic.items()))
        who = "no champion" if champion is None else f"the champion is version {champion}"
        return f"{who}, serving: {serving or 'nothing'}"

    def status(self) -> dict[str, Any]:
        """The champion, the previous champion and what serves (``traffic.json``)."""
        aliases = self.aliases()
        traffic = self.traffic(aliases)
        champion, previous = aliases.get(self.alias), aliases.get(self.previous_alias)
        return {
            "registry": "local",
            "model_name": self.model_name,
            "location": str(self.root),
            "alias": self.alias,
            "champion": None if champion is None else str(champion),
            "previous_champion": None if previous is None else str(previous),
            "serving": self._serving(traffic),
            "versions": [str(v) for v in self.versions()],
        }
