"""Run the whole DAG on this machine with kfp's local runner and write a JSON run summary."""

import contextlib
import datetime as dt
import io
import json
import re
import secrets
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from torchkfp.pipelines.flights_delay import PIPELINE_NAME, build_pipeline

from torchkfp.config import Config
from torchkfp.stage_settings import pipeline_parameters

STAGES = ("ingest", "preprocess", "train", "evaluate", "deploy")  # kfp names tasks by component


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PROGRESS = re.compile(
    r"Executing task '([\w\-]+)'|Task '([\w\-]+)' finished with status (\w+)"
    r"|Pipeline '[\w\-]+' finished with status (\w+)|^\s*(\[train\].*)$"
)


class _ProgressFilter(io.TextIOBase):
    """Quiet mode: kfp.local prints every task's full executor input/output. Send all of it to
    a log file and echo one line per stage event (plus training epochs) to the terminal."""

    def __init__(self, log_path: Path, out):
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        self.out = out
        self.buf = ""
        self.started: dict[str, float] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self._progress(_ANSI.sub("", line))
        return len(text)

    def _progress(self, line: str) -> None:
        m = _PROGRESS.search(line)
        if not m:
            return
        now = time.perf_counter()
        stamp = time.strftime("%H:%M:%S")
        if m.group(1):
            self.started[m.group(1)] = now
            msg = f"{stamp} {m.group(1)}: running"
        elif m.group(2):
            took = now - self.started.get(m.group(2), now)
            msg = f"{stamp} {m.group(2)}: {m.group(3)} ({took:.1f}s)"
        elif m.group(4):
            msg = f"{stamp} pipeline: {m.group(4)}"
        else:
            msg = f"           {m.group(5).strip()}"
        self.out.write(msg + "\n")
        self.out.flush()

    def flush(self) -> None:
        if not self.log.closed:
            self.log.flush()

    def close(self) -> None:
        if not self.log.closed:
            self.log.close()


class PipelineFailed(RuntimeError):
    def __init__(self, message: str, summary_path: str):
        super().__init__(message)
        self.summary_path = summary_path


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
    runs = list(root.glob(f"{PIPELINE_NAME}-*"))
    return runs[0] if len(runs) == 1 else None


def run_local(cfg: Config, quiet_kfp: bool = False) -> tuple[dict[str, Any], str]:
    """Run the local DAG; return (summary, summary path). Raises PipelineFailed (after writing
    the summary) if any stage failed."""
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
    pipeline = build_pipeline("local", cfg)
    log_path = root / "kfp.log"
    quiet = _ProgressFilter(log_path, sys.stdout) if quiet_kfp else None
    t0 = time.perf_counter()
    error = None
    with contextlib.ExitStack() as stack:
        if quiet is not None:
            stack.callback(quiet.close)
            stack.enter_context(contextlib.redirect_stdout(quiet))
            stack.enter_context(contextlib.redirect_stderr(quiet))
        try:
            pipeline(**pipeline_parameters(cfg))
        except Exception as e:  # kfp raises RuntimeError naming the failed task
            error = f"{type(e).__name__}: {e}"
    wall = time.perf_counter() - t0
    run_dir = _run_dir(root)
    summary = summarize(run_dir, cfg, wall, error, started)
    summary["log"] = str(log_path) if quiet is not None else None
    out_dir = run_dir or root
    path = out_dir / "run_summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    if error:
        raise PipelineFailed(f"pipeline failed: {error}", str(path))
    return summary, str(path)


def summarize(
    run_dir: Path | None, cfg: Config, wall: float, error: str | None, started: dt.datetime
) -> dict[str, Any]:
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
    if error:
        # the first stage without outputs after the last one with outputs is the failed one
        for name in STAGES:
            if stages[name]["status"] == "not run":
                if name != "deploy" or stages["evaluate"]["status"] == "succeeded":
                    stages[name]["status"] = "failed"
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
        "pipeline": PIPELINE_NAME,
        "run_dir": str(run_dir) if run_dir else None,
        "started": started.isoformat(),
        "wall_seconds": wall,
        "stage_seconds": {
            k: v.get("wall_seconds") for k, v in stages.items() if v["status"] == "succeeded"
        },
        "world_size": train.get("outputs", {}).get("world_size"),
        "samples_per_s": train.get("outputs", {}).get("samples_per_s"),
        "data_fingerprint": stages["ingest"].get("outputs", {}).get("fingerprint"),
        "rows": stages["ingest"]
        .get("artifacts", {})
        .get("dataset", {})
        .get("metadata", {})
        .get("rows"),
        "metrics": report.get("metrics"),
        "champion_metrics": report.get("champion_metrics"),
        "gate": {"promote": promote, "reasons": report.get("reasons")},
        "model": model_went,
        "training": model_meta.get("training"),
        "stages": {k: {"status": v["status"]} for k, v in stages.items()},
    }
