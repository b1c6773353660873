"""Stopping a process tree: the local scheduler's run, the training launcher's torchrun.

A run is started with ``start_new_session=True`` so a terminal's Ctrl-C reaches only its owner,
which then stops the run deliberately. Signalling the run's process group is not enough:
torchrun starts its workers in sessions of their own. :func:`terminate_tree` therefore collects
the whole tree first (psutil, whatever the session), then signals all of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import psutil


def terminate_tree(proc: subprocess.Popen, grace_s: float = 10.0, poll_s: float = 0.1) -> int:
    """Stop ``proc`` (started with ``start_new_session=True``) and everything it started.

    Collects the process and all its descendants before signalling (a child that outlives its
    parent is reparented and could not be found afterwards), sends SIGTERM to ``proc``'s process
    group and to every collected process, waits up to ``grace_s`` seconds for all of them to
    exit (a parent such as torchrun gets the time to stop its own workers), then SIGKILLs the
    survivors. Returns ``proc``'s return code (negative: the signal that ended it)."""
    descendants = _descendants(proc)
    _signal_group(proc, signal.SIGTERM)
    for p in descendants:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while True:
        rc = proc.poll()
        descendants = _running(descendants)
        left = deadline - time.monotonic()
        if (rc is not None and not descendants) or left <= 0:
            break
        if descendants:
            # not proc itself: psutil would reap it and Popen would lose its return code
            psutil.wait_procs(descendants, timeout=min(poll_s, left))
        else:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(poll_s, left))
    if rc is None or descendants:
        _signal_group(proc, signal.SIGKILL)
        for p in descendants:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                p.kill()
    return proc.wait()


def _descendants(proc: subprocess.Popen) -> list[psutil.Process]:
    """All processes ``proc`` started, in any session (none once it has been reaped)."""
    if proc.poll() is not None:  # reaped: its pid may name another process by now
        return []
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running (a zombie is dead, only not reaped by its parent)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
        except psutil.AccessDenied:
            out.append(p)
    return out
