"""Hostile and clumsy clients against the prediction server: every input from outside gets a
clear answer (a 4xx JSON naming the problem and the fix), never a traceback, a 500 or a NaN.

HTTP-level cases (timeouts, hang-ups, limits, encodings, HTTP/1.0, chunked bodies) run against
one real `torchkfp serve` process with small limits and short timeouts, over raw sockets; the
rest go through the ASGI app in this process (the same app object `serve` runs)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from test_serving import Server, free_port

from torchkfp.serving import create_app
from torchkfp.serving.requests import MAX_STANDARD_DEVIATIONS

pytestmark = pytest.mark.integration

MAX_BODY = 20_000
MAX_INSTANCES = 5
BODY_TIMEOUT = 1.0
KEEP_ALIVE = 1.0
MAX_CONNECTIONS = 8
HUNG_UP = "hung up before sending the whole request body"
NOT_A_NUMBER = "must be a finite number or null (numeric feature), got"


# ---- the real server and raw HTTP ----------------------------------------------------------------
@pytest.fixture(scope="module")
def server(trained_model: str, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    port = free_port()
    args = ["--model", trained_model, "--port", str(port)]
    args += ["--max-body-bytes", str(MAX_BODY), "--max-instances", str(MAX_INSTANCES)]
    args += ["--body-timeout", str(BODY_TIMEOUT), "--keep-alive-timeout", str(KEEP_ALIVE)]
    args += ["--max-connections", str(MAX_CONNECTIONS)]
    srv = Server(args, log, port)
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


class Conn:
    """A raw TCP connection to the server that reads HTTP responses (pipelining-safe)."""

    def __init__(self, server: Server, timeout: float = 5.0):
        host, port = server.base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def settimeout(self, seconds: float) -> None:
        self.sock.settimeout(seconds)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def reply(self, head_only: bool = False) -> Reply:
        """The next response (its body by Content-Length, else up to the end of the stream)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError(f"connection closed before a full response: {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        if head_only:
            return Reply(status_line, headers, b"")
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buf) < length and self._fill():
                pass
        else:
            while self._fill():
                pass
            length = len(self.buf)
        body, self.buf = self.buf[:length], self.buf[length:]
        return Reply(status_line, headers, body)

    def closed_within(self, seconds: float) -> bool:
        """True once the server closes the connection (EOF) within ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def connect(server: Server, timeout: float = 5.0) -> Conn:
    return Conn(server, timeout)


class Reply:
    def __init__(self, status_line: str, headers: dict[str, str], body: bytes):
        self.status_line = status_line
        self.status = int(status_line.split(" ")[1])
        self.headers = headers
        self.body = body

    def error(self) -> str:
        assert self.headers.get("content-type") == "application/json", self.headers
        return json.loads(self.body)["error"]


def http(server: Server, raw: bytes, head_only: bool = False) -> tuple[Reply, bool]:
    """Send ``raw`` on a new connection: the reply, and whether the server then closed it."""
    with connect(server) as s:
        s.sendall(raw)
        reply = s.reply(head_only)
        return reply, s.closed_within(0.5)


def post_raw(body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    head = f"POST /predict HTTP/{version}\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


@pytest.fixture(scope="module")
def example(server: Server) -> dict[str, Any]:
    return httpx.get(server.base + "/metadata").json()["example_instance"]


# ---- slow and vanishing clients ------------------------------------------------------------------
def test_slow_body_gets_408_and_the_connection_closed(server):
    with connect(server) as s:
        s.sendall(b'POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n{"inst')
        t0 = time.monotonic()
        reply = s.reply()
        waited = time.monotonic() - t0
        assert reply.status == 408
        assert "did not arrive within 1 s (6 bytes received)" in reply.error()
        assert reply.headers["connection"] == "close" and s.closed_within(1.0)
    assert BODY_TIMEOUT <= waited < BODY_TIMEOUT + 2


def test_slow_trickling_body_is_timed_out_too(server):
    """A client that keeps sending a byte at a time never finishes: the deadline is for the
    whole body, not per read."""
    with connect(server) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n")
        t0 = time.monotonic()
        s.settimeout(0.2)
        reply = None
        while reply is None and time.monotonic() - t0 < 5:
            try:
                s.sendall(b" ")
            except OSError:  # the server answered and closed between two bytes
                s.settimeout(1.0)
            try:
                reply = s.reply()
            except TimeoutError:
                pass
        assert reply is not None and reply.status == 408, "no 408 within 5 s"
        assert "did not arrive within 1 s" in reply.error()


def test_client_hanging_up_mid_body_is_one_info_line(server):
    before = server.output().count(HUNG_UP)
    with connect(server) as s:
        s.sendall(b'POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n{"in')
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while server.output().count(HUNG_UP) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [x for x in server.output().splitlines() if HUNG_UP in x]
    assert len(lines) == before + 1 and lines[-1].startswith("INFO:")
    assert "Traceback" not in server.output()
    assert "Exception in ASGI application" not in server.output()
    assert httpx.get(server.base + "/health").status_code == 200


def test_idle_keep_alive_connection_is_closed(server):
    with connect(server) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert s.reply().status == 200
        t0 = time.monotonic()
        assert s.closed_within(KEEP_ALIVE + 3)
        assert time.monotonic() - t0 >= KEEP_ALIVE - 0.2


def test_connections_over_the_limit_get_503(server):
    held = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        reply, closed = http(server, b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reply.status == 503 and reply.body == b"Service Unavailable"
        assert closed
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the slots come back once the connections close
        reply, _ = http(server, b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        if reply.status == 200:
            break
        time.sleep(0.1)
    assert reply.status == 200


# ---- HTTP versions, framing, encodings -----------------------------------------------------------
def test_http_1_0_request_is_answered_and_closed(server, example):
    reply, closed = http(server, post_raw(json.dumps({"instances": [example]}).encode(), "", "1.0"))
    assert reply.status == 200
    assert 0 < json.loads(reply.body)["predictions"][0]["probability"] < 1
    assert closed  # HTTP/1.0 has no keep-alive unless asked for


def test_http_1_0_without_a_body(server):
    reply, _ = http(server, b"POST /predict HTTP/1.0\r\n\r\n")
    assert reply.status == 400 and "the request body is empty" in reply.error()


def test_chunked_body_under_the_limit_is_read(server, example):
    body = json.dumps({"instances": [example, example]}).encode()
    half = len(body) // 2
    chunks = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (body[:half], body[half:]))
    raw = b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    reply, _ = http(server, raw + chunks + b"0\r\n\r\n")
    assert reply.status == 200 and len(json.loads(reply.body)["predictions"]) == 2


def test_chunked_body_over_the_limit_gets_413(server):
    chunk = b"3e8\r\n" + b" " * 1000 + b"\r\n"  # 1000-byte chunks, no Content-Length
    raw = b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    reply, closed = http(server, raw + chunk * (MAX_BODY // 1000 + 1))
    assert reply.status == 413
    assert f"more than the limit of {MAX_BODY} bytes" in reply.error()
    assert reply.headers["connection"] == "close" and closed


def test_declared_length_over_the_limit_gets_413_before_the_body(server):
    with connect(server) as s:
        s.sendall(
            f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode()
        )
        reply = s.reply()  # answered without sending a byte of the body
        assert reply.status == 413
        assert f"is {MAX_BODY + 1} bytes, more than the limit of {MAX_BODY}" in reply.error()
        assert s.closed_within(1.0)


def test_expect_100_continue_over_the_limit_is_refused_without_100(server):
    raw = (
        f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: {10 * MAX_BODY}\r\n"
        "Expect: 100-continue\r\n\r\n"
    )
    reply, _ = http(server, raw.encode())
    assert reply.status == 413  # not "100 Continue": the client never sends the body


def test_gzip_body_gets_415(server, example):
    import gzip

    body = gzip.compress(json.dumps({"instances": [example]}).encode())
    reply, closed = http(server, post_raw(body, "Content-Encoding: gzip\r\n"))
    assert reply.status == 415
    assert "Content-Encoding 'gzip' is not supported: send the body uncompressed" in reply.error()
    assert closed


def test_head_and_options(server):
    reply, _ = http(server, b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n", head_only=True)
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    reply, _ = http(server, b"HEAD /predict HTTP/1.1\r\nHost: t\r\n\r\n", head_only=True)
    assert reply.status == 405 and reply.headers["allow"] == "POST, OPTIONS"
    reply, _ = http(server, b"OPTIONS /predict HTTP/1.1\r\nHost: t\r\n\r\n")
    assert reply.status == 204 and reply.headers["allow"] == "POST, OPTIONS"
    reply, _ = http(server, b"OPTIONS /health HTTP/1.1\r\nHost: t\r\n\r\n")
    assert reply.status == 204 and reply.headers["allow"] == "GET, HEAD, OPTIONS"


def test_oversized_request_head_gets_400(server):
    """Headers beyond 64 KiB: uvicorn's h11 parser refuses them (plain text: no app yet)."""
    raw = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000  # never finished
    reply, closed = http(server, raw)
    assert reply.status == 400 and reply.body == b"Invalid HTTP request received."
    assert closed


