"""Run the whole DAG on this machine with kfp's local runner and write a JSON run summary.

kfp.local runs each stage as a subprocess and streams its output through this process; the
runner reads it line by line (:class:`_KfpOutput`), so when a stage fails, the summary and
:class:`PipelineFailed` carry the exception the stage died of (``"error": "Type: message"``,
``"failed_stage"``), with kfp's own "Inner task failed" kept as ``"runner_error"``.

Training that runs (not reused from the stage cache, below) starts from scratch in the run's
own folder, unless ``resume=True`` (``torchkfp run --resume``): it then checkpoints under
``<run.pipeline_root>/checkpoints/<key>`` (key: the features and the train settings, see
:func:`torchkfp.training.checkpoint_key`) and resumes from the last checkpoint an earlier run on
the same data with the same settings left there (a killed or failed run, or a finished one:
then no epoch is left to train). The train step, a subprocess, learns the folder from the
``TORCHKFP_CHECKPOINT_ROOT`` environment variable; the summary's ``"resume"`` says whether and
from which epoch training resumed.

Every run reuses earlier runs' ingest, preprocess and train outputs made on the same keys (the
stage, its settings, the source data's fingerprint and its inputs' keys): the stage cache under
``<run.pipeline_root>/cache`` (:mod:`torchkfp.stage_cache`), which the stages learn from the
``TORCHKFP_CACHE_ROOT`` environment variable. ``reuse=False`` (``torchkfp run --no-cache``) runs
every stage afresh and still stores its outputs. The summary says per stage whether it was a
cache ``hit`` or ``miss``, and so does the console (a ``[cache]`` line per stage)."""

import collections
import contextlib
import datetime as dt
import io
import json
import os
import re
import secrets
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from torchkfp.pipelines.flights_delay import build_pipeline

from torchkfp.config import Config
from torchkfp.stage_cache import CACHE_REUSE_ENV, CACHE_ROOT_ENV, STATUS_METADATA
from torchkfp.stage_settings import pipeline_parameters
from torchkfp.training.launcher import CHECKPOINT_ROOT_ENV

# kfp names tasks by component
STAGES = ("fingerprint", "ingest", "preprocess", "train", "evaluate", "deploy")
CACHED_STAGES = ("ingest", "preprocess", "train")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PROGRESS = re.compile(
    r"Executing task '([\w\-]+)'|Task '([\w\-]+)' finished with status (\w+)"
    r"|Pipeline '[\w\-]+' finished with status (\w+)|^\s*(\[(?:train|cache)\].*)$"
)
_TRACEBACK = "Traceback (most recent call last):"
_EXC_LINE = re.compile(r"([A-Za-z_][\w.]*)(?::\s?(.*))?")
_TASK_TAIL_LINES = 5000  # a failing task's last lines kept to find its traceback in


class _KfpOutput(io.TextIOBase):
    """Everything kfp.local prints during a run (its own logs and each task's streamed
    stdout/stderr) passes through here: all of it goes to the run's ``kfp.log``; the terminal
    gets all of it too, or in quiet mode one line per stage event (plus training epochs). The
    lines of each task are followed, so a failed task's own traceback can be read back
    (:meth:`failure`)."""

    def __init__(self, log_path: Path, out, quiet: bool):
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        self.out = out
        self.quiet = quiet
        self.buf = ""
        self.started: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self.current: str | None = None
        self.task_lines: dict[str, collections.deque[str]] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        if not self.quiet:
            self.out.write(text)
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self._line(_ANSI.sub("", line))
        return len(text)

    def _line(self, line: str) -> None:
        m = _PROGRESS.search(line)
        if self.current is not None and not (m and m.group(2)):
            self.task_lines[self.current].append(line)
        if not m:
            return
        now = time.perf_counter()
        stamp = time.strftime("%H:%M:%S")
        if m.group(1):
            self.current = m.group(1)
            self.task_lines[self.current] = collections.deque(maxlen=_TASK_TAIL_LINES)
            self.started[m.group(1)] = now
            msg = f"{stamp} {m.group(1)}: running"
        elif m.group(2):
            self.status[m.group(2)] = m.group(3)
            if self.current == m.group(2):
                self.current = None
            took = now - self.started.get(m.group(2), now)
            msg = f"{stamp} {m.group(2)}: {m.group(3)} ({took:.1f}s)"
        elif m.group(4):
            msg = f"{stamp} pipeline: {m.group(4)}"
        else:
            msg = f"           {m.group(5).strip()}"
        if self.quiet:
            self.out.write(msg + "\n")
            self.out.flush()

    def failed_task(self) -> str | None:
        """The task that failed: one reported FAILURE, else one that started and never
        finished (kfp raised before logging its end)."""
        for name, st in self.status.items():
            if st.upper() == "FAILURE":
                return name
        unfinished = [n for n in self.started if n not in self.status]
        return unfinished[-1] if unfinished else None

    def failure(self) -> tuple[str | None, tuple[str, str] | None]:
        """(failed task, (exception type, message) of the last traceback it printed)."""
        if self.buf:  # a last line without a newline
            self._line(_ANSI.sub("", self.buf))
            self.buf = ""
        task = self.failed_task()
        if task is None:
            return None, None
        return task, root_exception(list(self.task_lines.get(task, ())))

    def flush(self) -> None:
        if not self.log.closed:
            self.log.flush()
        self.out.flush()

    def close(self) -> None:
        if not self.log.closed:
            self.log.close()


