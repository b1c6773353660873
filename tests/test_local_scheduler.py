"""The local cron scheduler: the loop with a fake clock (no processes), the subprocess run
function with tiny real processes, and one integration test of `torchkfp schedule run-local`
running the real DAG."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from torchkfp.cron import CronError, CronSchedule
from torchkfp.local_scheduler import (
    LocalScheduler,
    RunContext,
    RunOutcome,
    ScheduleError,
    SubprocessRun,
    read_history,
)
from torchkfp.stage_cache import MISS

UTC = dt.timezone.utc


def T(h: int, m: int = 0, s: int = 0, day: int = 1, month: int = 1) -> dt.datetime:
    return dt.datetime(2024, month, day, h, m, s, tzinfo=UTC)


class FakeClock:
    """clock() and sleep() for the scheduler; sleeping advances time instantly."""

    def __init__(self, start: dt.datetime):
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep = None  # optional hook(clock) called after each sleep

    def __call__(self) -> dt.datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += dt.timedelta(seconds=seconds)
        if self.on_sleep:
            self.on_sleep(self)

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class FakeRuns:
    """A run_fn: each run takes durations[i] seconds of fake time and returns outcomes[i]."""

    def __init__(self, clock: FakeClock, durations: list[float], outcomes=None):
        self.clock = clock
        self.durations = durations
        self.outcomes = outcomes or {}
        self.calls: list[tuple[int, dt.datetime, dt.datetime]] = []  # (number, tick, started)
        self.active = 0
        self.max_active = 0

    def __call__(self, ctx: RunContext) -> RunOutcome:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            self.calls.append((ctx.number, ctx.tick, self.clock()))
            self.clock.advance(self.durations[ctx.number - 1])
            out = self.outcomes.get(ctx.number)
            if isinstance(out, BaseException):
                raise out
            return out or RunOutcome("succeeded", summary_path=f"/runs/{ctx.number}.json")
        finally:
            self.active -= 1


def make(tmp_path, clock, run_fn, cron="*/10 * * * *", **kw) -> LocalScheduler:
    kw.setdefault("poll_s", 3600)
    return LocalScheduler(
        cron, run_fn, tmp_path / "history.jsonl", clock=clock, sleep=clock.sleep, **kw
    )


def events(tmp_path, kind=None) -> list[dict]:
    recs = read_history(tmp_path / "history.jsonl")
    return [r for r in recs if kind is None or r["event"] == kind]


# ------------------------------------------------------------------------------------------
# cron parsing
# ------------------------------------------------------------------------------------------
def parse(cron: str) -> CronSchedule:
    """The local scheduler's dialect (a 6th trailing seconds field allowed)."""
    return CronSchedule.parse(cron, allow_seconds=True)


def test_cron_next_ticks_utc_by_default():
    s = parse("*/10 * * * *")
    assert s.tz_name == "UTC"
    assert s.next_after(T(0, 3)) == T(0, 10)
    assert s.next_after(T(0, 10)) == T(0, 20)  # strictly after


def test_tz_prefix_is_honoured_across_dst():
    s = parse("TZ=America/New_York 0 3 * * *")
    assert (s.tz_name, s.expression) == ("America/New_York", "0 3 * * *")
    assert s.next_after(T(12, day=1, month=1)) == T(8, day=2, month=1)  # EST: UTC-5
    assert s.next_after(T(12, day=1, month=7)) == T(7, day=2, month=7)  # EDT: UTC-4
    assert parse("CRON_TZ=Asia/Tokyo 0 9 * * *").next_after(T(12)) == T(0, day=2)


def test_six_fields_means_seconds():
    s = parse("* * * * * */5")
    assert s.next_after(T(0, 0, 1)) == T(0, 0, 5)
    with pytest.raises(CronError, match="has 6 field"):
        CronSchedule.parse("* * * * * */5")  # Vertex AI's dialect: five fields only


