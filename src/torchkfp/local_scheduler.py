"""A foreground cron scheduler for the local runner (``torchkfp schedule run-local``).

It is the local stand-in for a Vertex AI pipeline schedule: on each cron tick it starts one
pipeline run, never two at once, and appends one JSON line per event to a history file.

Semantics (the same ones :class:`LocalScheduler` implements and tests pin down):

* **Cron**: as on Vertex AI (:mod:`torchkfp.cron`: 5 fields, optional ``TZ=Area/City ``
  prefix, UTC without one), plus a 6th, trailing seconds field for local testing
  (``"* * * * * */10"`` = every 10 seconds).
* **No overlap**: a run blocks the loop; every tick that falls while it is still going is
  *skipped* and recorded as such (``{"event": "skipped", ...}``) when the run ends; the next run
  fires on the first tick after the run ended. Ticks missed while the scheduler itself was
  late (the machine slept) are recorded as skipped too; the latest due tick still fires.
* **Outcomes**: one ``{"event": "run", ...}`` line per run with start, end, status
  (``succeeded`` | ``failed`` | ``terminated``), the run summary path and the error. A run that
  fails (or whose ``run_fn`` raises) is recorded and the scheduler goes on to the next tick.
* **Stopping**: SIGINT (Ctrl-C) or SIGTERM *terminates the current run* (deliberately: a
  scheduler stop should be prompt, and a local DAG run can take a long time). The run gets a
  cancel request (:attr:`RunContext.cancel`); :class:`SubprocessRun` then stops its process
  tree (:func:`torchkfp.procs.terminate_tree`: SIGTERM, ``grace_s`` seconds, SIGKILL). The run
  is recorded as ``terminated``, a ``scheduler_stopped`` line is written, and
  :meth:`LocalScheduler.run` returns normally (the CLI exits 0). Interrupted artifacts are
  safe: every stage commits its output folder with a ``_SUCCESS`` marker last and the registry
  moves aliases atomically, so a terminated run never leaves a half-registered model or a moved
  alias.
* **One scheduler per history file**: an exclusive lock on ``<history>.lock`` refuses a second
  scheduler writing the same history.

Everything time-related is injectable (``clock``, ``sleep``) and the work per tick is any
``run_fn(ctx) -> RunOutcome``, so the loop is tested with a fake clock and no processes. This
module imports neither kfp nor torch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torchkfp.cron import CronSchedule
from torchkfp.procs import terminate_tree

HISTORY_FILE = "schedule_history.jsonl"
MAX_SKIP_RECORDS = 100
"""Skipped ticks recorded one line each per gap; the rest of a gap is one counting line."""
UTC = dt.timezone.utc
_MISSED = "missed: the scheduler was not running at that time (machine asleep or clock jump)"


class ScheduleError(ValueError):
    """The scheduler cannot start as asked (history file in use, bad max_runs); a bad cron
    expression is a :class:`torchkfp.cron.CronError`."""


# ------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------
@dataclass
class RunContext:
    """What a ``run_fn`` gets: its number, the tick it serves and a cancel request."""

    number: int
    tick: dt.datetime
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()


@dataclass
class RunOutcome:
    status: str
    """``succeeded``, ``failed`` or ``terminated``."""
    summary_path: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Extra fields for the history line (exit code, log files, pid, ...)."""

    def __post_init__(self) -> None:
        if self.status not in ("succeeded", "failed", "terminated"):
            raise ValueError(f"RunOutcome.status={self.status!r}")


RunFn = Callable[[RunContext], RunOutcome]
"""Runs one pipeline run to completion. Must return promptly (``terminated``) once
``ctx.cancel`` is set; it may also raise, which is recorded as a failed run."""


def _tail(path: Path, max_bytes: int = 65536) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        return f.read().decode("utf-8", "replace")


