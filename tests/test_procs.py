"""terminate_tree: a process and everything it started, whatever their session, with tiny real
processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from torchkfp.procs import terminate_tree


def start(tmp_path: Path, body: str) -> tuple[subprocess.Popen, Path]:
    """Run ``body`` in its own session (as the scheduler and the launcher do); it writes the
    pids it wants checked to the returned file once it is ready."""
    ready = tmp_path / "pids"
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(body).replace("READY", repr(str(ready))))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    deadline = time.monotonic() + 20
    while not (ready.exists() and ready.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None, "the script never got ready"
        time.sleep(0.02)
    time.sleep(0.1)  # the signal handlers are installed before READY is written
    return proc, ready


def assert_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return  # dead, only not reaped by its (new) parent
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    pytest.fail(f"process {pid} is still alive")


IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
)


def test_a_child_in_a_new_session_that_ignores_sigterm_is_killed(tmp_path):
    proc, pids = start(
        tmp_path,
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {IGNORES_SIGTERM!r}],
                                 start_new_session=True)
        time.sleep(0.5)  # the child has installed its SIG_IGN
        open(READY, "w").write(str(child.pid))
        time.sleep(60)
        """,
    )
    child = int(pids.read_text())
    t0 = time.monotonic()
    rc = terminate_tree(proc, grace_s=1.0, poll_s=0.05)
    took = time.monotonic() - t0
    assert rc == -signal.SIGTERM  # the parent died of the SIGTERM
    assert 1.0 <= took < 5  # the child held out for the whole grace period, then SIGKILL
    assert_gone(child)


def test_returns_early_with_the_parents_exit_code_when_it_stops_its_worker(tmp_path):
    # torchrun-like: on SIGTERM the parent stops its worker (own session), waits, exits 143
    proc, pids = start(
        tmp_path,
        """
        import signal, subprocess, sys, time
        w = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
        def stop(*a):
            w.terminate(); w.wait(); sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
        open(READY, "w").write(str(w.pid))
        time.sleep(60)
        """,
    )
    t0 = time.monotonic()
    assert terminate_tree(proc, grace_s=10) == 143
    assert time.monotonic() - t0 < 5  # not the grace period: everything exited
    assert_gone(int(pids.read_text()))


def test_a_parent_that_ignores_sigterm_is_killed(tmp_path):
    proc, _ = start(
        tmp_path,
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open(READY, "w").write("1")
        time.sleep(60)
        """,
    )
    assert terminate_tree(proc, grace_s=0.3) == -signal.SIGKILL


def test_a_process_that_already_exited_gives_its_return_code(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)
    proc.wait()
    assert terminate_tree(proc, grace_s=1) == 3