@pytest.mark.parametrize(
    "cron, needle",
    [
        ("61 * * * *", "not a valid cron expression"),
        ("* * *", "has 3 field(s); write 5"),
        ("", "has 0 field(s)"),
        ("0 3 * * * * * *", "has 8 field(s)"),
        ("TZ=Mars/Olympus 0 3 * * *", "unknown time zone 'Mars/Olympus'"),
        ("TZ=Europe/Paris", "must be followed by a space and the cron fields"),
        ("0 25 * * *", "not a valid cron expression"),
    ],
)
def test_bad_cron_is_a_clear_error(cron, needle):
    with pytest.raises(CronError) as e:
        parse(cron)
    assert needle in str(e.value)


def test_bad_cron_fails_the_scheduler_before_any_run(tmp_path):
    with pytest.raises(CronError, match="not a valid cron"):
        LocalScheduler("99 * * * *", lambda ctx: RunOutcome("succeeded"), tmp_path / "h.jsonl")
    assert not (tmp_path / "h.jsonl").exists()


# ------------------------------------------------------------------------------------------
# the loop, with a fake clock
# ------------------------------------------------------------------------------------------
def test_runs_fire_on_cron_ticks(tmp_path):
    clock = FakeClock(T(0, 3))
    runs = FakeRuns(clock, [60, 60, 60])
    res = make(tmp_path, clock, runs, max_runs=3).run()
    # each run starts exactly at its tick (the loop sleeps up to the tick, not past it)
    assert [(n, t, s) for n, t, s in runs.calls] == [
        (1, T(0, 10), T(0, 10)),
        (2, T(0, 20), T(0, 20)),
        (3, T(0, 30), T(0, 30)),
    ]
    assert (res.runs, res.succeeded, res.skipped) == (3, 3, 0)
    assert res.stop_reason == "max-runs 3 reached"
    recs = events(tmp_path)
    assert [r["event"] for r in recs] == [
        "scheduler_started",
        "run",
        "run",
        "run",
        "scheduler_stopped",
    ]
    r1 = recs[1]
    assert r1["status"] == "succeeded" and r1["run"] == 1
    assert r1["tick"] == T(0, 10).isoformat() and r1["start"] == T(0, 10).isoformat()
    assert r1["end"] == T(0, 11).isoformat() and r1["seconds"] == 60
    assert r1["summary_path"] == "/runs/1.json" and r1["error"] is None
    assert recs[-1]["reason"] == "max-runs 3 reached" and recs[-1]["runs"] == 3


def test_overlapping_ticks_are_skipped_and_recorded(tmp_path):
    clock = FakeClock(T(0, 3))
    runs = FakeRuns(clock, [25 * 60, 60])  # run 1 spans the 00:20 and 00:30 ticks
    res = make(tmp_path, clock, runs, max_runs=2).run()
    assert runs.max_active == 1
    assert [t for _, t, _ in runs.calls] == [T(0, 10), T(0, 40)]
    skipped = events(tmp_path, "skipped")
    assert [r["tick"] for r in skipped] == [T(0, 20).isoformat(), T(0, 30).isoformat()]
    assert all("run 1" in r["reason"] and "still running" in r["reason"] for r in skipped)
    assert res.skipped == 2
    # history order: run 1, its skipped ticks, run 2
    assert [r["event"] for r in events(tmp_path)][1:4] == ["run", "skipped", "skipped"]


def test_a_run_ending_exactly_on_a_tick_skips_it(tmp_path):
    clock = FakeClock(T(0, 3))
    runs = FakeRuns(clock, [10 * 60, 60])  # 00:10 -> 00:20 exactly
    make(tmp_path, clock, runs, max_runs=2).run()
    assert [t for _, t, _ in runs.calls] == [T(0, 10), T(0, 30)]
    assert [r["tick"] for r in events(tmp_path, "skipped")] == [T(0, 20).isoformat()]


def test_many_skipped_ticks_are_capped_with_a_count(tmp_path, monkeypatch):
    import torchkfp.local_scheduler as ls

    monkeypatch.setattr(ls, "MAX_SKIP_RECORDS", 3)
    clock = FakeClock(T(0, 0, 30))
    runs = FakeRuns(clock, [10 * 60, 1])  # every-minute cron, 10-minute run
    res = make(tmp_path, clock, runs, cron="* * * * *", max_runs=2).run()
    skipped = events(tmp_path, "skipped")
    assert res.skipped == 10
    assert len(skipped) == 4 and skipped[-1]["count"] == 7
    assert skipped[-1]["tick"] == T(0, 11).isoformat()
    assert runs.calls[1][1] == T(0, 12)


