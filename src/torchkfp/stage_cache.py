"""The local stage cache: ``torchkfp run`` reuses an earlier run's ingest, preprocess and train
outputs when nothing they depend on changed, the way Vertex AI Pipelines' cache does.

**Keys** are built like Vertex's: the stage, its config sections (as the stage receives them),
the code (a digest of the torchkfp library's source files, as the image is part of the key on
Vertex; for train also torch's version and the source file of ``train.model_factory``'s
module), and what it reads: for ingest the source data's fingerprint
(:mod:`torchkfp.source_fingerprint`, computed by the pipeline's uncached first step), for the
later stages the cache keys of their input artifacts (every artifact records the key it was
made under in its KFP metadata, ``cache_key``, so keys chain) and the data fingerprint. Train
leaves ``train.timeout_s`` out, as its checkpoint key does (it does not change the weights).

**Entries** live under ``<root>/<stage>/<key>/``: one folder per output artifact (a copy, hard
links where the file system allows) and ``entry.json``. A store is atomic: the entry is built in
a temporary folder, then renamed into place; a lookup ignores an entry whose ``entry.json`` is
missing or does not match, or whose artifacts are incomplete (no ``_SUCCESS`` marker) or
unreadable, and the next store replaces it. A hit copies (hard-links) the entry's artifacts
into the task's output folders, the ``_SUCCESS`` marker last. A store that fails (a full disk)
leaves the stage's own outputs as they are and only prints why.

**Where**: the runner sets :data:`CACHE_ROOT_ENV` for the stages it starts (``torchkfp run``:
``<run.pipeline_root>/cache``); unset (Vertex AI, ``torchkfp component ...``), every stage just
runs. :data:`CACHE_REUSE_ENV` = ``0`` (``torchkfp run --no-cache``): run every stage afresh,
and still store (replace) the entries.

The component of each cached stage makes one call here (:func:`ingest`, :func:`preprocess`,
:func:`train`): reuse or produce.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

# the stages' own modules (and torch, through them) are imported where a stage is run, so a
# cache hit of ingest costs no torch import
from torchkfp import __version__, artifacts
from torchkfp.config import (
    DataConfig,
    PreprocessConfig,
    SplitConfig,
    TrainConfig,
    WarehouseConfig,
)

CACHE_ROOT_ENV = "TORCHKFP_CACHE_ROOT"
"""The stage cache's folder (``torchkfp run`` sets it); unset: no caching."""
CACHE_REUSE_ENV = "TORCHKFP_CACHE_REUSE"
"""``0``: do not reuse entries (run afresh), still store them (``torchkfp run --no-cache``)."""
ENTRY_FILE = "entry.json"
FORMAT = 1
"""Bumped when the key or the entry layout changes (old entries are then never found)."""
HIT, MISS, OFF = "hit", "miss", "off"
KEY_METADATA = "cache_key"
"""The KFP artifact metadata field holding the key an artifact was made (or reused) under."""
STATUS_METADATA = "cache"
"""The KFP artifact metadata field holding hit / miss / off."""
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_STALE_TMP_SECONDS = 24 * 3600

T = TypeVar("T")


@dataclass(frozen=True)
class Cache:
    root: Path
    reuse: bool = True

    @classmethod
    def from_env(cls) -> Cache | None:
        """The cache the runner configured for this process (None: caching is off)."""
        root = os.environ.get(CACHE_ROOT_ENV)
        if not root:
            return None
        return cls(Path(root), reuse=os.environ.get(CACHE_REUSE_ENV, "1") != "0")


@dataclass(frozen=True)
class Outcome:
    """What the cache did for one stage: ``hit`` (outputs reused), ``miss`` (produced, then
    stored) or ``off`` (produced, not cached: no cache configured, or no key: ``note`` says
    why)."""

    status: str
    key: str | None = None
    note: str | None = None
    configured: bool = True
    """False: no stage cache at all (Vertex AI, ``torchkfp component``)."""

    def metadata(self) -> dict[str, str]:
        """The fields a component adds to each output artifact's KFP metadata (none without a
        stage cache: on Vertex AI, Vertex's own cache is the one that counts)."""
        if not self.configured:
            return {}
        out = {STATUS_METADATA: self.status}
        if self.key:
            out[KEY_METADATA] = self.key
        return out


