"""Where the served model comes from: an explicit folder or gs:// URI, ``AIP_STORAGE_URI``
inside a Vertex AI serving container, or the version an alias names in the registry; a gs://
location is read from the GCS FUSE mount when present, else downloaded once."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path

from torchkfp.artifacts import gcs_to_fuse
from torchkfp.config import Config
from torchkfp.errors import RegistryError
from torchkfp.registry import open_registry

log = logging.getLogger("torchkfp.serving")


class ServeError(RuntimeError):
    """The server cannot start: no model to serve, a bad model location, a bad setting."""


def resolve_model(model: str | None, alias: str | None, cfg: Config) -> str:
    """The model folder (or gs:// URI) to serve.

    ``model`` (a path or gs:// URI) wins; else the registry (``deploy.registry``) locates
    the version ``alias`` names; with neither, ``AIP_STORAGE_URI``
    when set (inside a Vertex AI serving container), else the configured ``cfg.deploy.alias``.
    """
    if model and alias:
        raise ServeError("give either --model or --alias, not both")
    if model:
        if "://" not in model and not Path(model).is_dir():
            raise ServeError(
                f"model folder {model!r} does not exist: pass the folder of a model artifact "
                "(it holds model.pt, transform.json and _SUCCESS) or a gs:// URI"
            )
        return model
    if alias is None:
        uri = os.environ.get("AIP_STORAGE_URI")
        if uri:
            return uri
        alias = cfg.deploy.alias
    registry = open_registry(cfg.deploy, cfg.vertex)
    try:
        uri = registry.locate(alias)
    except RegistryError as e:
        raise ServeError(
            f"{e}; the alias points at a missing version: rerun `torchkfp run`"
        ) from None
    if uri is None:
        raise ServeError(
            f"no model has the alias {alias} yet in the {registry.describe()}: run "
            "`torchkfp run` first (or serve a model folder: --model PATH, or AIP_STORAGE_URI)"
        )
    return uri


def localize_model(uri: str) -> str:
    """A local folder holding the model artifact at ``uri`` (downloaded once if it is gs://)."""
    if not uri.startswith("gs://"):
        if "://" in uri:
            raise ServeError(f"model location {uri!r}: use a local folder or a gs:// URI")
        return uri
    fuse = Path(gcs_to_fuse(uri))
    if fuse.is_dir():
        return str(fuse)
    bucket_name, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket_name:
        raise ServeError(f"model location {uri!r} has no bucket: write gs://BUCKET/PATH")
    prefix = prefix.strip("/")
    from google.cloud import storage

    dest = Path(tempfile.mkdtemp(prefix="torchkfp-model-"))
    atexit.register(shutil.rmtree, dest, True)
    n = 0
    try:
        client = storage.Client()
        for blob in client.list_blobs(bucket_name, prefix=f"{prefix}/" if prefix else None):
            rel = blob.name[len(prefix) :].lstrip("/") if prefix else blob.name
            if not rel or rel.endswith("/"):
                continue  # folder placeholder objects
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(target))
            n += 1
    except Exception as e:  # auth, permission, network: google-api-core and google-auth errors
        raise ServeError(
            f"cannot download the model from {uri}: {type(e).__name__}: {e}; check the URI and "
            "that this service account can read the bucket"
        ) from None
    if n == 0:
        raise ServeError(f"no files under {uri}: is AIP_STORAGE_URI the model artifact folder?")
    log.info("downloaded %d files from %s to %s", n, uri, dest)
    return str(dest)