def root_exception(lines: list[str]) -> tuple[str, str] | None:
    """The exception a Python process died of, from its output: the type (as Python printed
    it, module-qualified for non-builtins) and message that end its last traceback, or None
    when there is no traceback. kfp.local indents a task's lines; a chained traceback (``raise
    ... from e``, or an error while handling another) ends with the exception actually raised,
    which is what is returned."""
    starts = [i for i, ln in enumerate(lines) if ln.strip() == _TRACEBACK]
    if not starts:
        return None
    first = lines[starts[-1]]
    indent = first[: len(first) - len(first.lstrip())]
    body = lines[starts[-1] + 1 :]
    for i, ln in enumerate(body):
        rest = ln[len(indent) :] if ln.startswith(indent) else ln.lstrip()
        if not rest.strip() or rest[0].isspace():
            continue  # a frame ("  File ...", its code and ^^^ markers)
        m = _EXC_LINE.fullmatch(rest.rstrip())
        if not m:
            return "Exception", rest.strip()
        message = [m.group(2) or ""]
        for more in body[i + 1 :]:  # a message over several lines ends at a blank line
            more_rest = more[len(indent) :] if more.startswith(indent) else more.strip()
            if not more_rest.strip():
                break
            message.append(more_rest.rstrip())
        return m.group(1), "\n".join(message).strip()
    return None


