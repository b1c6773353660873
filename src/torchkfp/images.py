"""Container images are configuration: ``vertex.training_image`` (every pipeline step and the
training replicas) and ``vertex.serving_image`` (the endpoint's container).

The config is the one source. When a pipeline is compiled or submitted for Vertex AI,
:func:`with_images` fills an image the config leaves empty from ``TORCHKFP_TRAINING_IMAGE`` /
``TORCHKFP_SERVING_IMAGE``, read then, on the machine that compiles; the result is written into
the config's ``vertex`` section, so it travels in the compiled pipeline (each task's container,
the ``vertex_config`` parameter the deploy step reads). Nothing reads these variables inside a
running container.

:func:`check_image` checks a reference's form (``HOST/PATH[:TAG][@sha256:DIGEST]``) and refuses
the placeholders of the examples (``YOUR_PROJECT`` and the like).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from torchkfp.config.base import ConfigError

if TYPE_CHECKING:
    from torchkfp.config import Config

TRAINING_IMAGE_ENV = "TORCHKFP_TRAINING_IMAGE"
SERVING_IMAGE_ENV = "TORCHKFP_SERVING_IMAGE"

PLACEHOLDER_TRAINING_IMAGE = "us-docker.pkg.dev/YOUR_PROJECT/torchkfp/torchkfp-train:0.1.0"
"""What a component is built with before the config's image is set on it (the pipelines set
``vertex.training_image`` on every task when they compile for Vertex AI); never runs."""
PLACEHOLDER_SERVING_IMAGE = "us-docker.pkg.dev/YOUR_PROJECT/torchkfp/torchkfp-serve:0.1.0"

# Kept for code that still imports them; they are placeholders, never a default that runs.
DEFAULT_TRAINING_IMAGE = PLACEHOLDER_TRAINING_IMAGE
DEFAULT_SERVING_IMAGE = PLACEHOLDER_SERVING_IMAGE
TRAINING_IMAGE = PLACEHOLDER_TRAINING_IMAGE
SERVING_IMAGE = PLACEHOLDER_SERVING_IMAGE

FIELDS = {"training": "vertex.training_image", "serving": "vertex.serving_image"}
ENV = {"training": TRAINING_IMAGE_ENV, "serving": SERVING_IMAGE_ENV}
DOCKERFILES = {"training": "docker/train.Dockerfile", "serving": "docker/serve.Dockerfile"}

_PLACEHOLDER = re.compile(
    r"\byour[_\-]|(^|/)project([_\-]id)?(/|:|@|$)|<[^>]*>|\$\{?[A-Za-z_]|change[_\-]?me|"
    r"replace[_\-]?me|placeholder",
    re.IGNORECASE,
)
_EXAMPLE_PROJECTS = {"my-project", "your-project", "example-project", "project"}
"""Project names the examples use: an image under one of them is still the example's value
(unless ``vertex.project`` really is that project)."""
_HOST = re.compile(
    r"(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*"
    r"[A-Za-z0-9])?)+)(?::[0-9]{1,5})?"
)
_PATH_PART = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.\-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_ARTIFACT_REGISTRY = re.compile(r"[a-z0-9\-]+-docker\.pkg\.dev")
_CONTAINER_REGISTRY = re.compile(r"(?:[a-z]+\.)?gcr\.io")


def env_image(kind: str) -> str | None:
    """``TORCHKFP_TRAINING_IMAGE`` / ``TORCHKFP_SERVING_IMAGE`` now (None when unset or
    blank)."""
    value = os.environ.get(ENV[kind], "").strip()
    return value or None


def effective_image(cfg: Config, kind: str) -> str | None:
    """The image of ``kind`` ('training' or 'serving'): the config's value, else the
    environment variable, else None."""
    value = getattr(cfg.vertex, f"{kind}_image")
    return value or env_image(kind)


def with_images(cfg: Config) -> Config:
    """``cfg`` with ``vertex.training_image`` and ``vertex.serving_image`` set to the effective
    images (:func:`effective_image`): what the compiled pipeline and its ``vertex_config``
    carry. Images still unset stay None (:func:`check_images` refuses them)."""
    overrides = {}
    for kind, field in FIELDS.items():
        image = effective_image(cfg, kind)
        if image != getattr(cfg.vertex, f"{kind}_image"):
            overrides[field] = image
    return cfg.override(overrides) if overrides else cfg


def _parse(ref: str) -> tuple[str, list[str], str | None, str | None] | None:
    """(host, path parts, tag, digest) of an image reference, or None if it has no form."""
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
    host, slash, path = rest.partition("/")
    if not slash or not _HOST.fullmatch(host):
        return None
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    parts = path.split("/")
    return host, parts, tag, digest


def image_problem(
    ref: str | None, kind: str, project: str | None = None, field: str | None = None
) -> str | None:
    """Why ``ref`` cannot be the ``kind`` image of a Vertex AI run (None: it can). ``project``:
    ``vertex.project``, to tell an example's project from the user's own."""
    field = field or FIELDS[kind]
    build = (
        f"build and push {DOCKERFILES[kind]} and set {field}: REGION-docker.pkg.dev/PROJECT/"
        f"REPO/IMAGE:TAG (or export {ENV[kind]} when compiling)"
    )
    if not ref:
        return f"{field} is not set: {build}"
    if _PLACEHOLDER.search(ref):
        return f"{field}={ref!r} is a placeholder, not an image: {build}"
    if any(c.isspace() for c in ref):
        return f"{field}={ref!r} contains whitespace: write the image reference alone"
    parsed = _parse(ref)
    if parsed is None:
        return (
            f"{field}={ref!r} does not name its registry: write HOST/PATH[:TAG][@sha256:DIGEST], "
            "e.g. us-central1-docker.pkg.dev/my-project/torchkfp/torchkfp-train:0.1.0"
        )
    host, parts, tag, digest = parsed
    if host.split(":")[0] in ("localhost", "127.0.0.1"):
        return f"{field}={ref!r} is on this machine's registry, which Vertex AI cannot pull from"
    bad = [p for p in parts if not _PATH_PART.fullmatch(p)]
    if bad:
        return (
            f"{field}={ref!r}: path component {bad[0]!r} is not valid (lowercase letters, "
            "digits and single '.', '_' or '-' between them)"
        )
    if tag is not None and not _TAG.fullmatch(tag):
        return f"{field}={ref!r}: tag {tag!r} is not valid (letters, digits, '_', '.', '-')"
    if digest is not None and not _DIGEST.fullmatch(digest):
        return f"{field}={ref!r}: the digest must be sha256: followed by 64 lowercase hex digits"
    if _ARTIFACT_REGISTRY.fullmatch(host) and len(parts) < 3:
        return (
            f"{field}={ref!r}: an Artifact Registry image is {host}/PROJECT/REPOSITORY/IMAGE "
            f"(got {len(parts)} path part(s))"
        )
    if _CONTAINER_REGISTRY.fullmatch(host) and len(parts) < 2:
        return f"{field}={ref!r}: a Container Registry image is {host}/PROJECT/IMAGE"
    registry_project = (
        parts[0]
        if _ARTIFACT_REGISTRY.fullmatch(host) or _CONTAINER_REGISTRY.fullmatch(host)
        else None
    )
    if registry_project in _EXAMPLE_PROJECTS and registry_project != project:
        return (
            f"{field}={ref!r} is the example's image (project {registry_project!r}, while "
            f"vertex.project={project!r}): {build}"
        )
    if kind == "serving" and not (
        _ARTIFACT_REGISTRY.fullmatch(host) or _CONTAINER_REGISTRY.fullmatch(host)
    ):
        return (
            f"{field}={ref!r}: Vertex AI serves models only from Artifact Registry "
            "(REGION-docker.pkg.dev/PROJECT/REPO/IMAGE) or Container Registry (gcr.io/PROJECT/"
            "IMAGE)"
        )
    return None


def check_image(ref: str | None, kind: str, project: str | None = None) -> str:
    """``ref`` if it can be the ``kind`` image of a Vertex AI run, else ConfigError naming the
    field and the fix."""
    problem = image_problem(ref, kind, project)
    if problem:
        raise ConfigError(problem)
    assert ref is not None
    return ref


def check_images(cfg: Config) -> None:
    """ConfigError unless both effective images (:func:`effective_image`) are usable."""
    for kind in FIELDS:
        check_image(effective_image(cfg, kind), kind, cfg.vertex.project)


def template_images(spec: dict) -> list[str]:
    """Every container image a compiled PipelineSpec names: the executors' images and the
    training custom job's worker pools (``imageUri`` in its parameters' defaults)."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("image", "imageUri", "image_uri") and isinstance(v, str):
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec.get("deploymentSpec") or {})
    walk(spec.get("components") or {})
    walk(spec.get("root") or {})
    return sorted(set(found))