@dataclass(frozen=True)
class StageRun(Generic[T]):
    result: T
    """The stage's own result (rebuilt from the reused artifacts' metadata on a hit)."""
    cache: Outcome
    checkpoint_dir: str | None = None
    """train: the folder it checkpointed in (None on a hit: it did not train)."""


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of the torchkfp library's source (its ``.py`` and ``.sql`` files, by relative
    path): after a code change no earlier output is reused (a few milliseconds)."""
    import torchkfp

    h = hashlib.sha256()
    for base in sorted(torchkfp.__path__):
        root = Path(base)
        for p in sorted(root.rglob("*")):
            if p.suffix in (".py", ".sql") and "__pycache__" not in p.parts and p.is_file():
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _module_digest(factory: str | None) -> str:
    """sha256 of the source file of ``train.model_factory``'s module ("" without a factory;
    "unknown" when it cannot be found without running it: then its name alone counts)."""
    if not factory:
        return ""
    try:
        spec = importlib.util.find_spec(factory.split(":")[0])
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return "unknown"
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def stage_key(stage: str, settings: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """sha256 of the stage, its settings, the code (:func:`code_digest`) and its inputs'
    identities."""
    blob = json.dumps(
        {
            "format": FORMAT,
            "torchkfp": __version__,
            "code": code_digest(),
            "stage": stage,
            "settings": settings,
            "inputs": inputs,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def input_key(metadata: Mapping[str, Any] | None) -> str:
    """The cache key an input artifact's KFP metadata records ("" when it has none)."""
    key = (metadata or {}).get(KEY_METADATA)
    return key if isinstance(key, str) else ""


def _say(stage: str, text: str) -> None:
    # stderr: `torchkfp component` keeps stdout for its one JSON line; kfp.local shows both
    print(f"[cache] {stage}: {text}", file=sys.stderr, flush=True)


# ---- entries -------------------------------------------------------------------------------
def _entry_dir(cache: Cache, stage: str, key: str) -> Path:
    return cache.root / stage / key


def _check_entry(entry: Path, stage: str, key: str, outputs: Mapping[str, str]) -> str | None:
    """Why ``entry`` cannot be reused (None: it can). ``outputs``: name -> artifact kind."""
    if entry.is_symlink() or not entry.is_dir():
        return "not a folder"
    try:
        meta = artifacts.read_json_object(entry / ENTRY_FILE, f"cache entry {str(entry)!r}")
    except artifacts.ArtifactError as e:
        return f"{e} (an interrupted store?)"
    want = {"format": FORMAT, "stage": stage, "key": key, "outputs": dict(outputs)}
    got = {k: meta.get(k) for k in want}
    if got != want:
        return f"its {ENTRY_FILE} does not match (expected {want}, found {got})"
    for name, kind in outputs.items():
        try:
            artifacts.require(entry / name, kind)
        except artifacts.ArtifactError as e:
            return str(e)
        for dirpath, dirnames, filenames in os.walk(entry / name):
            for n in dirnames + filenames:
                if os.path.islink(os.path.join(dirpath, n)):
                    return f"{os.path.join(dirpath, n)!r} is a symbolic link"
    return None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a plain copy
        shutil.copy2(src, dst)


def _copy_artifact(src: Path, dst: Path) -> None:
    """Copy (hard-link) the artifact folder ``src`` into ``dst`` (which must not exist, or be
    an artifact output folder), the ``_SUCCESS`` marker last: until then ``dst`` is visibly
    incomplete."""
    out = artifacts.begin(dst)
    marker = None
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for d in dirnames:
            (out / rel / d).mkdir()
        for f in filenames:
            if rel == Path(".") and f == artifacts.MARKER:
                marker = Path(dirpath) / f
                continue
            _link_or_copy(os.path.join(dirpath, f), str(out / rel / f))
    if marker is not None:
        _link_or_copy(str(marker), str(out / artifacts.MARKER))