class PipelineFailed(RuntimeError):
    """A local run failed; its summary is written. ``stage`` is the failed stage (None when
    the run failed before any stage ran), ``error`` the root cause as ``Type: message``."""

    def __init__(
        self,
        message: str,
        summary_path: str,
        *,
        stage: str | None = None,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.summary_path = summary_path
        self.stage = stage
        self.error = error or message
        self.summary = summary


_PYTHON3 = re.compile(r"(?<!\S)python3(?=\s)")


def _replace_python_executable(full_command: list[str], new_executable: str) -> list[str]:
    """kfp.local's SubprocessRunner swaps ``python3`` for this interpreter in every part of a
    task's command, the executor input (our config sections) included: a path such as
    ``.../lib/python3.11/site-packages/data.csv`` in ``warehouse.tables`` came out mangled.
    Only ``python3`` as a command word (``python3 -m kfp.dsl.executor_main``) is swapped."""
    return [_PYTHON3.sub(new_executable, part) for part in full_command]


@contextlib.contextmanager
def _exact_python_swap():
    from kfp.local import subprocess_task_handler as handler

    original = getattr(handler, "replace_python_executable", None)
    if original is None:  # another kfp version: nothing to fix
        yield
        return
    handler.replace_python_executable = _replace_python_executable
    try:
        yield
    finally:
        handler.replace_python_executable = original


def _task_outputs(task_dir: Path) -> dict[str, Any] | None:
    f = task_dir / "executor_output.json"
    if not f.is_file():
        return None
    out = json.loads(f.read_text())
    params = out.get("parameterValues", {})
    arts = {
        name: {"uri": a["artifacts"][0].get("uri"), "metadata": a["artifacts"][0].get("metadata")}
        for name, a in out.get("artifacts", {}).items()
        if a.get("artifacts")
    }
    return {"outputs": params, "artifacts": arts}


def _run_dir(root: Path) -> Path | None:
    # the run's own pipeline root holds kfp's one run folder (<pipeline name>-<timestamp>)
    runs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return runs[0] if len(runs) == 1 else None


def _pipeline_name(run_dir: Path | None, cfg: Config) -> str:
    if run_dir is not None:
        m = re.fullmatch(r"(.+?)-\d{4}(?:-\d{2}){5}-\d+", run_dir.name)
        if m:
            return m.group(1)
    return cfg.run.pipeline_name


def checkpoint_root(cfg: Config) -> Path:
    """Where ``run_local(..., resume=True)`` keeps training checkpoints across runs."""
    return Path(cfg.run.pipeline_root).resolve() / "checkpoints"


def cache_root(cfg: Config) -> Path:
    """Where ``run_local`` keeps the stage cache (:mod:`torchkfp.stage_cache`)."""
    return Path(cfg.run.pipeline_root).resolve() / "cache"


@contextlib.contextmanager
def _env(name: str, value: str | None):
    """The environment variable ``name`` for the run's stages (subprocesses inherit it): set
    to ``value``, or unset (also when the caller's shell had it); restored afterwards."""
    before = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def run_local(
    cfg: Config, quiet_kfp: bool = False, resume: bool = False, reuse: bool = True
) -> tuple[dict[str, Any], str]:
    """Run the local DAG; return (summary, summary path). Raises PipelineFailed (after writing
    the summary) if any stage failed: its ``error`` is the exception the failed stage died of
    (read from the stage's own output, which kfp.local streams through this process), not
    kfp's "Inner task failed".

    ``resume``: training checkpoints under :func:`checkpoint_root` and resumes from an earlier
    run's checkpoint for the same features and train settings (else: from scratch).

    ``reuse``: ingest, preprocess and train reuse the stage cache's outputs (under
    :func:`cache_root`) made on the same keys; False runs them afresh (their outputs are
    stored all the same)."""
    import kfp.local

    started = dt.datetime.now(dt.timezone.utc)
    # each run gets its own pipeline root, so concurrent runs (a scheduler next to a manual
    # run) can never read each other's outputs: <run.pipeline_root>/<run id>/<kfp run dir>/
    root = Path(cfg.run.pipeline_root) / f"run-{started:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    root.mkdir(parents=True)
    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    # kfp warns for every task that our base image is "not Python" (it is our training image;
    # locally the components run in this very environment, which has everything they need)
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses")
    log_path = root / "kfp.log"
    t0 = time.perf_counter()
    runner_error = None
    # kfp.local prints its logs and every task's output (stdout and stderr merged) on
    # sys.stdout: all of it passes through `output` (kfp.log, the terminal, the failed task)
    output = _KfpOutput(log_path, sys.stdout, quiet=quiet_kfp)
    ck_root = checkpoint_root(cfg) if resume else None
    cache = {"root": str(cache_root(cfg)), "reuse": reuse}
    with contextlib.ExitStack() as stack:
        stack.callback(output.close)
        # unset without resume: training starts from scratch whatever the caller's shell has
        stack.enter_context(_env(CHECKPOINT_ROOT_ENV, None if ck_root is None else str(ck_root)))
        stack.enter_context(_env(CACHE_ROOT_ENV, cache["root"]))
        stack.enter_context(_env(CACHE_REUSE_ENV, "1" if reuse else "0"))
        stack.enter_context(_exact_python_swap())
        stack.enter_context(contextlib.redirect_stdout(output))
        if quiet_kfp:
            stack.enter_context(contextlib.redirect_stderr(output))
        try:
            pipeline = build_pipeline("local", cfg)
            pipeline(**pipeline_parameters(cfg))
        except Exception as e:  # kfp raises RuntimeError naming the failed task
            runner_error = _ANSI.sub("", f"{type(e).__name__}: {e}")
        failed_stage, root_exc = output.failure() if runner_error else (None, None)
    wall = time.perf_counter() - t0
    error = error_type = None
    if runner_error:
        if root_exc is not None:
            error_type = root_exc[0]
            short = error_type.rsplit(".", 1)[-1]
            error = f"{short}: {root_exc[1]}" if root_exc[1] else short
        else:  # no traceback: the run failed outside a stage, or a stage died without one
            error = runner_error
    run_dir = _run_dir(root)
    summary = summarize(
        run_dir,
        cfg,
        wall,
        error,
        started,
        failed_stage=failed_stage,
        resume_root=ck_root,
        cache=cache,
    )
    if runner_error:
        summary["error_type"] = error_type
        summary["runner_error"] = runner_error
    summary["log"] = str(log_path)
    out_dir = run_dir or root
    path = out_dir / "run_summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    if error:
        stage = summary.get("failed_stage")
        where = f"{stage}: " if stage else ""
        raise PipelineFailed(
            f"pipeline failed: {where}{error}",
            str(path),
            stage=stage,
            error=error,
            summary=summary,
        )
    return summary, str(path)


def summarize(
    run_dir: Path | None,
    cfg: Config,
    wall: float,
    error: str | None,
    started: dt.datetime,
    failed_stage: str | None = None,
    resume_root: Path | None = None,
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run summary. ``resume_root``: the checkpoint root of a run with resume (None:
    without). ``cache``: the stage cache's ``root`` and whether it was ``reuse``d (None: no
    stage cache)."""
    stages: dict[str, Any] = {}
    for name in STAGES:
        out = _task_outputs(run_dir / name) if run_dir else None
        if out is None:
            stages[name] = {"status": "not run"}
            continue
        secs = out["outputs"].get("seconds")
        if secs is None:  # evaluate returns only its decision; its time is in the report
            secs = (out["artifacts"].get("report") or {}).get("metadata", {}).get("seconds")
        stages[name] = {"status": "succeeded", "wall_seconds": secs, **out}
        cached = [(a.get("metadata") or {}).get(STATUS_METADATA) for a in out["artifacts"].values()]
        if name in CACHED_STAGES and any(cached):
            stages[name]["cache"] = next(c for c in cached if c)
    if error and failed_stage in stages:  # the stage whose own output says it failed
        stages[failed_stage]["status"] = "failed"
    elif error and failed_stage is None and run_dir is not None:
        # else: the first stage without outputs after the last one with outputs
        for name in STAGES:
            if stages[name]["status"] == "not run":
                if name != "deploy" or stages["evaluate"]["status"] == "succeeded":
                    stages[name]["status"] = "failed"
                    failed_stage = name
                break
    ev = stages["evaluate"]
    train = stages["train"]
    dep = stages["deploy"]
    promote = ev.get("outputs", {}).get("Output")
    model_meta = {}
    if train.get("artifacts", {}).get("model"):
        mfile = Path(train["artifacts"]["model"]["uri"]) / "metadata.json"
        if mfile.exists():
            model_meta = json.loads(mfile.read_text())
    report = {}
    if ev.get("artifacts", {}).get("report"):
        rfile = Path(ev["artifacts"]["report"]["uri"])
        if rfile.exists():
            report = json.loads(rfile.read_text())
    if dep["status"] == "succeeded":
        model_went = {
            "registry": cfg.deploy.registry,
            "model_name": cfg.deploy.model_name,
            "version": dep["outputs"].get("version"),
            "alias": cfg.deploy.alias,
            "path": dep["outputs"].get("location"),
        }
    else:
        model_went = {
            "registry": None,
            "reason": "not promoted by the evaluation gate" if promote is False else "not deployed",
            "candidate_path": train.get("artifacts", {}).get("model", {}).get("uri"),
        }
    return {
        "status": "failed" if error else "succeeded",
        "error": error,
        "failed_stage": failed_stage if error else None,
        "pipeline": _pipeline_name(run_dir, cfg),
        "run_dir": str(run_dir) if run_dir else None,
        "started": started.isoformat(),
        "wall_seconds": wall,
        "stage_seconds": {
            k: v.get("wall_seconds") for k, v in stages.items() if v["status"] == "succeeded"
        },
        "world_size": train.get("outputs", {}).get("world_size"),
        "samples_per_s": train.get("outputs", {}).get("samples_per_s"),
        "source_fingerprint": {
            k: stages["fingerprint"].get("outputs", {}).get(k)
            for k in ("fingerprint", "method", "detail")
        },
        "data_fingerprint": stages["ingest"].get("outputs", {}).get("fingerprint"),
        "rows": stages["ingest"]
        .get("artifacts", {})
        .get("dataset", {})
        .get("metadata", {})
        .get("rows"),
        "metrics": report.get("metrics"),
        "champion_metrics": report.get("champion_metrics"),
        "gate": {"promote": promote, "reasons": report.get("reasons")},
        "report_html": (ev.get("artifacts", {}).get("html_report") or {}).get("uri"),
        "slices": report.get("slices"),
        "model": model_went,
        "training": model_meta.get("training"),
        "resume": _resume_summary(resume_root, train, model_meta),
        "cache": cache,
        "stages": {
            k: {"status": v["status"], **({"cache": v["cache"]} if "cache" in v else {})}
            for k, v in stages.items()
        },
    }


def _resume_summary(
    root: Path | None, train: dict[str, Any], model_meta: dict[str, Any]
) -> dict[str, Any]:
    """Whether the run asked to resume, the checkpoint folder its training used, and the
    epoch training resumed after (None: from scratch, or training did not finish)."""
    kfp_meta = (train.get("artifacts", {}).get("model") or {}).get("metadata") or {}
    reused = kfp_meta.get(STATUS_METADATA) == "hit"  # no training ran: nothing resumed
    return {
        "requested": root is not None,
        "checkpoint_root": str(root) if root is not None else None,
        "checkpoint_dir": kfp_meta.get("checkpoint_dir"),
        "resumed_from_epoch": None
        if reused
        else (model_meta.get("training") or {}).get("resumed_from_epoch"),
    }