def test_failing_runs_are_recorded_and_the_scheduler_continues(tmp_path):
    clock = FakeClock(T(0, 3))
    runs = FakeRuns(
        clock,
        [60, 60, 60],
        {
            1: RuntimeError("warehouse unreachable"),
            2: RunOutcome(
                "failed",
                summary_path="/runs/2.json",
                error="exit code 1: boom",
                details={"exit_code": 1},
            ),
        },
    )
    res = make(tmp_path, clock, runs, max_runs=3).run()
    r1, r2, r3 = events(tmp_path, "run")
    assert r1["status"] == "failed" and r1["error"] == "RuntimeError: warehouse unreachable"
    assert r1["end"] == T(0, 11).isoformat()
    assert r2["status"] == "failed" and r2["exit_code"] == 1 and r2["summary_path"]
    assert r3["status"] == "succeeded" and r3["tick"] == T(0, 30).isoformat()
    assert (res.runs, res.failed, res.succeeded) == (3, 2, 1)
    assert events(tmp_path, "scheduler_stopped")[0]["failed"] == 2


def test_sigint_during_a_run_terminates_it_records_it_and_returns(tmp_path):
    clock = FakeClock(T(0, 3))
    seen = {}

    def run_fn(ctx: RunContext) -> RunOutcome:
        clock.advance(30)
        if ctx.number == 1:
            return RunOutcome("succeeded", summary_path="/runs/1.json")
        os.kill(os.getpid(), signal.SIGINT)  # the real handler the scheduler installed
        deadline = time.monotonic() + 5
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["cancelled"] = ctx.cancelled
        return RunOutcome("terminated", error="stopped by the scheduler")

    before = signal.getsignal(signal.SIGINT)
    res = make(tmp_path, clock, run_fn).run()  # no max_runs: only the signal stops it
    assert seen["cancelled"] is True
    assert res.stop_reason == "SIGINT" and (res.runs, res.terminated) == (2, 1)
    r2 = events(tmp_path, "run")[1]
    assert r2["status"] == "terminated" and r2["stop_reason"] == "SIGINT"
    assert r2["end"] == (T(0, 20) + dt.timedelta(seconds=30)).isoformat()
    assert events(tmp_path, "scheduler_stopped")[0]["reason"] == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_sigterm_while_waiting_stops_without_a_run(tmp_path):
    clock = FakeClock(T(0, 3))
    runs = FakeRuns(clock, [60])

    def on_sleep(c):
        if c.now >= T(0, 10, 30):
            os.kill(os.getpid(), signal.SIGTERM)

    clock.on_sleep = on_sleep
    res = make(tmp_path, clock, runs, poll_s=30).run()
    assert len(runs.calls) == 1  # the 00:10 run; SIGTERM came while waiting for 00:20
    assert res.stop_reason == "SIGTERM"
    # it noticed within one poll interval, not at the next tick
    assert events(tmp_path, "scheduler_stopped")[0]["time"] <= T(0, 11, 30).isoformat()
    assert [r["event"] for r in events(tmp_path)] == [
        "scheduler_started",
        "run",
        "scheduler_stopped",
    ]


def test_request_stop_from_code(tmp_path):
    clock = FakeClock(T(0, 3))
    sched = None

    def run_fn(ctx):
        sched.request_stop("test")
        assert ctx.cancelled
        return RunOutcome("terminated")

    sched = make(tmp_path, clock, run_fn, handle_signals=False)
    assert sched.run().stop_reason == "test"


def test_ticks_missed_while_asleep_are_recorded_and_the_latest_fires(tmp_path):
    clock = FakeClock(T(0, 3))
    runs = FakeRuns(clock, [60])
    jumped = []

    def on_sleep(c):  # the machine sleeps through 00:10 and 00:20 and wakes at 00:35
        if not jumped:
            jumped.append(1)
            c.now = T(0, 35)

    clock.on_sleep = on_sleep
    make(tmp_path, clock, runs, max_runs=1).run()
    assert [t for _, t, _ in runs.calls] == [T(0, 30)]
    skipped = events(tmp_path, "skipped")
    assert [r["tick"] for r in skipped] == [T(0, 10).isoformat(), T(0, 20).isoformat()]
    assert all(r["reason"].startswith("missed") for r in skipped)


