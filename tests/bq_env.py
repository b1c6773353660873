"""bqemulator for the tests: one way to start it (REST + the Storage Read API's gRPC)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_bqemulator(home: Path, project: str) -> Iterator[tuple[str, str]]:
    """bqemulator on loopback for ``project``, its HOME (with the DuckDB spatial extension it
    needs) and temp files in ``home``; yields (REST url, gRPC host:port). Skips the test when
    bqemulator is not installed."""
    exe = shutil.which("bqemulator") or str(Path(sys.executable).with_name("bqemulator"))
    if not Path(exe).exists():
        pytest.skip("bqemulator is not installed (make test installs it)")
    import duckdb_extension_spatial

    ext = Path(duckdb_extension_spatial.__file__).parent / "extensions"
    src = next(ext.rglob("spatial.duckdb_extension"))
    dest = home / ".duckdb" / "extensions" / src.parent.name / "linux_amd64"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest)
    rest, grpc = free_port(), free_port()
    proc = subprocess.Popen(
        [exe, "start", "--rest-host", "127.0.0.1", "--rest-port", str(rest)]
        + ["--grpc-host", "127.0.0.1", "--grpc-port", str(grpc), "--project", project],
        env={**os.environ, "HOME": str(home), "TMPDIR": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{rest}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("bqemulator did not become ready")
        yield url, f"127.0.0.1:{grpc}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
