"""Artifact folders that are either complete or visibly not (every artifact kind uses this).

A stage writes into its output folder, then ``commit`` writes ``metadata.json`` and last a
``_SUCCESS`` marker. Readers call ``require`` and refuse a folder without the marker, so a
crashed or half-written stage is never taken for a good artifact (this also holds on Vertex,
where output folders are GCS FUSE mounts and renames are not atomic).

Everything read from an artifact folder is input from outside and is checked where it is read:
``require`` refuses a marker or metadata that is a symbolic link, a ``metadata.json`` that is
missing, too large, not UTF-8, not JSON or not an object, and a wrong or missing ``kind``; every
refusal is an :class:`~torchkfp.errors.ArtifactError` naming the file and what is wrong.
``begin`` only ever deletes a folder that an earlier attempt of a stage wrote (see
:data:`ARTIFACT_ENTRIES`), never a folder of yours given by mistake as an output.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from torchkfp.errors import ArtifactError

MARKER = "_SUCCESS"
METADATA = "metadata.json"
MAX_JSON_BYTES = 64 * 2**20
"""The largest JSON file an artifact reader accepts (metadata, model spec, transform)."""

ARTIFACT_ENTRIES = frozenset(
    {
        MARKER,
        METADATA,
        f".{METADATA}.tmp",
        # dataset: one folder of Parquet shards per split; features: one tensor file per split
        *("train", "validation", "test"),
        *("train.pt", "validation.pt", "test.pt"),
        # transform and model
        *("transform.json", "model.pt", "model_spec.json", "feature_spec.json", "model.onnx"),
        # a registered copy of a model
        *("version.json", ".version.json.tmp"),
    }
)
"""The names artifact writers put at the top of their folder: ``begin`` clears an existing
output folder only if it holds the marker or nothing but these names (an earlier attempt);
anything else is refused, so ``--out .`` or ``--out ~`` never deletes your files."""


def gcs_to_fuse(uri: str) -> str:
    """gs://bucket/path -> /gcs/bucket/path (Vertex mounts GCS there in every job)."""
    return "/gcs/" + uri[len("gs://") :] if uri.startswith("gs://") else uri


def fuse_to_gcs(path: str) -> str:
    """/gcs/bucket/path -> gs://bucket/path."""
    return "gs://" + path[len("/gcs/") :] if path.startswith("/gcs/") else path


def _os_reason(e: OSError) -> str:
    return f"{type(e).__name__}: {e.strerror or e}"


