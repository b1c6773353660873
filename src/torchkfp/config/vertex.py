"""What a run on Vertex AI needs beyond a valid config: ``validate_for_vertex``.

These checks need no request to Google Cloud: ``torchkfp submit --dry-run`` runs them offline.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torchkfp.config.base import ConfigError

if TYPE_CHECKING:  # never imported at run time: torchkfp.config imports this module
    from torchkfp.config import Config

_PROJECT_ID = re.compile(r"^([a-z][a-z0-9.\-]*[a-z0-9]:)?[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
_PROJECT_NUMBER = re.compile(r"^[0-9]{6,20}$")
_REGION = re.compile(r"^[a-z]+(-[a-z]+)+[0-9]+$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$")
_NETWORK = re.compile(r"^projects/[^/\s]+/global/networks/[^/\s]+$")
_KMS_KEY = re.compile(
    r"^projects/[^/\s]+/locations/(?P<loc>[^/\s]+)/keyRings/[^/\s]+/cryptoKeys/[^/\s]+$"
)
_LABEL_KEY = re.compile(r"^[\w\-]{1,63}$")
_TENSORBOARD = re.compile(r"^projects/[^/\s]+/locations/(?P<loc>[^/\s]+)/tensorboards/[^/\s]+$")


def _bucket_of(uri: str) -> str | None:
    if not uri.startswith("gs://"):
        return None
    return uri[len("gs://") :].split("/", 1)[0] or None


def _check_output_folders(cfg: Config) -> None:
    """vertex.base_output_directory and vertex.models_root: gs://BUCKET[/folder] with a valid
    bucket name."""
    v = cfg.vertex
    for name in ("base_output_directory", "models_root"):
        uri = getattr(v, name)
        if uri is None:
            continue
        bucket = _bucket_of(uri)
        example = "training" if name == "base_output_directory" else "models"
        if bucket is None or not _BUCKET.match(bucket) or ".." in bucket:
            raise ConfigError(
                f"vertex.{name}={uri!r} must be gs://BUCKET/optional/folder with a valid "
                "bucket name (lowercase letters, digits, '-', '_' and '.'), e.g. "
                f"gs://my-bucket/torchkfp/{example}"
            )
        if "//" in uri[len("gs://") :]:
            raise ConfigError(f"vertex.{name}={uri!r} has an empty folder name ('//')")


def validate_for_vertex(cfg: Config) -> None:
    """Raise ConfigError naming the setting and the fix for anything Vertex AI would reject or
    a run on Vertex AI could not use."""
    v = cfg.vertex
    if not v.project:
        raise ConfigError(
            "vertex.project is required to run on Vertex AI: set it in the config or pass "
            "--set vertex.project=MY_PROJECT"
        )
    if not (_PROJECT_ID.match(v.project) or _PROJECT_NUMBER.match(v.project)):
        raise ConfigError(
            f"vertex.project={v.project!r} is not a Google Cloud project ID (6-30 characters: "
            "lowercase letters, digits and '-', starting with a letter) or project number"
        )
    if not _REGION.match(v.region or ""):
        raise ConfigError(
            f"vertex.region={v.region!r} is not a Vertex AI region such as 'us-central1' or "
            "'europe-west4'"
        )
    if not v.pipeline_root:
        raise ConfigError(
            "vertex.pipeline_root is required: a gs:// folder for the run's artifacts, "
            "e.g. gs://my-bucket/torchkfp/pipeline-root"
        )
    bucket = _bucket_of(v.pipeline_root)
    if bucket is None or not _BUCKET.match(bucket):
        raise ConfigError(
            f"vertex.pipeline_root={v.pipeline_root!r} must be gs://BUCKET/optional/folder with a "
            "valid bucket name (lowercase letters, digits, '-', '_' and '.')"
        )
    if v.service_account is not None and not _EMAIL.match(v.service_account):
        raise ConfigError(
            f"vertex.service_account={v.service_account!r} is not a service account email such "
            "as torchkfp@my-project.iam.gserviceaccount.com (leave it empty for the default)"
        )
    if len(v.labels) > 64:
        raise ConfigError(f"vertex.labels: {len(v.labels)} labels; Vertex AI allows 64")
    for k, val in v.labels.items():
        if not _LABEL_KEY.match(k) or not re.match(r"^[\w\-]{0,63}$", val) or k != k.lower():
            raise ConfigError(
                f"vertex.labels: {k}={val!r} is not a valid label (keys and values: up to 63 "
                "lowercase letters, digits, '_' or '-'; keys start with a letter)"
            )
        if k.startswith("vertex-ai-pipelines-run-billing-id"):
            raise ConfigError(f"vertex.labels: {k!r} is reserved by Vertex AI; rename it")
    if v.network is not None and not _NETWORK.match(v.network):
        raise ConfigError(
            f"vertex.network={v.network!r} must be projects/PROJECT_NUMBER/global/networks/NAME"
        )
    if v.encryption_key is not None:
        m = _KMS_KEY.match(v.encryption_key)
        if not m:
            raise ConfigError(
                f"vertex.encryption_key={v.encryption_key!r} must be projects/P/locations/L/"
                "keyRings/R/cryptoKeys/K"
            )
        if m.group("loc") != v.region:
            raise ConfigError(
                f"vertex.encryption_key is in location {m.group('loc')!r} but vertex.region is "
                f"{v.region!r}: Vertex AI needs a key in the region of the run"
            )
    _check_output_folders(cfg)
    if v.tensorboard is not None:
        if not v.service_account:
            raise ConfigError(
                f"vertex.tensorboard={v.tensorboard!r} needs vertex.service_account: Vertex AI "
                "streams a training job's scalars to TensorBoard only when the job runs as a "
                "service account (one with roles/aiplatform.user and storage access to the "
                "base output directory)"
            )
        m = _TENSORBOARD.match(v.tensorboard)
        if not m:
            raise ConfigError(
                f"vertex.tensorboard={v.tensorboard!r} must be projects/PROJECT/locations/"
                "REGION/tensorboards/ID"
            )
        if m.group("loc") != v.region:
            raise ConfigError(
                f"vertex.tensorboard is in location {m.group('loc')!r} but vertex.region is "
                f"{v.region!r}: use a TensorBoard instance in the region of the run"
            )
    from torchkfp.images import check_images

    check_images(cfg)  # the effective images: the config's, else TORCHKFP_*_IMAGE
    if cfg.warehouse.backend != "bigquery":
        raise ConfigError(
            f"warehouse.backend={cfg.warehouse.backend!r} cannot run on Vertex AI (the local "
            "DuckDB file is not there): set warehouse.backend: bigquery and warehouse.project"
        )
    if cfg.deploy.registry != "vertex":
        raise ConfigError(
            f"deploy.registry={cfg.deploy.registry!r} cannot run on Vertex AI (a folder inside "
            "a container does not outlive the run): set deploy.registry: vertex"
        )