def test_tz_schedule_fires_at_local_time(tmp_path):
    clock = FakeClock(T(0, day=1, month=7))
    runs = FakeRuns(clock, [60, 60])
    make(tmp_path, clock, runs, cron="TZ=Europe/Berlin 30 6 * * *", max_runs=2).run()
    # 06:30 CEST = 04:30 UTC
    assert [t for _, t, _ in runs.calls] == [T(4, 30, day=1, month=7), T(4, 30, day=2, month=7)]
    assert events(tmp_path, "scheduler_started")[0]["timezone"] == "Europe/Berlin"


def test_two_schedulers_cannot_share_a_history(tmp_path):
    clock = FakeClock(T(0, 3))
    errors = []

    def run_fn(ctx):
        second = make(tmp_path, FakeClock(T(0, 3)), lambda c: RunOutcome("succeeded"))
        with pytest.raises(ScheduleError, match="already writing") as e:
            second.run()
        errors.append(str(e.value))
        return RunOutcome("succeeded")

    make(tmp_path, clock, run_fn, max_runs=1).run()
    assert errors and str(os.getpid()) in errors[0]
    # the lock is released afterwards
    make(tmp_path, FakeClock(T(0, 3)), FakeRuns(FakeClock(T(0)), [0]), max_runs=1).run()


def test_run_fn_returning_garbage_is_a_failed_run(tmp_path):
    clock = FakeClock(T(0, 3))
    make(tmp_path, clock, lambda ctx: None, max_runs=1).run()
    (r,) = events(tmp_path, "run")
    assert r["status"] == "failed" and "not a RunOutcome" in r["error"]


# ------------------------------------------------------------------------------------------
# SubprocessRun: the run_fn the CLI uses, with tiny real processes
# ------------------------------------------------------------------------------------------
def _script(tmp_path, body: str) -> list[str]:
    p = tmp_path / "fake_run.py"
    p.write_text(textwrap.dedent(body))
    return [sys.executable, str(p)]


def test_subprocess_run_success_reads_the_summary_path(tmp_path):
    summary = tmp_path / "run_summary.json"
    summary.write_text(json.dumps({"status": "succeeded"}))
    argv = _script(
        tmp_path,
        f"""
        import sys
        print("lots of kfp logs")
        print("pipeline succeeded", file=sys.stderr)
        print({str(summary)!r})
    """,
    )
    out = SubprocessRun(argv, tmp_path / "logs")(RunContext(1, T(0)))
    assert out.status == "succeeded" and out.summary_path == str(summary)
    assert out.details["exit_code"] == 0
    assert Path(out.details["stdout_log"]).read_text().startswith("lots of kfp logs")


def test_subprocess_run_failure_takes_the_error_from_the_summary_or_stderr(tmp_path):
    summary = tmp_path / "run_summary.json"
    summary.write_text(json.dumps({"status": "failed", "error": "RuntimeError: task train"}))
    argv = _script(tmp_path, f"print({str(summary)!r}); raise SystemExit(1)")
    out = SubprocessRun(argv, tmp_path / "logs")(RunContext(1, T(0)))
    assert out.status == "failed" and out.summary_path == str(summary)
    assert out.error == "exit code 1: RuntimeError: task train"

    argv = _script(
        tmp_path,
        "import sys; sys.stderr.write('Traceback...\\nKeyError: x\\n'); raise SystemExit(3)",
    )
    out = SubprocessRun(argv, tmp_path / "logs")(RunContext(2, T(0)))
    assert out.status == "failed" and out.summary_path is None
    assert out.error.startswith("exit code 3: ") and "KeyError: x" in out.error


def test_subprocess_run_that_cannot_start_is_failed(tmp_path):
    out = SubprocessRun([str(tmp_path / "nope")], tmp_path / "logs")(RunContext(1, T(0)))
    assert out.status == "failed" and "cannot start" in out.error


def _cancel_when(ctx: RunContext, path: Path, delay: float = 0.2) -> None:
    def go():
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        ctx.cancel.set()

    threading.Thread(target=go, daemon=True).start()


