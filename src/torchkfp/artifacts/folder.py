"""Artifact folders that are either complete or visibly not (every artifact kind uses this).

A stage writes into its output folder, then ``commit`` writes ``metadata.json`` and last a
``_SUCCESS`` marker. Readers call ``require`` and refuse a folder without the marker, so a
crashed or half-written stage is never taken for a good artifact (this also holds on Vertex,
where output folders are GCS FUSE mounts and renames are not atomic).
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


def gcs_to_fuse(uri: str) -> str:
    """gs://bucket/path -> /gcs/bucket/path (Vertex mounts GCS there in every job)."""
    return "/gcs/" + uri[len("gs://") :] if uri.startswith("gs://") else uri


def fuse_to_gcs(path: str) -> str:
    """/gcs/bucket/path -> gs://bucket/path."""
    return "gs://" + path[len("/gcs/") :] if path.startswith("/gcs/") else path


def begin(path: str | os.PathLike) -> Path:
    """Prepare an empty output folder (an earlier partial attempt is cleared)."""
    p = Path(path)
    if p.exists():
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    p.mkdir(parents=True)
    return p


def write_json(path: str | os.PathLike, obj: Any) -> None:
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, p)


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
        raise ArtifactError(f"{kind} artifact {str(p)!r} does not exist")
    if not (p / MARKER).is_file():
        raise ArtifactError(
            f"{kind} artifact {str(p)!r} is incomplete (no {MARKER} marker): the stage that "
            "wrote it failed or is still running; rerun that stage"
        )
    meta = json.loads((p / METADATA).read_text())
    if meta.get("kind") != kind:
        raise ArtifactError(f"{str(p)!r} holds a {meta.get('kind')!r} artifact, expected {kind!r}")
    return meta
