"""Model artifact folders in Cloud Storage, for the Vertex registry: list one, name its content,
copy it (server side) or upload a local one into the registry's own location, check that one is
still there, and download one.

A folder is complete only once its ``_SUCCESS`` marker exists, so every copy writes the marker
last and a reader that finds no marker treats the folder as absent: a copy that stopped half-way
is never taken for a model. Everything goes through google-cloud-storage, imported inside the
functions; tests run it against fake-gcs-server (``STORAGE_EMULATOR_HOST``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchkfp.artifacts import MARKER, gcs_to_fuse
from torchkfp.errors import ArtifactError, RegistryError


@dataclass(frozen=True)
class FileInfo:
    size: int
    crc32c: str
    """base64 of the big-endian CRC32C, as Cloud Storage reports it."""


def split_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/path/`` -> ``("bucket", "some/path")``."""
    if not uri.startswith("gs://"):
        raise RegistryError(f"{uri!r} is not a gs:// URI")
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket:
        raise RegistryError(f"{uri!r} names no bucket: write gs://BUCKET/PATH")
    return bucket, prefix.strip("/")


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def client(project: str | None) -> Any:
    from google.cloud import storage

    return storage.Client(project=project)


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(...)``; a Cloud Storage error (permission, network) becomes a RegistryError saying
    what was attempted."""
    try:
        return fn(*args, **kwargs)
    except (RegistryError, ArtifactError):
        raise
    except Exception as e:  # google-api-core / google-auth errors
        msg = getattr(e, "message", None) or str(e)
        raise RegistryError(
            f"{what} failed ({type(e).__name__}: {msg}); check the URI and that this account "
            "may read and write the bucket (roles/storage.objectAdmin)"
        ) from e


def list_files(gcs: Any, uri: str) -> dict[str, FileInfo]:
    """Files under the folder ``uri``: relative name -> size and CRC32C (folder placeholder
    objects left out)."""
    bucket, prefix = split_uri(uri)

    def listing() -> dict[str, FileInfo]:
        out = {}
        for blob in gcs.list_blobs(bucket, prefix=f"{prefix}/" if prefix else None):
            rel = blob.name[len(prefix) :].lstrip("/") if prefix else blob.name
            if rel and not rel.endswith("/"):
                out[rel] = FileInfo(int(blob.size or 0), blob.crc32c or "")
        return out

    return _call(f"listing {uri}", listing)


def local_files(folder: str | os.PathLike) -> dict[str, FileInfo]:
    """The same listing for a local folder (CRC32C computed as Cloud Storage does)."""
    import google_crc32c

    root = Path(folder)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            raise ArtifactError(
                f"model artifact {str(root)!r}: {p.relative_to(root)} is a symbolic link; a "
                "model is registered only with regular files"
            )
        if p.is_file():
            crc = google_crc32c.Checksum()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    crc.update(block)
            out[p.relative_to(root).as_posix()] = FileInfo(
                p.stat().st_size, base64.b64encode(crc.digest()).decode()
            )
    return out


def content_id(files: dict[str, FileInfo]) -> str:
    """A short name for a folder's content: equal files (names, sizes, CRC32C) give the same
    id, whether the folder is local or in Cloud Storage."""
    h = hashlib.sha256()
    for name in sorted(files):
        f = files[name]
        h.update(f"{name}\0{f.size}\0{f.crc32c}\n".encode())
    return h.hexdigest()[:16]


def require_complete(files: dict[str, FileInfo], uri: str) -> None:
    """ArtifactError unless the listing is a committed artifact (it holds the marker)."""
    if not files:
        raise ArtifactError(f"model artifact {uri!r}: no files there; is it the model folder?")
    if MARKER not in files:
        raise ArtifactError(
            f"model artifact {uri!r} is incomplete (no {MARKER} marker): the training step "
            "that wrote it did not finish; train again"
        )


def copy_folder(
    gcs: Any,
    source: str | os.PathLike,
    files: dict[str, FileInfo],
    dest: str,
) -> bool:
    """Copy the model folder ``source`` (gs:// URI: server-side rewrites; else a local folder:
    uploads) to the gs:// folder ``dest``, marker last, and check the copy against ``files``.
    A complete copy already at ``dest`` with the same files is kept (the destination is named
    by content); returns whether anything was copied."""
    existing = list_files(gcs, dest)
    if MARKER in existing and existing == files:
        return False
    dbucket, dprefix = split_uri(dest)
    dst = gcs.bucket(dbucket)
    remote = isinstance(source, str) and source.startswith("gs://")
    if remote:
        sbucket, sprefix = split_uri(str(source))
        src = gcs.bucket(sbucket)
    order = sorted(n for n in files if n != MARKER) + [MARKER]
    for name in order:
        target = f"{dprefix}/{name}" if dprefix else name
        if remote:  # rewrite: server side, in as many calls as a large object needs
            blob = src.blob(f"{sprefix}/{name}" if sprefix else name)
            what = f"copying {join(str(source), name)} to {join(dest, name)}"
            copy = dst.blob(target)
            token, _, _ = _call(what, copy.rewrite, blob)
            while token:
                token, _, _ = _call(what, copy.rewrite, blob, token=token)
        else:
            path = Path(source) / name
            _call(
                f"uploading {path} to {join(dest, name)}",
                dst.blob(target).upload_from_filename,
                str(path),
            )
    copied = list_files(gcs, dest)
    wrong = sorted(n for n in files if copied.get(n) != files[n])
    if wrong:
        raise RegistryError(
            f"the copy of {source} at {dest} does not match it ({wrong[:5]} differ in size or "
            "CRC32C): the source changed while it was copied, or the copy failed; deploy again"
        )
    return True


def is_complete(gcs: Any, uri: str) -> bool:
    """Whether the model folder ``uri`` is still there (its marker exists)."""
    bucket, prefix = split_uri(uri)
    blob = gcs.bucket(bucket).blob(f"{prefix}/{MARKER}" if prefix else MARKER)
    return bool(_call(f"checking {join(uri, MARKER)}", blob.exists))


def download_folder(gcs: Any, uri: str, dest: str | os.PathLike) -> Path:
    """Download the complete model folder ``uri`` into the local folder ``dest``."""
    files = list_files(gcs, uri)
    require_complete(files, uri)
    bucket_name, prefix = split_uri(uri)
    bucket = gcs.bucket(bucket_name)
    out = Path(dest)
    for name in files:
        target = out / name
        if not target.resolve().is_relative_to(out.resolve()):
            raise ArtifactError(f"model artifact {uri!r}: {name!r} leaves the folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        blob = bucket.blob(f"{prefix}/{name}" if prefix else name)
        _call(f"downloading {join(uri, name)}", blob.download_to_filename, str(target))
    return out


def readable_path(uri: str) -> str | None:
    """The GCS FUSE path of ``uri`` when this machine has the mount (inside Vertex AI jobs),
    else None."""
    fuse = gcs_to_fuse(uri)
    return fuse if fuse != uri and Path(fuse).is_dir() else None