def test_subprocess_run_cancel_lets_torchrun_like_parents_stop_their_workers(tmp_path):
    # like kfp -> task -> torchrun: the run's child starts a worker in its own session (as
    # torchrun does) and, on SIGTERM, stops it and waits for it; the worker needs a moment
    pidfile, clean = tmp_path / "worker.pid", tmp_path / "worker-exited-cleanly"
    worker = (
        "import signal, sys, time\n"
        "def bye(*a):\n"
        "    time.sleep(0.5)\n"
        f"    open({str(clean)!r}, 'w').write('1'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "time.sleep(60)\n"
    )
    argv = _script(
        tmp_path,
        f"""
        import signal, subprocess, sys, time
        w = subprocess.Popen([sys.executable, "-c", {worker!r}], start_new_session=True)
        def stop(*a):
            w.terminate(); w.wait(); sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
        open({str(pidfile)!r}, "w").write(str(w.pid))
        time.sleep(60)
    """,
    )
    ctx = RunContext(1, T(0))
    _cancel_when(ctx, pidfile, delay=0.5)
    t0 = time.monotonic()
    out = SubprocessRun(argv, tmp_path / "logs", grace_s=10)(ctx)
    assert time.monotonic() - t0 < 8  # returned once everything had exited, not at the grace
    assert out.status == "terminated" and out.details["exit_code"] == 143
    assert clean.exists()  # the worker was stopped by its parent, not SIGKILLed
    _assert_gone(int(pidfile.read_text()))


def test_subprocess_run_cancel_kills_orphaned_workers_in_other_sessions(tmp_path):
    # the run dies on SIGTERM without stopping its worker, which sits in its own session (out
    # of reach of the group signal): the scheduler kills it after the grace period
    pidfile = tmp_path / "worker.pid"
    argv = _script(
        tmp_path,
        f"""
        import subprocess, sys, time
        w = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(f"{{w.pid}} {{g.pid}}")
        time.sleep(60)
    """,
    )
    ctx = RunContext(1, T(0))
    _cancel_when(ctx, pidfile)
    out = SubprocessRun(argv, tmp_path / "logs", grace_s=1)(ctx)
    assert out.status == "terminated" and out.details["exit_code"] == -signal.SIGTERM
    for pid in pidfile.read_text().split():
        _assert_gone(int(pid))
    assert _live_group_members(out.details["pid"]) == []