def test_garbage_instead_of_http_gets_400(server):
    reply, closed = http(server, b"\x16\x03\x01 hello, this is TLS or nonsense\r\n\r\n")
    assert reply.status == 400 and reply.body == b"Invalid HTTP request received."
    assert closed


def test_pipelined_requests_are_answered_in_order(server, example):
    good = post_raw(json.dumps({"instances": [example]}).encode())
    bad = post_raw(b"{nope")
    with connect(server) as s:
        s.sendall(good + bad + b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert [s.reply().status for _ in range(3)] == [200, 400, 200]


def test_the_server_survived_and_logged_no_traceback(server, example):
    """Runs last in this section: after every hostile request above, still up and right."""
    resp = httpx.post(server.base + "/predict", json={"instances": [example]})
    assert resp.status_code == 200
    out = server.output()
    assert "Traceback" not in out and "Exception in ASGI application" not in out
    assert "ERROR" not in out


# ---- the app: bodies, values, routes -------------------------------------------------------------
@pytest.fixture(scope="module")
def app(trained_model: str):
    return create_app(trained_model, health_path="/health", predict_path="/predict")


def call(app, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def post(app, body: bytes | str, **headers: str) -> httpx.Response:
    content = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return call(app, "POST", "/predict", content=content, headers=headers)


def strict_json(resp: httpx.Response) -> Any:
    """The body as standard JSON: valid UTF-8, no NaN or Infinity (Python's json allows them)."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the response: {resp.text[:300]}")

    return json.loads(resp.content.decode("utf-8"), parse_constant=refuse)


def error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"] == "application/json"
    return strict_json(resp)["error"]


@pytest.fixture(scope="module")
def good(app) -> dict[str, Any]:
    return dict(app.state.info["example_instance"])


def body_of(*instances: dict[str, Any], **top: Any) -> str:
    return json.dumps({"instances": list(instances), **top})


def prob(resp: httpx.Response) -> list[float]:
    assert resp.status_code == 200, resp.text
    return [p["probability"] for p in strict_json(resp)["predictions"]]


# huge finite numbers: the transform's float32 input would be inf, the output NaN
@pytest.mark.parametrize("value", [1e308, -1e308, 1.7976931348623157e308, 1e39, 1e15])
def test_huge_finite_number_is_out_of_range(app, good, value):
    msg = error(post(app, body_of({**good, "distance": value})), 400)
    assert f"instances[0].distance is out of range, got {value!r}" in msg
    assert f"within {MAX_STANDARD_DEVIATIONS:g} training standard deviations" in msg


def test_large_number_inside_the_range_gets_a_finite_prediction(app, good):
    tf = app.state.predictor.transform.numeric["distance"]
    edge = tf.mean + 0.999 * MAX_STANDARD_DEVIATIONS * tf.std
    [p] = prob(post(app, body_of({**good, "distance": edge})))
    assert 0 <= p <= 1


def test_integer_with_thousands_of_digits(app, good):
    msg = error(
        post(app, body_of(good).replace('"distance": ', '"distance": ' + "9" * 5000 + ', "x": ')),
        400,
    )
    assert "the request holds an integer with 5000 digits" in msg


def test_model_emitting_nan_gets_a_clear_500_not_nan(app, good, monkeypatch):
    def nan_for_second(columns, n, **kw):
        out = np.full(n, 0.25)
        out[1] = np.nan
        return out

    monkeypatch.setattr(app.state.predictor, "predict_columns", nan_for_second)
    msg = error(post(app, body_of(good, good, good)), 500)
    assert "the model gave no finite prediction for instance(s) [1]" in msg
    assert "not of the request" in msg


# strings that are not Unicode
def test_lone_surrogate_in_a_categorical_field(app, good):
    body = body_of({**good, "carrier": "UA"}).replace('"UA"', '"\\ud800"')
    msg = error(post(app, body), 400)
    assert "instances[0].carrier is not valid Unicode text" in msg and "send UTF-8" in msg


def test_lone_surrogate_in_many_instances_takes_the_batch_path_safely(app, good):
    body = body_of(*[{**good, "carrier": "UA"}] * 300).replace('"UA"', '"\\udfff"')
    msg = error(post(app, body), 400)
    assert msg.startswith("20 or more instance(s)") and "not valid Unicode" in msg


def test_lone_surrogate_in_a_field_name(app, good):
    msg = error(post(app, body_of(good).replace('"distance"', '"dist\\ud800"')), 400)
    assert "the field name 'dist\\ud800' is not valid Unicode text" in msg


def test_lone_surrogate_in_a_numeric_string(app, good):
    msg = error(post(app, body_of({**good, "distance": "1\ud800"})), 400)
    assert "instances[0].distance must be a finite number or null" in msg


@pytest.mark.parametrize("rows", [1, 300])  # the row-wise path, then pandas (> 256 rows)
def test_surrogate_pair_emoji_is_fine_and_unknown(app, good, rows):
    from torchkfp.predictor import FAST_PATH_MAX_ROWS

    assert (rows <= FAST_PATH_MAX_ROWS) == (rows == 1)
    resp = post(app, body_of(*[{**good, "carrier": "\U0001f600"}] * rows))
    assert len(prob(resp)) == rows
    unseen = prob(post(app, body_of({**good, "carrier": "unseen"})))[0]
    assert prob(resp)[0] == pytest.approx(unseen, abs=1e-6)  # the unknown bucket


# structure
def test_deeply_nested_json(app):
    msg = error(post(app, "[" * 100_000 + "]" * 100_000), 400)
    assert "the request body is nested too deeply" in msg


def test_nested_value_in_a_feature(app, good):
    deep = json.loads("[" * 200 + "]" * 200)
    msg = error(post(app, body_of({**good, "carrier": deep})), 400)
    assert "instances[0].carrier must be a string, a number or null" in msg and "got list" in msg


def test_huge_number_of_fields_gives_a_short_answer(app, good):
    inst = {**good, **{f"f{i}": 0 for i in range(50_000)}}
    msg = error(post(app, body_of(inst)), 400)
    assert "instances[0] has unknown field(s) ['f0', 'f1', " in msg and "and 49990 more]" in msg
    assert len(msg) < 2000


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('{"instances": [], "instances": [{}]}', "duplicate key(s) ['instances'] in a JSON object"),
        (None, "duplicate key(s) ['distance'] in a JSON object"),
    ],
    ids=["top-level", "in-instance"],
)
def test_duplicate_keys(app, good, body, needle):
    if body is None:
        body = body_of(good).replace('"distance": ', '"distance": 1, "distance": ')
    msg = error(post(app, body), 400)
    assert needle in msg and "send each field once" in msg


def test_very_long_feature_name(app, good):
    msg = error(post(app, body_of({**good, "x" * 100_000: 1})), 400)
    assert "has unknown field(s) ['xxxxxxxx" in msg and "(100000 characters)" in msg
    assert len(msg) < 2000


def test_unicode_feature_name(app, good):
    resp = post(app, body_of({**good, "température": 3}))
    assert "instances[0] has unknown field(s) ['température']" in error(resp, 400)
    assert "température".encode() in resp.content  # UTF-8, not escaped


def test_empty_instance_object(app):
    msg = error(post(app, body_of({})), 400)
    assert "instances[0] is missing feature(s) ['carrier', " in msg
    assert "null for an unknown value" in msg


@pytest.mark.parametrize(
    ("top", "needle"),
    [
        ({"deployedModelId": "1"}, "unknown top-level field(s) ['deployedModelId']"),
        ({f"k{i}": 1 for i in range(1000)}, "unknown top-level field(s) ['k0', 'k1', "),
    ],
    ids=["one", "a thousand"],
)
def test_extra_top_level_fields(app, good, top, needle):
    msg = error(post(app, body_of(good, **top)), 400)
    assert needle in msg and "send only 'instances' and optionally 'parameters'" in msg
    assert len(msg) < 1000


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'"just a string"', "must be a JSON object like"),
        ('\ufeff{"instances": 3}'.encode(), "'instances' must be a list of objects"),  # BOM ok
        ('{"instances": []}'.encode("utf-16"), "not UTF-8 text"),
        (b'{"instances": [1]', "not valid JSON"),
    ],
    ids=["scalar", "utf-8 bom", "utf-16", "truncated"],
)
def test_bodies_that_are_not_a_request(app, body, needle):
    assert needle in error(post(app, body), 400)


# numbers as strings, and values of the wrong type
@pytest.mark.parametrize(
    "text",
    [" 12", "12 ", "1_000", "1,000", "NaN", "nan", "Infinity", "-inf", "0x10", "١٢", "1e", ""],
)
def test_numeric_string_that_is_not_a_plain_number(app, good, text):
    msg = error(post(app, body_of({**good, "distance": text})), 400)
    assert f"instances[0].distance {NOT_A_NUMBER} {json.dumps(text)}" in msg
    assert "a string must hold a plain decimal number" in msg


@pytest.mark.parametrize("text", ["1065", "1065.0", "+1065", "1.065e3", "1065.", "10650e-1"])
def test_numeric_string_that_is_a_plain_number(app, good, text):
    got = prob(post(app, body_of({**good, "distance": text}, {**good, "distance": 1065})))
    assert got[0] == pytest.approx(got[1])


@pytest.mark.parametrize(
    ("raw", "shown"), [("true", "true"), ("NaN", "nan"), ("-Infinity", "-inf"), ("[1]", "[1]")]
)
def test_numeric_field_of_the_wrong_kind(app, good, raw, shown):
    body = body_of({**good, "distance": 12345.5}).replace("12345.5", raw)
    msg = error(post(app, body), 400)
    assert f"instances[0].distance {NOT_A_NUMBER} {shown}" in msg


# parameters
@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ([], "'parameters' must be an object like {\"threshold\": 0.5}, got list"),
        ("0.5", "'parameters' must be an object like {\"threshold\": 0.5}, got str"),
        ({"threshold": 0}, "parameters.threshold must be a number in (0, 1), got 0"),
        ({"threshold": 1}, "parameters.threshold must be a number in (0, 1), got 1"),
        ({"threshold": 1.0000001}, "must be a number in (0, 1), got 1.0000001"),
        ({"threshold": -0.0}, "must be a number in (0, 1), got -0.0"),
        ({"threshold": "0.5"}, 'must be a number in (0, 1), got "0.5"'),
        ({"threshold": True}, "must be a number in (0, 1), got true"),
        ({"threshold": None}, "must be a number in (0, 1), got null"),
        ({"Threshold": 0.5}, "unknown parameter(s) ['Threshold']"),
    ],
)
def test_bad_parameters(app, good, params, needle):
    assert needle in error(post(app, body_of(good, parameters=params)), 400)


def test_threshold_edges_that_are_allowed(app, good):
    tiny = post(app, body_of(good, parameters={"threshold": 5e-324}))
    almost_one = post(app, body_of(good, parameters={"threshold": 0.9999999999}))
    assert tiny.json()["predictions"][0]["label"] == 1
    assert almost_one.json()["predictions"][0]["label"] == 0
    assert prob(post(app, body_of(good, parameters=None))) == prob(tiny)


# content type and routes
@pytest.mark.parametrize(
    ("ctype", "status"),
    [
        (None, 200),
        ("application/json", 200),
        ("application/json; charset=UTF-8", 200),
        ("application/vnd.api+json", 200),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("application/json; charset=latin-1", 415),
        ("multipart/form-data; boundary=x", 415),
    ],
)
def test_content_type(app, good, ctype, status):
    headers = {} if ctype is None else {"content-type": ctype}
    resp = post(app, body_of(good), **headers)
    if status == 200:
        assert len(prob(resp)) == 1
    else:
        msg = error(resp, 415)
        assert f"Content-Type {ctype!r}" in msg
        assert "send the body as UTF-8 JSON with Content-Type: application/json" in msg


@pytest.mark.parametrize(
    ("method", "path", "status", "needle"),
    [
        (
            "GET",
            "/predict",
            405,
            "'GET' is not allowed on '/predict' (allowed: POST, OPTIONS): POST JSON",
        ),
        ("PUT", "/predict", 405, "'PUT' is not allowed on '/predict'"),
        ("DELETE", "/health", 405, "'DELETE' is not allowed on '/health'"),
        ("POST", "/metadata", 405, "'POST' is not allowed on '/metadata'"),
        ("GET", "/nope", 404, "no route '/nope': the routes are POST /predict, GET /health"),
        ("GET", "/" + "a" * 10_000, 404, "characters)"),
        ("GET", "/docs", 404, "no route '/docs'"),
        ("GET", "/openapi.json", 404, "no route '/openapi.json'"),
    ],
)
def test_wrong_method_or_route(app, method, path, status, needle):
    resp = call(app, method, path)
    msg = error(resp, status)
    assert needle in msg and len(msg) < 500
    if status == 405:
        assert resp.headers["allow"]


# /metadata shows the model's identity, no server paths
def test_metadata_shows_no_paths(trained_model, tmp_path):
    model = tmp_path / "versions" / "7"
    shutil.copytree(trained_model, model)
    (model / "version.json").write_text(
        json.dumps(
            {
                "version": 7,
                "created": "2024-05-01T00:00:00+00:00",
                "source": "/home/alice/.runs/secret/model",
                "data_fingerprint": "abc",
                "labels": {"git": "gs://bucket/run", "team": "ds"},
            }
        )
    )
    resp = call(create_app(str(model)), "GET", "/metadata")
    assert resp.status_code == 200
    meta = resp.json()
    assert meta["registry_version"] == {
        "version": 7,
        "created": "2024-05-01T00:00:00+00:00",
        "data_fingerprint": "abc",
        "labels": {"team": "ds"},
    }
    assert meta["artifact"]["data_fingerprint"] and meta["training"]["best_val_loss"] > 0
    assert "model_uri" not in meta and "model_dir" not in meta
    for leaked in (str(tmp_path), "/home/alice", "gs://", trained_model):
        assert leaked not in resp.text
    assert not re.search(r'"(?:/|~)(?!predict"|health")', resp.text)
