"""The Model artifact, self-contained: weights (``model.pt``, a plain state dict),
``model_spec.json`` (the architecture), ``transform.json`` (the fitted transform it was
trained with), ``feature_spec.json`` (what a caller sends) and ``metadata.json`` (training
history, world size, throughput, data fingerprint, code version, and ``sha256``: the checksum of
each of those four files), committed with ``_SUCCESS``.

Optionally it also carries ``model.onnx``, the network exported to ONNX at training time
(:mod:`torchkfp.onnx_export`): then ``metadata.json`` records ``onnx: {"exported": true, "file":
"model.onnx", "opset": ..., "parity": {...}, "seconds": ...}`` and its sha256 beside the others;
a model that was not exported records ``onnx: {"exported": false, "reason": "..."}``. Artifacts
written before exports existed have no ``onnx`` entry.

Training writes it; evaluation, the registries and serving read it through :class:`ModelArtifact`.

Reading one checks it against itself before anything uses it (:func:`verify`, no torch needed,
so the registry and the deploy step run it too): every file present and regular (no symbolic
links), the spec well-formed, the transform applicable, the spec agreeing with the transform
(numeric input width, one embedding per categorical feature with the vocabulary's size + 1,
task, output size = number of classes), the feature spec naming the transform's features, the
spec no larger than the weights file can hold, and each file's sha256 equal to the one written at
commit. An artifact written before checksums were recorded (no ``sha256`` in its metadata) is
checked for everything else. Weights are read weights-only (nothing pickled is executed): a file
that is not a plain state dict, holds NaN/inf, or does not fit the spec is an ArtifactError too.
Every refusal names the artifact, the file and what disagrees.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchkfp.artifacts import transform as transform_artifact
from torchkfp.artifacts.folder import (
    begin,
    commit,
    read_json_object,
    require,
    require_regular_file,
)
from torchkfp.errors import ArtifactError
from torchkfp.labels import TASKS
from torchkfp.transform import FittedTransform

if TYPE_CHECKING:  # torch is imported where weights are read or written: the registry and
    import torch  # the deploy step only need KIND, verify and the folder protocol, and stay light

    from torchkfp.model import ModelSpec

KIND = "model"
WEIGHTS_FILE = "model.pt"
SPEC_FILE = "model_spec.json"
FEATURE_SPEC_FILE = "feature_spec.json"
TRANSFORM_FILE = transform_artifact.FILE
CHECKSUMS = "sha256"
"""Metadata key: ``{file name: sha256 hex digest}`` of :data:`CHECKED_FILES`, written at commit."""
CHECKED_FILES = (WEIGHTS_FILE, SPEC_FILE, TRANSFORM_FILE, FEATURE_SPEC_FILE)
ONNX_FILE = "model.onnx"
"""Optional: the network as ONNX, present exactly when ``metadata["onnx"]["exported"]`` is true,
its sha256 recorded with the others."""
ONNX_KEY = "onnx"

_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
_SPEC_REQUIRED = ("num_numeric", "cardinalities", "hidden_sizes", "dropout", "max_embedding_dim")
_SPEC_OPTIONAL = (
    "task",
    "output_size",
    "factory",
    "factory_args",
    "numeric_embedding",
    "numeric_embedding_dim",
    "periodic_frequencies",
    "periodic_sigma",
    "ensemble_size",
)
MAX_ENSEMBLE_SIZE = 256
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _int(v: Any, least: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def spec_problems(spec: dict[str, Any]) -> list[str]:
    """What is malformed in a model spec read as a dict (empty: nothing)."""
    out: list[str] = []
    missing = [k for k in _SPEC_REQUIRED if k not in spec]
    unknown = sorted(set(spec) - set(_SPEC_REQUIRED) - set(_SPEC_OPTIONAL))
    if missing:
        out.append(f"missing field(s) {missing}")
    if unknown:
        out.append(f"unknown field(s) {unknown[:5]}")
    checks = {
        "num_numeric": lambda v: _int(v, 0),
        "cardinalities": lambda v: isinstance(v, list) and all(_int(c, 1) for c in v),
        "hidden_sizes": lambda v: isinstance(v, list) and all(_int(h, 1) for h in v),
        "dropout": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1,
        "max_embedding_dim": lambda v: _int(v, 1),
        "task": lambda v: v in TASKS,
        "output_size": lambda v: _int(v, 1),
        "factory": lambda v: v is None or (isinstance(v, str) and _FACTORY.fullmatch(v)),
        "factory_args": lambda v: isinstance(v, dict),
        "numeric_embedding": lambda v: v in ("none", "periodic"),
        "numeric_embedding_dim": lambda v: _int(v, 1),
        "periodic_frequencies": lambda v: _int(v, 1),
        "periodic_sigma": lambda v: (
            isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1e3
        ),
        "ensemble_size": lambda v: _int(v, 1) and v <= MAX_ENSEMBLE_SIZE,
    }
    for name, ok in checks.items():
        if name in spec and not ok(spec[name]):
            out.append(f"{name}={_short(spec[name])} is not valid")
    return out


def _short(v: Any, n: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def consistency_problems(spec: dict[str, Any], tf: FittedTransform) -> list[str]:
    """Where a (well-formed) spec disagrees with the transform the model was trained with."""
    out: list[str] = []
    if spec["num_numeric"] != tf.num_numeric_inputs:
        out.append(
            f"{SPEC_FILE} has num_numeric={spec['num_numeric']} but {TRANSFORM_FILE} gives "
            f"{tf.num_numeric_inputs} numeric inputs ({len(tf.numeric)} feature(s) "
            f"{_short(tf.numeric_features)} plus missing-value flags)"
        )
    cards, want = list(spec["cardinalities"]), tf.cardinalities
    if len(cards) != len(want):
        out.append(
            f"{SPEC_FILE} has {len(cards)} categorical input(s) but {TRANSFORM_FILE} has "
            f"{len(want)} categorical feature(s) {_short(tf.categorical_features)}"
        )
    else:
        for name, c, w in zip(tf.categorical_features, cards, want, strict=True):
            if c != w:
                out.append(
                    f"categorical feature {name!r}: {SPEC_FILE} has an embedding of {c} rows "
                    f"but {TRANSFORM_FILE} has {w - 1} vocabulary entries (+1 unknown = {w})"
                )
                break
    task = spec.get("task", "binary")
    if task != tf.task:
        out.append(f"{SPEC_FILE} is a {task} model but {TRANSFORM_FILE} a {tf.task} target")
    size = spec.get("output_size", 1)
    if size != tf.target.output_size:
        out.append(
            f"{SPEC_FILE} has output_size={size} but the {tf.task} target in {TRANSFORM_FILE} "
            f"needs {tf.target.output_size} ({len(tf.target.classes)} classes)"
        )
    return out


def _min_weight_bytes(spec: dict[str, Any]) -> int:
    """The fewest bytes the built-in MLP's weights can take (every embedding at least one wide,
    at least 2 bytes a parameter): a spec describing more than its weights file holds is
    refused before the network is allocated."""
    width = spec["num_numeric"] + len(spec["cardinalities"])
    params = sum(spec["cardinalities"])
    for h in [*spec["hidden_sizes"], spec.get("output_size", 1)]:
        params += width * h + h
        width = h
    return 2 * params


def _onnx_exported(meta: dict[str, Any]) -> bool:
    entry = meta.get(ONNX_KEY)
    return isinstance(entry, dict) and entry.get("exported") is True


def write(
    path: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    spec: ModelSpec,
    tf: FittedTransform,
    metadata: dict[str, Any],
    onnx_model: bytes | None = None,
) -> dict[str, Any]:
    """Write a complete model artifact (marker last); returns the committed metadata, with the
    ``sha256`` of each file. ``onnx_model``: the serialized ONNX export, written as
    ``model.onnx`` (``metadata["onnx"]["exported"]`` must then be true, and false without it).
    A spec that disagrees with the transform is an ArtifactError and nothing is written; a
    failure while writing (a full disk) removes the partial folder."""
    import torch

    spec_d = spec.to_dict()
    found = spec_problems(spec_d) or consistency_problems(spec_d, tf)
    if (onnx_model is not None) != _onnx_exported(metadata):
        raise ArtifactError(
            f"model artifact {str(path)!r} not written: metadata[{ONNX_KEY!r}] must record "
            f"exported=true exactly when an ONNX export ({ONNX_FILE}) is written"
        )
    if found:
        raise ArtifactError(
            f"model artifact {str(path)!r} not written: the model and its transform disagree: "
            + "; ".join(found)
        )
    out = begin(path)
    try:
        torch.save(state_dict, out / WEIGHTS_FILE)
        (out / SPEC_FILE).write_text(json.dumps(spec_d, indent=1))
        tf.save(out / TRANSFORM_FILE)
        (out / FEATURE_SPEC_FILE).write_text(json.dumps(tf.feature_spec(), indent=1))
        names = list(CHECKED_FILES)
        if onnx_model is not None:
            (out / ONNX_FILE).write_bytes(onnx_model)
            names.append(ONNX_FILE)
        sums = {name: sha256_file(out / name) for name in names}
        return commit(out, KIND, {**metadata, CHECKSUMS: sums})
    except BaseException as e:  # a full disk: no half-written model is left behind
        shutil.rmtree(out, ignore_errors=True)
        if isinstance(e, OSError | RuntimeError):  # torch.save reports I/O as RuntimeError
            raise ArtifactError(
                f"writing model artifact {str(path)!r} failed ({_first_line(e)}); the partial "
                "folder was removed"
            ) from None
        raise


def _check_files(p: Path, what: str) -> None:
    for name in CHECKED_FILES:
        require_regular_file(p / name, f"{what}: {name}", "; rerun training to write it again")
    if (p / WEIGHTS_FILE).stat().st_size == 0:
        raise ArtifactError(f"{what}: {WEIGHTS_FILE} is empty; rerun training")


def _check_sums(p: Path, meta: dict[str, Any], what: str) -> None:
    sums = meta.get(CHECKSUMS)
    if sums is None:
        return  # written before checksums were recorded: everything else is still checked
    if not isinstance(sums, dict) or not all(
        isinstance(sums.get(n), str) and _HEX64.fullmatch(sums[n]) for n in CHECKED_FILES
    ):
        raise ArtifactError(
            f"{what}: metadata.json has a malformed {CHECKSUMS!r} entry (a sha256 hex digest "
            f"for each of {list(CHECKED_FILES)}); the artifact was edited after its commit"
        )
    for name in CHECKED_FILES:
        if sha256_file(p / name) != sums[name]:
            raise ArtifactError(
                f"{what}: {name} does not match the sha256 recorded at commit in metadata.json: "
                "the file was changed, replaced or damaged after training; use the model as "
                "training wrote it (or train again)"
            )


def _check_onnx(p: Path, meta: dict[str, Any], what: str) -> None:
    """``model.onnx`` is there exactly when the metadata records an export, a regular file
    whose sha256 is the recorded one."""
    f = p / ONNX_FILE
    present = f.exists() or f.is_symlink()
    if not _onnx_exported(meta):
        if present:
            raise ArtifactError(
                f"{what}: holds {ONNX_FILE} but its metadata.json records no ONNX export "
                f"({ONNX_KEY}.exported is not true): the file was added after training; remove "
                "it, or train again to export the model"
            )
        return
    require_regular_file(
        f,
        f"{what}: {ONNX_FILE}",
        " although metadata.json records an ONNX "
        "export; use the model as training wrote it (or train again)",
    )
    sums = meta.get(CHECKSUMS)
    if sums is None:
        return
    digest = sums.get(ONNX_FILE) if isinstance(sums, dict) else None
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ArtifactError(
            f"{what}: metadata.json records an ONNX export but no sha256 of {ONNX_FILE} in "
            f"{CHECKSUMS!r}; the artifact was edited after its commit"
        )
    if sha256_file(f) != digest:
        raise ArtifactError(
            f"{what}: {ONNX_FILE} does not match the sha256 recorded at commit in metadata.json: "
            "the file was changed, replaced or damaged after training; use the model as "
            "training wrote it (or train again)"
        )


def verify(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], FittedTransform]:
    """Check a model artifact against itself (the module docstring lists what) without torch;
    returns its metadata, its spec (as a dict) and its transform, or raises ArtifactError."""
    p = Path(path)
    what = f"model artifact {str(p)!r}"
    meta = require(p, KIND)
    _check_files(p, what)
    spec = read_json_object(p / SPEC_FILE, what)
    found = spec_problems(spec)
    if found:
        raise ArtifactError(f"{what}: {SPEC_FILE} is not a model spec: {'; '.join(found)}")
    tf = transform_artifact.load_file(p / TRANSFORM_FILE, what)
    found = consistency_problems(spec, tf)
    if found:
        raise ArtifactError(f"{what}: the files disagree: {'; '.join(found)}")
    fs = read_json_object(p / FEATURE_SPEC_FILE, what)
    cats = fs.get("categorical")
    for key, got, want in (
        ("numeric", fs.get("numeric"), tf.numeric_features),
        ("categorical", list(cats) if isinstance(cats, dict) else cats, tf.categorical_features),
        ("task", fs.get("task"), tf.task),
        ("label", fs.get("label"), tf.label),
    ):
        if got != want:
            raise ArtifactError(
                f"{what}: {FEATURE_SPEC_FILE} has {key}={_short(got)} but {TRANSFORM_FILE} "
                f"has {_short(want)}: the files come from different training runs"
            )
    weight_bytes = (p / WEIGHTS_FILE).stat().st_size
    if spec.get("factory") is None and _min_weight_bytes(spec) > weight_bytes:
        raise ArtifactError(
            f"{what}: {SPEC_FILE} describes a network of at least "
            f"{_min_weight_bytes(spec) // 2} parameters but {WEIGHTS_FILE} is only "
            f"{weight_bytes} bytes: the spec does not belong to these weights"
        )
    _check_sums(p, meta, what)
    _check_onnx(p, meta, what)
    return meta, spec, tf


def _first_line(e: BaseException, n: int = 200) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:n]}"


@dataclass
class ModelArtifact:
    """A complete model artifact, read back and verified (:func:`verify`): its spec, transform
    and metadata; ``module()`` builds the network with its weights (weights-only load: nothing
    pickled is executed)."""

    path: Path
    spec: ModelSpec
    transform: FittedTransform
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelArtifact:
        from torchkfp.model import ModelSpec

        meta, spec, tf = verify(path)
        return cls(Path(path), ModelSpec(**spec), tf, meta)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights, read weights-only from the bytes whose checksum is checked (so the
        file cannot change between the check and the load); ArtifactError if they are not a
        state dict of finite tensors."""
        import torch

        what = f"model artifact {str(self.path)!r}"
        try:
            data = (self.path / WEIGHTS_FILE).read_bytes()
        except OSError as e:
            reason = _first_line(e)
            raise ArtifactError(f"{what}: {WEIGHTS_FILE} cannot be read ({reason})") from None
        sums = self.metadata.get(CHECKSUMS)
        if isinstance(sums, dict) and hashlib.sha256(data).hexdigest() != sums.get(WEIGHTS_FILE):
            raise ArtifactError(
                f"{what}: {WEIGHTS_FILE} does not match the sha256 recorded at commit in "
                "metadata.json (it changed after the artifact was loaded)"
            )
        try:
            state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except Exception as e:  # garbage, truncated, or a pickle that would run code
            raise ArtifactError(
                f"{what}: {WEIGHTS_FILE} is not a weights-only state dict and was not loaded "
                f"({_first_line(e)})"
            ) from None
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise ArtifactError(
                f"{what}: {WEIGHTS_FILE} holds a {type(state).__name__}, not a state dict of "
                "named tensors"
            )
        for k, v in state.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise ArtifactError(
                    f"{what}: {WEIGHTS_FILE} has NaN or infinite values in {k!r}; the training "
                    "diverged or the file is damaged: train again"
                )
        return state

    @property
    def has_onnx(self) -> bool:
        """Whether the artifact carries an ONNX export (``model.onnx``)."""
        return _onnx_exported(self.metadata)

    def onnx_model(self) -> bytes:
        """The serialized ONNX export, read from the bytes whose checksum is checked;
        ArtifactError when the artifact has none (the reason training recorded is named)."""
        what = f"model artifact {str(self.path)!r}"
        if not self.has_onnx:
            entry = self.metadata.get(ONNX_KEY)
            if isinstance(entry, dict) and entry.get("reason"):
                why = f"training did not export it: {str(entry['reason'])[:400]}"
            elif entry is None:
                why = "it was written before torchkfp exported ONNX, or with train.export_onnx off"
            else:
                why = f"metadata.json has {ONNX_KEY}={_short(entry)}"
            raise ArtifactError(
                f"{what} has no ONNX export ({ONNX_FILE}) to run on ONNX Runtime ({why}); serve "
                "it on PyTorch (--runtime torch), or train it again with train.export_onnx: true"
            )
        try:
            data = (self.path / ONNX_FILE).read_bytes()
        except OSError as e:
            raise ArtifactError(f"{what}: {ONNX_FILE} cannot be read ({_first_line(e)})") from None
        sums = self.metadata.get(CHECKSUMS)
        if isinstance(sums, dict) and hashlib.sha256(data).hexdigest() != sums.get(ONNX_FILE):
            raise ArtifactError(
                f"{what}: {ONNX_FILE} does not match the sha256 recorded at commit in "
                "metadata.json (it changed after the artifact was loaded)"
            )
        return data

    def module(self) -> torch.nn.Module:
        """The network with its weights, in eval mode (a user's model factory is imported)."""
        from torchkfp.model import build_model

        state = self.state_dict()
        net = build_model(self.spec)
        try:
            net.load_state_dict(state)
        except (RuntimeError, ValueError, TypeError) as e:
            detail = " ".join(str(e).split())
            raise ArtifactError(
                f"model artifact {str(self.path)!r}: {WEIGHTS_FILE} does not fit {SPEC_FILE} "
                f"({detail[:300]}{'...' if len(detail) > 300 else ''})"
            ) from None
        return net.eval()