def begin(path: str | os.PathLike) -> Path:
    """Prepare an empty output folder (an earlier partial attempt is cleared).

    What is there already is deleted only if it is an empty file or a folder an artifact
    writer made (it holds the ``_SUCCESS`` marker, or only :data:`ARTIFACT_ENTRIES`);
    anything else (your folder, a file with content, a symbolic link) is an ArtifactError
    and nothing is touched. A folder that cannot be created is an ArtifactError too."""
    p = Path(path)
    try:
        if p.is_symlink():
            raise ArtifactError(
                f"output {str(p)!r} is a symbolic link; give the folder it points to, or a new path"
            )
        if p.is_dir():
            names = {e.name for e in p.iterdir()}
            foreign = sorted(names - ARTIFACT_ENTRIES)
            if foreign and MARKER not in names:
                raise ArtifactError(
                    f"output folder {str(p)!r} already holds files that no stage wrote "
                    f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); it is "
                    "not deleted: give a new or empty folder as the output"
                )
            shutil.rmtree(p)
        elif p.exists():
            if not p.is_file() or p.stat().st_size:
                raise ArtifactError(
                    f"output {str(p)!r} is an existing file, not an artifact folder; it is not "
                    "replaced: give a new or empty folder as the output"
                )
            p.unlink()
        p.mkdir(parents=True)
    except OSError as e:
        raise ArtifactError(f"cannot create output folder {str(p)!r} ({_os_reason(e)})") from None
    return p


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON, atomically: a temporary file then a rename. On any failure (a
    full disk, a value that is not JSON) the temporary file is removed and ``path`` keeps
    what it held before; the error propagates."""
    p = Path(path)
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)  # before any file is opened
    tmp = p.with_name(f".{p.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, p)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def require_regular_file(p: Path, where: str, missing_hint: str = "") -> None:
    """ArtifactError unless ``p`` is a regular file (not missing, not a folder, not a symbolic
    link: a link can point anywhere, and change after the artifact was committed)."""
    if p.is_symlink():
        raise ArtifactError(
            f"{where} is a symbolic link; artifact files must be regular files (a link can "
            "point anywhere, and change after the artifact was committed)"
        )
    if not p.exists():
        raise ArtifactError(f"{where} is missing{missing_hint}")
    if not p.is_file():
        raise ArtifactError(f"{where} is not a regular file")


def read_json_object(path: str | os.PathLike, what: str, limit: int = MAX_JSON_BYTES) -> dict:
    """The JSON object in ``path`` (``what`` names it in errors, e.g. "model artifact '/m'").
    ArtifactError if it is missing, a symbolic link or not a regular file, over ``limit``
    bytes, not UTF-8, not JSON (or nested too deep to read), or not an object."""
    p = Path(path)
    where = f"{what}: {p.name}"
    require_regular_file(p, where)
    try:
        size = p.stat().st_size
        if size > limit:
            raise ArtifactError(f"{where} is {size} bytes, more than the {limit}-byte limit")
        raw = p.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{where} cannot be read ({_os_reason(e)})") from None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ArtifactError(
            f"{where} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start})"
        ) from None
    except ValueError as e:
        raise ArtifactError(f"{where} is not valid JSON ({e})") from None
    except RecursionError:
        raise ArtifactError(f"{where} is nested too deeply to be read") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{where} must hold a JSON object, not {type(obj).__name__}")
    return obj


def commit(path: str | os.PathLike, kind: str, metadata: dict[str, Any]) -> dict[str, Any]:
    p = Path(path)
    meta = {"kind": kind, **metadata}
    write_json(p / METADATA, meta)
    (p / MARKER).write_text(kind + "\n")
    return meta


def check_fingerprint(meta: dict[str, Any], expected: str | None, path: Any) -> None:
    got = meta.get("fingerprint") or meta.get("data_fingerprint")
    if expected and got != expected:
        raise ArtifactError(
            f"{str(path)!r} holds data with fingerprint {str(got)[:12]}..., expected "
            f"{expected[:12]}...: the input comes from a different ingestion run; rerun "
            "the stages after ingestion"
        )


def require(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Return the metadata of a complete artifact of ``kind`` or raise a clear error."""
    p = Path(path)
    if not p.is_dir():
        what = "is not a folder" if p.exists() else "does not exist"
        raise ArtifactError(f"{kind} artifact {str(p)!r} {what}")
    marker = p / MARKER
    if marker.is_symlink():
        raise ArtifactError(
            f"{kind} artifact {str(p)!r}: its {MARKER} marker is a symbolic link; artifact files "
            "must be regular files: rerun the stage that wrote it"
        )
    if not marker.is_file():
        raise ArtifactError(
            f"{kind} artifact {str(p)!r} is incomplete (no {MARKER} marker): the stage that "
            "wrote it failed or is still running; rerun that stage"
        )
    if not (p / METADATA).exists() and not (p / METADATA).is_symlink():
        raise ArtifactError(
            f"{kind} artifact {str(p)!r} has a {MARKER} marker but no {METADATA}: it was not "
            "committed by a torchkfp stage, or was damaged; rerun the stage that wrote it"
        )
    meta = read_json_object(p / METADATA, f"{kind} artifact {str(p)!r}")
    got = meta.get("kind")
    if got != kind:
        if not isinstance(got, str):
            raise ArtifactError(
                f"{kind} artifact {str(p)!r}: {METADATA} names no artifact kind ('kind' is "
                f"{got!r}); rerun the stage that wrote it"
            )
        raise ArtifactError(f"{str(p)!r} holds a {got[:40]!r} artifact, expected {kind!r}")
    return meta