class SubprocessRun:
    """A ``run_fn`` that runs ``argv`` (``torchkfp run --config ... --quiet``) per tick.

    The run gets its own process group (so Ctrl-C in the terminal reaches only the scheduler,
    which then stops the run deliberately), its stdout/stderr go to ``<log_dir>/run-N-<time>.
    out|err``, and the summary path is the last stdout line (``torchkfp run`` prints it last
    on success and on failure). On cancel: :func:`~torchkfp.procs.terminate_tree` (SIGTERM to
    every process the run started, ``grace_s`` seconds for torchrun to stop its workers, then
    SIGKILL for the rest). A crashing run cannot take the scheduler down.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_dir: str | os.PathLike,
        grace_s: float = 30.0,
        env: dict[str, str] | None = None,
        poll_s: float = 0.2,
        log: Callable[[str], None] | None = None,
    ):
        self.argv = [str(a) for a in argv]
        self.log = log or (lambda msg: None)
        self.log_dir = Path(log_dir)
        self.grace_s = grace_s
        self.env = env
        self.poll_s = poll_s

    def __call__(self, ctx: RunContext) -> RunOutcome:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stamp = ctx.tick.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        out_path = self.log_dir / f"run-{ctx.number}-{stamp}.out"
        err_path = self.log_dir / f"run-{ctx.number}-{stamp}.err"
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(out_path, "wb") as fo, open(err_path, "wb") as fe:
            try:
                proc = subprocess.Popen(
                    self.argv,
                    stdout=fo,
                    stderr=fe,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            except OSError as e:
                return RunOutcome("failed", error=f"cannot start {self.argv[0]!r}: {e}")
            rc = None
            while rc is None and not ctx.cancelled:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    rc = proc.wait(timeout=self.poll_s)
            terminated = rc is None
            if terminated:
                self.log(
                    f"stopping run {ctx.number}: SIGTERM to its processes (pid {proc.pid}), "
                    f"SIGKILL after {self.grace_s:g}s"
                )
                rc = terminate_tree(proc, self.grace_s, min(self.poll_s, 0.1))
        details: dict[str, Any] = {
            "exit_code": rc,
            "pid": proc.pid,
            "stdout_log": str(out_path),
            "stderr_log": str(err_path),
        }
        if terminated:
            return RunOutcome(
                "terminated", error=f"stopped by the scheduler, exit code {rc}", details=details
            )
        summary_path = self._summary_path(out_path)
        if rc == 0:
            return RunOutcome("succeeded", summary_path, details=details)
        return RunOutcome("failed", summary_path, self._error(rc, summary_path, err_path), details)

    @staticmethod
    def _summary_path(out_path: Path) -> str | None:
        lines = [ln.strip() for ln in _tail(out_path).splitlines() if ln.strip()]
        if lines and lines[-1].endswith(".json") and Path(lines[-1]).is_file():
            return lines[-1]
        return None

    @staticmethod
    def _error(rc: int, summary_path: str | None, err_path: Path) -> str:
        if summary_path:
            try:
                err = json.loads(Path(summary_path).read_text()).get("error")
                if err:
                    return f"exit code {rc}: {err}"
            except (OSError, ValueError):
                pass
        lines = [ln for ln in _tail(err_path).splitlines() if ln.strip()]
        tail = "\n".join(lines[-15:])[-2000:]
        return f"exit code {rc}" + (f": {tail}" if tail else " (no output on stderr)")


# ------------------------------------------------------------------------------------------
# The scheduler
# ------------------------------------------------------------------------------------------
def _utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(UTC).isoformat()


@dataclass
class SchedulerResult:
    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    terminated: int = 0
    skipped: int = 0
    stop_reason: str | None = None


class LocalScheduler:
    """Fire ``run_fn`` on ``cron`` ticks, one run at a time, recording every event.

    ``clock`` returns an aware datetime; ``sleep(seconds)`` waits. The loop sleeps at most
    ``poll_s`` at a time so a stop request is noticed promptly. ``max_runs`` stops the
    scheduler after that many runs (any outcome). Signal handlers for SIGINT/SIGTERM are
    installed for the duration of :meth:`run` when ``handle_signals`` and running in the main
    thread; :meth:`request_stop` does the same from code.
    """

    def __init__(
        self,
        cron: str | CronSchedule,
        run_fn: RunFn,
        history_path: str | os.PathLike,
        *,
        max_runs: int | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        sleep: Callable[[float], None] = time.sleep,
        poll_s: float = 1.0,
        log: Callable[[str], None] | None = None,
        handle_signals: bool = True,
    ):
        self.schedule = (
            cron if isinstance(cron, CronSchedule) else CronSchedule.parse(cron, allow_seconds=True)
        )
        if max_runs is not None and max_runs < 1:
            raise ScheduleError(f"max_runs={max_runs}: must be >= 1 (or None for no limit)")
        self.run_fn = run_fn
        self.history_path = Path(history_path)
        self.max_runs = max_runs
        self.clock = clock
        self.sleep = sleep
        self.poll_s = poll_s
        self.log = log or (lambda msg: None)
        self.handle_signals = handle_signals
        self.result = SchedulerResult()
        self._stop_reason: str | None = None
        self._current: RunContext | None = None

    # -- stopping ----------------------------------------------------------------------
    def request_stop(self, reason: str = "requested") -> None:
        """Stop after (cancelling) the current run. Safe to call from a signal handler."""
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._current is not None:
            self._current.cancel.set()

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:  # no I/O here: the loop logs it
            self.request_stop(signal.Signals(signum).name)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # -- history -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _history_lock(self) -> Iterator[None]:
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.history_path.with_name(self.history_path.name + ".lock")
        fh = open(lock_path, "a+")  # noqa: SIM115 - held for the scheduler's lifetime
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                raise ScheduleError(
                    f"another scheduler (pid {holder}) is already writing {self.history_path}; "
                    "stop it first, or give this one its own --history file"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            fh.close()

    def _record(self, event: str, **fields: Any) -> dict[str, Any]:
        rec = {"event": event, **fields}
        line = json.dumps(rec, default=str)
        with open(self.history_path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        return rec

    def _skip_ticks(self, first: dt.datetime, before: dt.datetime, reason: str) -> None:
        """Record every tick from ``first`` up to (excluding) ``before`` as skipped: one line
        each for the first MAX_SKIP_RECORDS, then one line counting the rest."""
        t, n, last = first, 0, None
        while t < before:
            n += 1
            last = t
            if n <= MAX_SKIP_RECORDS:
                self._record("skipped", status="skipped", tick=_iso(t), reason=reason)
                self.log(f"skipped tick {self._local(t)}: {reason}")
            t = self.schedule.next_after(t)
        if n > MAX_SKIP_RECORDS:
            more = n - MAX_SKIP_RECORDS
            self._record(
                "skipped",
                status="skipped",
                tick=_iso(last),
                count=more,
                reason=f"{reason} ({more} more ticks up to this one)",
            )
            self.log(f"skipped {more} more tick(s) up to {self._local(last)}: {reason}")
        self.result.skipped += n

    def _local(self, t: dt.datetime) -> str:
        return t.astimezone(self.schedule.tz).isoformat(timespec="seconds")

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> SchedulerResult:
        """Run until stopped (signal, :meth:`request_stop`) or ``max_runs`` is reached."""
        with self._history_lock(), self._signals():
            cron, tz, pid = self.schedule.text, self.schedule.tz_name, os.getpid()
            started = {"time": _iso(self.clock()), "cron": cron, "timezone": tz}
            self._record("scheduler_started", **started, max_runs=self.max_runs, pid=pid)
            next_tick = self.schedule.next_after(self.clock())
            self.log(f"scheduler started: cron {cron!r}; next run at {self._local(next_tick)}")
            while not self.stopping:
                now = self.clock()
                if now < next_tick:
                    self.sleep(min(self.poll_s, (next_tick - now).total_seconds()))
                    continue
                tick = next_tick  # the latest due tick fires; earlier due ones were missed
                while (t := self.schedule.next_after(tick)) <= now:
                    tick = t
                if tick != next_tick:
                    self._skip_ticks(next_tick, tick, _MISSED)
                ctx = self._execute(tick)
                if self.max_runs is not None and self.result.runs >= self.max_runs:
                    self.request_stop(f"max-runs {self.max_runs} reached")
                if self.stopping:
                    break
                end = self.clock()
                next_tick = self.schedule.next_after(end)
                self._skip_ticks(
                    self.schedule.next_after(tick),
                    next_tick,
                    f"run {ctx.number} (tick {self._local(tick)}) was still running",
                )
                self.log(f"next run at {self._local(next_tick)}")
            r = self.result
            r.stop_reason = self._stop_reason
            counts = {k: v for k, v in asdict(r).items() if k != "stop_reason"}
            self._record(
                "scheduler_stopped", time=_iso(self.clock()), reason=r.stop_reason, **counts
            )
            self.log(
                f"scheduler stopped ({r.stop_reason}): {r.runs} run(s): {r.succeeded} "
                f"succeeded, {r.failed} failed, {r.terminated} terminated; "
                f"{r.skipped} tick(s) skipped"
            )
            return r

    def _execute(self, tick: dt.datetime) -> RunContext:
        ctx = RunContext(number=self.result.runs + 1, tick=tick)
        self.result.runs += 1
        start = self.clock()
        self.log(f"run {ctx.number} started (tick {self._local(tick)})")
        self._current = ctx
        if self.stopping:  # a stop request raced with the tick
            ctx.cancel.set()
        try:
            outcome = self.run_fn(ctx)
        except Exception as e:  # a broken run must not take the scheduler down
            outcome = RunOutcome("failed", error=f"{type(e).__name__}: {e}")
        finally:
            self._current = None
        if not isinstance(outcome, RunOutcome):
            outcome = RunOutcome(
                "failed", error=f"run_fn returned {type(outcome).__name__}, not a RunOutcome"
            )
        end = self.clock()
        setattr(self.result, outcome.status, getattr(self.result, outcome.status) + 1)
        secs = (end - start).total_seconds()
        rec = {"run": ctx.number, "status": outcome.status, "tick": _iso(tick)}
        rec |= {"start": _iso(start), "end": _iso(end), "seconds": round(secs, 3)}
        rec |= {"summary_path": outcome.summary_path, "error": outcome.error}
        rec["stop_reason"] = self._stop_reason if outcome.status == "terminated" else None
        self._record("run", **rec, **outcome.details)
        msg = f"run {ctx.number} {outcome.status} in {secs:.1f}s"
        if outcome.summary_path:
            msg += f": {outcome.summary_path}"
        if outcome.error and outcome.status != "succeeded":
            msg += f" ({outcome.error.splitlines()[-1][:300]})"
        self.log(msg)
        return ctx


def read_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a history file, oldest first."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