def test_subprocess_run_escalates_to_sigkill_after_the_grace_period(tmp_path):
    ready = tmp_path / "ready"
    argv = _script(
        tmp_path,
        f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").write("1")
        time.sleep(60)
    """,
    )
    ctx = RunContext(1, T(0))
    _cancel_when(ctx, ready, delay=0)
    out = SubprocessRun(argv, tmp_path / "logs", grace_s=0.5)(ctx)
    assert out.status == "terminated" and out.details["exit_code"] == -signal.SIGKILL


def _proc_state(pid: int) -> tuple[str, int] | None:
    """(state, process group) from /proc, None if the process does not exist."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[2])


def _live_group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (a container's init may never reap
    orphans, so a dead member can linger as a zombie)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _proc_state(int(d.name))
            if st and st[1] == pgid and st[0] != "Z":
                out.append(int(d.name))
    return out


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live (non-zombie) processes whose command line contains ``text``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        st = _proc_state(int(d.name))
        if text in cmd and st and st[0] != "Z":
            out.append(cmd)
    return out


def _assert_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = _proc_state(pid)
        if st is None or st[0] == "Z":  # a zombie is dead, only not reaped yet
            return
        time.sleep(0.05)
    pytest.fail(f"process {pid} is still alive")


# ------------------------------------------------------------------------------------------
# the real CLI on the real DAG
# ------------------------------------------------------------------------------------------
def test_cli_rejects_a_bad_cron_before_starting():
    from typer.testing import CliRunner

    from torchkfp.cli import app

    r = CliRunner().invoke(app, ["schedule", "run-local", "--cron", "0 3 * *"])
    assert r.exit_code == 2
    assert "has 4 field(s); write 5" in r.output


CACHED = ("ingest", "preprocess", "train")
"""The stages the local stage cache keeps."""


@pytest.mark.integration
def test_cli_schedule_run_local_runs_the_dag_and_stops_on_sigint(tmp_path, warehouse_path):
    from conftest import make_config

    cfg = make_config(tmp_path, warehouse_path, **{"train.epochs": 1})
    cfg_file = tmp_path / "small.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.to_dict()))
    hist = tmp_path / "sched" / "history.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torchkfp.cli",
            "schedule",
            "run-local",
            "--cron",
            "* * * * * */4",
            "--config",
            str(cfg_file),
            "--max-runs",
            "3",
            "--history",
            str(hist),
            "--grace",
            "20",
            "--no-cache",  # every run trains (the data does not change between ticks)
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def pump():
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def wait_for(text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                if proc.poll() is not None:
                    break
                continue
            if text in seen[-1]:
                return
        proc.kill()
        pytest.fail(f"no {text!r} from the scheduler; output:\n{''.join(seen)}")

    try:
        wait_for("run 1 succeeded", 240)
        wait_for("run 2 started", 30)
        # stop run 2 while it trains: torchrun's workers run in their own sessions
        deadline = time.monotonic() + 90
        trainers: list[str] = []
        while time.monotonic() < deadline and not trainers:
            trainers = [
                c
                for c in _processes_mentioning(str(tmp_path / "runs"))
                if "-m torchkfp.training.worker" in c
            ]
            time.sleep(0.1)
        assert trainers, "run 2 never reached training"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    while not lines.empty():
        seen.append(lines.get())
    out = "".join(seen)
    assert rc == 0, out

    recs = read_history(hist)
    assert recs[0]["event"] == "scheduler_started" and recs[0]["cron"] == "* * * * * */4"
    runs = [r for r in recs if r["event"] == "run"]
    assert [r["status"] for r in runs] == ["succeeded", "terminated"], out
    r1, r2 = runs
    summary = json.loads(Path(r1["summary_path"]).read_text())
    assert summary["status"] == "succeeded" and summary["metrics"]["roc_auc"] > 0.5
    assert summary["model"]["version"] == "1"
    assert Path(r1["stdout_log"]).is_file() and r1["exit_code"] == 0
    # --no-cache (each run is ``torchkfp run --no-cache``; tests/test_stage_cache.py leaves the
    # flag's whole-DAG check to this test): run 1 ran every stage and stored its outputs; run 2,
    # on the same data and settings (the same keys), reused none of them: it ran ingest and
    # preprocess again under those keys and was training when it was stopped
    assert summary["cache"]["reuse"] is False
    assert {k: summary["stages"][k].get("cache") for k in CACHED} == dict.fromkeys(CACHED, MISS)
    log1, log2 = (Path(r["stdout_log"]).read_text() for r in (r1, r2))
    stored = dict(re.findall(r"\[cache\] (\w+): miss \(key (\w+), --no-cache\): stored", log1))
    assert set(stored) == set(CACHED) and "[train] epoch 1/1" in log1, log1
    again = dict(re.findall(r"\[cache\] (\w+): miss \(key (\w+), --no-cache\)", log2))
    assert {k: again.get(k) for k in CACHED[:2]} == {k: stored[k] for k in CACHED[:2]}, log2
    # a ~20 s run on a 4 s cron: the ticks that came while it ran were skipped, not queued
    skipped = [r for r in recs if r["event"] == "skipped"]
    assert skipped and all("run 1" in r["reason"] for r in skipped)
    assert r1["start"] < skipped[0]["tick"] <= r1["end"]
    assert r2["stop_reason"] == "SIGINT" and r2["summary_path"] is None
    assert _live_group_members(r2["pid"]) == []  # nothing of run 2 is left
    assert _processes_mentioning(str(tmp_path / "runs")) == []  # torchrun workers included
    assert recs[-1]["event"] == "scheduler_stopped" and recs[-1]["reason"] == "SIGINT"
    # the terminated run did not move the alias: still the version run 1 registered
    aliases = json.loads((tmp_path / "registry" / "flights-delay" / "aliases.json").read_text())
    assert aliases == {"champion": 1}
    assert "scheduler stopped (SIGINT)" in out