def _remove(path: Path) -> None:
    """Remove a folder: renamed aside first, so no reader ever sees it half-deleted."""
    trash = path.with_name(f"{_TRASH_PREFIX}{path.name}-{secrets.token_hex(4)}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _clear_stale(stage_dir: Path) -> None:
    """Temporary folders that a killed run's store left behind (older than a day)."""
    now = time.time()
    for p in stage_dir.iterdir():
        if p.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
            try:
                if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


def _store(
    cache: Cache,
    stage: str,
    key: str,
    outputs: Mapping[str, tuple[Path, str]],
    about: Mapping[str, Any],
) -> Path:
    """Put the committed ``outputs`` into the cache under ``key``, atomically, replacing an
    earlier entry. Raises OSError / ArtifactError (the caller reports, and goes on)."""
    stage_dir = cache.root / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    _clear_stale(stage_dir)
    tmp = stage_dir / f"{_TMP_PREFIX}{key[:16]}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for name, (path, kind) in outputs.items():
            artifacts.require(path, kind)  # only committed artifacts go in
            _copy_artifact(path, tmp / name)
        artifacts.write_json(
            tmp / ENTRY_FILE,
            {
                "format": FORMAT,
                "stage": stage,
                "key": key,
                "outputs": {name: kind for name, (_, kind) in outputs.items()},
                "created": dt.datetime.now(dt.timezone.utc).isoformat(),
                **about,
            },
        )
        final = _entry_dir(cache, stage, key)
        if final.exists() or final.is_symlink():
            _remove(final)
        os.rename(tmp, final)  # a concurrent store of the same key: theirs stays
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def reuse_or_produce(
    stage: str,
    key: str | None,
    outputs: Mapping[str, tuple[str | os.PathLike, str]],
    produce: Callable[[], T],
    *,
    about: Mapping[str, Any] | None = None,
    expected_fingerprint: str | None = None,
    cache: Cache | None = None,
    why_no_key: str = "",
) -> tuple[T | None, Outcome]:
    """Reuse the cached outputs of ``stage`` under ``key`` (the result is then None), or run
    ``produce`` (which writes the committed artifacts ``outputs``: name -> (path, kind)) and
    store them. ``cache``: default the one the runner configured (:meth:`Cache.from_env`);
    None and no configured cache, or no ``key``: just ``produce`` (``off``).
    ``expected_fingerprint``: a cached artifact must hold this data fingerprint (else the
    entry is ignored). ``about``: what the key was made of, kept in ``entry.json``."""
    cache = cache or Cache.from_env()
    outs = {name: (Path(p), kind) for name, (p, kind) in outputs.items()}
    if cache is None:
        return produce(), Outcome(OFF, note="no stage cache configured", configured=False)
    if not key:
        _say(stage, f"off ({why_no_key or 'no cache key'})")
        return produce(), Outcome(OFF, note=why_no_key or "no cache key")
    entry = _entry_dir(cache, stage, key)
    kinds = {name: kind for name, (_, kind) in outs.items()}
    if cache.reuse and (entry.exists() or entry.is_symlink()):
        why = _check_entry(entry, stage, key, kinds)
        if why is None and expected_fingerprint:
            try:
                for name, kind in kinds.items():
                    meta = artifacts.require(entry / name, kind)
                    artifacts.check_fingerprint(meta, expected_fingerprint, entry / name)
            except artifacts.ArtifactError as e:
                why = str(e)
        if why is None:
            try:
                for name, (path, _) in outs.items():
                    _copy_artifact(entry / name, path)
            except (OSError, artifacts.ArtifactError) as e:
                # e.g. a concurrent --no-cache run replaced the entry: the stage runs (its
                # output folder holds only artifact files, which it clears)
                why = f"it could not be copied ({type(e).__name__}: {e})"
            else:
                _say(stage, f"hit (key {key[:12]}): reused {entry}")
                return None, Outcome(HIT, key)
        _say(stage, f"cache entry {entry} ignored: {why}")
    result = produce()
    note = None
    try:
        made_of = {**(about or {}), "torchkfp": __version__, "code": code_digest()}
        stored = _store(cache, stage, key, outs, {"made_of": made_of})
        _say(
            stage, f"miss (key {key[:12]}{'' if cache.reuse else ', --no-cache'}): stored {stored}"
        )
    except (OSError, artifacts.ArtifactError) as e:
        note = f"not stored ({type(e).__name__}: {e})"
        _say(stage, f"miss (key {key[:12]}): {note}")
    return result, Outcome(MISS, key, note)


# ---- the cached stages ---------------------------------------------------------------------
def ingest(
    wc: WarehouseConfig,
    data: DataConfig,
    split: SplitConfig,
    out_dir: str | os.PathLike,
    source_fingerprint: str,
) -> StageRun:
    """:func:`torchkfp.ingest.ingest`, reused when the settings and the source fingerprint
    are those of a cached run (no fingerprint: not cached)."""
    from torchkfp.artifacts import dataset as dataset_artifact
    from torchkfp.ingest import IngestResult
    from torchkfp.ingest import ingest as run_ingest

    t0 = time.perf_counter()
    settings = {"warehouse": wc.to_dict(), "data": data.to_dict(), "split": split.to_dict()}
    inputs = {"source_fingerprint": source_fingerprint}
    key = stage_key("ingest", settings, inputs) if source_fingerprint else None
    r, outcome = reuse_or_produce(
        "ingest",
        key,
        {"dataset": (out_dir, dataset_artifact.KIND)},
        lambda: run_ingest(wc, data, split, out_dir),
        about={"settings": settings, "inputs": inputs},
        why_no_key="no source fingerprint",
    )
    if r is None:
        meta = artifacts.require(out_dir, dataset_artifact.KIND)
        r = IngestResult(str(out_dir), meta["rows"], meta["fingerprint"], time.perf_counter() - t0)
    return StageRun(r, outcome)


def preprocess(
    data: DataConfig,
    settings: PreprocessConfig,
    dataset_dir: str | os.PathLike,
    transform_dir: str | os.PathLike,
    features_dir: str | os.PathLike,
    data_fingerprint: str | None,
    dataset_key: str,
) -> StageRun:
    """:func:`torchkfp.preprocess.preprocess`, reused when the settings, the dataset's cache
    key and the data fingerprint are those of a cached run."""
    from torchkfp.artifacts import features as features_artifact
    from torchkfp.artifacts import transform as transform_artifact
    from torchkfp.preprocess import PreprocessResult
    from torchkfp.preprocess import preprocess as run_preprocess

    t0 = time.perf_counter()
    conf = {"data": data.to_dict(), "preprocess": settings.to_dict()}
    inputs = {"dataset": dataset_key, "data_fingerprint": data_fingerprint or ""}
    key = stage_key("preprocess", conf, inputs) if dataset_key else None
    r, outcome = reuse_or_produce(
        "preprocess",
        key,
        {
            "transform": (transform_dir, transform_artifact.KIND),
            "features": (features_dir, features_artifact.KIND),
        },
        lambda: run_preprocess(
            data, settings, dataset_dir, transform_dir, features_dir, data_fingerprint
        ),
        about={"settings": conf, "inputs": inputs},
        expected_fingerprint=data_fingerprint,
        why_no_key="the dataset has no cache key",
    )
    if r is None:
        fmeta = artifacts.require(features_dir, features_artifact.KIND)
        r = PreprocessResult(
            str(transform_dir),
            str(features_dir),
            fmeta["rows"],
            fmeta["label_stats"],
            time.perf_counter() - t0,
        )
    return StageRun(r, outcome)


def train(
    tc: TrainConfig,
    features_dir: str | os.PathLike,
    transform_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    data_fingerprint: str | None,
    features_key: str,
    transform_key: str,
) -> StageRun:
    """Training (:func:`torchkfp.training.launch`, checkpointing where
    :func:`torchkfp.training.default_checkpoint_dir` says), reused when the train settings
    (but ``timeout_s``, as for the checkpoint key), the inputs' cache keys and the data
    fingerprint are those of a cached run."""
    from torchkfp.artifacts import model as model_artifact
    from torchkfp.training import TrainResult, checkpoint_key, default_checkpoint_dir, launch
    from torchkfp.training.launcher import KEY_EXCLUDES  # what does not change the weights

    t0 = time.perf_counter()
    conf = {"train": {k: v for k, v in tc.to_dict().items() if k not in KEY_EXCLUDES}}
    inputs = {
        "features": features_key,
        "transform": transform_key,
        "data_fingerprint": data_fingerprint or "",
        "torch": _version("torch"),
        "model_factory_source": _module_digest(tc.model_factory),
    }
    key = stage_key("train", conf, inputs) if features_key and transform_key else None
    used: list[str] = []

    def produce() -> TrainResult:
        ck = default_checkpoint_dir(model_dir, checkpoint_key(tc, features_dir, transform_dir))
        used.append(ck)
        return launch(tc, features_dir, transform_dir, model_dir, ck, data_fingerprint)

    r, outcome = reuse_or_produce(
        "train",
        key,
        {"model": (model_dir, model_artifact.KIND)},
        produce,
        about={"settings": conf, "inputs": inputs},
        expected_fingerprint=data_fingerprint,
        why_no_key="its inputs have no cache key",
    )
    if r is None:
        r = TrainResult.from_model(model_dir, time.perf_counter() - t0, reused=True)
    return StageRun(r, outcome, used[0] if used else None)
