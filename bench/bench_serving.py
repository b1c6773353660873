"""Online latency of one model on PyTorch and on ONNX Runtime, side by side, in one run.

For each runtime (``torch``, ``onnx``):

  (a) the model's forward pass alone on one transformed row, as the predictor runs it (the
      built-in network folded, :class:`~torchkfp.model.FoldedPrediction`, else
      ``model(x_num, x_cat)``, under ``torch.inference_mode``; ONNX Runtime:
      ``session.run``), in a tight loop and with other work between two calls, as a server
      has (:func:`timed_after_other_work`);
  (b) the in-process path for one instance as the server runs it: validation
      (``InstanceValidator.columns``), transform, model, probabilities
      (``Predictor.predict_columns``), by the row-wise fast path and by the pandas path;
  (c) the same for 100 instances (the batch path: pandas);
  (d) the real server (``python -m torchkfp.cli serve --runtime R``) in a subprocess: POST
      predict with 1 and 100 instances, GET health, at each ``--concurrency``;

then the ratios the issue sets targets for: in-process fast path / forward alone (<= 3) and HTTP
predict-1 p50 / HTTP health p50 at concurrency 1 (<= 2). ``--crossover`` also times the row-wise
and the pandas transform at growing row counts (where ``FAST_PATH_MAX_ROWS`` comes from).

Usage::

    python bench/bench_serving.py                       # local registry champion, else builds one
    python bench/bench_serving.py --model PATH --requests 1000 --concurrency 1 8 --crossover

The model must carry an ONNX export (``model.onnx``, written by training) for the onnx column;
without one only torch is measured. Client and server share this machine's cores (the load
average is printed: other processes inflate every number). Instances are synthetic but
realistic: numeric features drawn around the training mean/std with some nulls, categorical
values drawn from the training vocabulary with a few unseen ones.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]

# tests/conftest.py's small slice: January 2013, 3 epochs
SMALL = {
    "warehouse.query_parameters": {"start_date": "2013-01-01", "end_date": "2013-01-31"},
    "split.validation_start": "2013-01-22",
    "split.test_start": "2013-01-27",
    "train.epochs": 3,
    "train.batch_size": 512,
}


def find_or_build_model(workdir: Path) -> str:
    """The local registry champion (configs/local.yaml) if it carries an ONNX export, else a
    model trained on a small slice."""
    from torchkfp.artifacts.model import ModelArtifact
    from torchkfp.config import Config
    from torchkfp.registry import open_registry

    cfg_file = REPO / "configs" / "local.yaml"
    cfg = Config.load(cfg_file if cfg_file.is_file() else None).with_absolute_paths(REPO)
    if cfg.deploy.registry == "local":
        path = open_registry(cfg.deploy).champion()
        if path and ModelArtifact.load(path).has_onnx:
            print(f"model: local registry champion {path}")
            return path
    from torchkfp.ingest import ingest
    from torchkfp.preprocess import preprocess
    from torchkfp.training import launch

    print("model: no champion with an ONNX export; training one on January 2013 ...")
    cfg = cfg.override({**SMALL, "warehouse.duckdb_path": str(workdir / "warehouse.duckdb")})
    ingest(cfg.warehouse, cfg.data, cfg.split, workdir / "dataset")
    preprocess(
        cfg.data, cfg.preprocess, workdir / "dataset", workdir / "transform", workdir / "features"
    )
    launch(cfg.train, workdir / "features", workdir / "transform", workdir / "model")
    return str(workdir / "model")


def synthetic_instances(model_dir: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    from torchkfp.transform import FittedTransform

    tf = FittedTransform.load(Path(model_dir) / "transform.json")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        inst: dict[str, Any] = {}
        for name, s in tf.numeric.items():
            missing = s.add_missing_flag and rng.random() < 0.1
            inst[name] = None if missing else round(float(rng.normal(s.mean, s.std)), 3)
        for name, vocab in tf.vocab.items():
            inst[name] = str(rng.choice(vocab)) if vocab and rng.random() > 0.02 else "unseen"
        out.append(inst)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, runtime: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIP_")}
    fh = open(log, "wb")
    args = ["serve", "--model", model, "--port", str(port), "--runtime", runtime]
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchkfp.cli", *args], stdout=fh, stderr=subprocess.STDOUT, env=env
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server not healthy after 120s:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


Case = tuple[str, str, str, Any, int]
"""(name, method, path, JSON body or None, measured requests)"""


ROUNDS = 10


def run_http(base: str, cases: list[Case], concurrency: int, warmup: int = 50) -> dict:
    """Latencies (s) per case. Each of `concurrency` threads (a keep-alive client each) runs
    the cases in :data:`ROUNDS` rounds, each round a block of every case's requests in turn:
    a case runs in its own steady state (as when measured alone), and what else runs on the
    machine meanwhile weighs on every case alike."""

    # bodies encoded once, as a client that sends many requests would: the client's own JSON
    # encoding is not the server's latency
    encoded = {
        name: None if body is None else json.dumps(body).encode() for name, _, _, body, _ in cases
    }
    headers = {"Content-Type": "application/json"}

    def worker(_: int) -> dict[str, list[float]]:
        lat: dict[str, list[float]] = {name: [] for name, *_ in cases}
        with httpx.Client(base_url=base, timeout=60, headers=headers) as client:
            for name, method, path, _body, _n in cases:  # warm every route and connection
                for _ in range(warmup):
                    client.request(method, path, content=encoded[name])
            for _ in range(ROUNDS):
                for name, method, path, _body, n in cases:
                    for _ in range(max(n // (concurrency * ROUNDS), 1)):
                        t0 = time.perf_counter()
                        r = client.request(method, path, content=encoded[name])
                        dt = time.perf_counter() - t0
                        if r.status_code != 200:
                            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
                        lat[name].append(dt)
        return lat

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, range(concurrency)))
    return {name: [x for r in results for x in r[name]] for name, *_ in cases}


def timed(fn: Callable[[], Any], n: int, warmup: int = 50) -> list[float]:
    return timed_together({"": fn}, n, warmup)[""]


def timed_together(
    fns: dict[str, Callable[[], Any]], n: int, warmup: int = 50
) -> dict[str, list[float]]:
    """Latencies (s) of each function, in rounds of blocks like :func:`run_http`."""
    lat: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(ROUNDS):
        for k, fn in fns.items():
            for _ in range(max(n // ROUNDS, 1)):
                t0 = time.perf_counter()
                fn()
                lat[k].append(time.perf_counter() - t0)
    return lat


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) * 1e3


def timed_after_other_work(fn: Callable[[], Any], body: str, n: int) -> list[float]:
    """Latencies (s) of ``fn`` when, as in a server, other work runs between two calls: before
    each (untimed), a request body is parsed and a response encoded as JSON and 16 MB of memory
    is read, which leaves the CPU caches holding something else."""
    scratch = np.ones(2_000_000)
    lat = []
    for i in range(n + 50):
        json.dumps(json.loads(body))
        scratch.sum()
        t0 = time.perf_counter()
        fn()
        if i >= 50:
            lat.append(time.perf_counter() - t0)
    return lat


def inprocess(model: str, runtime: str, instances: list[dict[str, Any]], n: int) -> dict:
    """Latencies (s) of the in-process cases for one runtime."""
    import torch

    from torchkfp import predictor as predictor_module
    from torchkfp.predictor import Predictor
    from torchkfp.serving.requests import InstanceValidator

    p = Predictor(model, runtime, threads=1)
    tf = p.transform
    v = InstanceValidator(
        tf.numeric_features,
        tf.categorical_features,
        {k: (s.mean, s.std) for k, s in tf.numeric.items()},
    )
    one = instances[:1]
    arrays = tf.transform_values(v.columns(one))
    if runtime == "onnx":
        onnx_model = p._onnx

        def forward() -> None:
            onnx_model(arrays["x_num"], arrays["x_cat"])
    else:  # what the predictor runs: the built-in network folded (FoldedPrediction)
        x_num, x_cat = torch.from_numpy(arrays["x_num"]), torch.from_numpy(arrays["x_cat"])
        net = p._folded or p.model

        def forward() -> None:
            with torch.inference_mode():
                net(x_num, x_cat)

    def path(rows: list[dict[str, Any]], fast: bool) -> Callable[[], Any]:
        return lambda: p.predict_columns(v.columns(rows), len(rows), fast=fast)

    out = timed_together(
        {"forward": forward, "fast-1": path(one, True), "pandas-1": path(one, False)}, n
    )
    out["forward-cold"] = timed_after_other_work(forward, json.dumps({"instances": one}), n)
    hundred = instances[:100]
    fast_100 = len(hundred) <= predictor_module.FAST_PATH_MAX_ROWS
    out["batch-100"] = timed(path(hundred, fast_100), max(n // 5, 20))
    return out


def crossover(model: str, instances: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """(rows, row-wise transform ms, pandas transform ms) at growing row counts, as the server
    calls them (validated columns in, arrays out)."""
    import pandas as pd

    from torchkfp.predictor import Predictor

    p = Predictor(model)
    tf = p.transform
    rows_out = []
    for k in (1, 8, 32, 128, 256, 512, 1000):
        cols = {name: [r[name] for r in instances[:k]] for name in p.feature_names}
        for name in tf.numeric:
            cols[name] = [np.nan if x is None else x for x in cols[name]]

        def pandas_path(cols: dict = cols, k: int = k) -> None:
            data: dict[str, np.ndarray] = {
                c: np.asarray(cols[c], dtype=np.float64) for c in tf.numeric
            }
            for c in tf.vocab:
                data[c] = np.empty(k, dtype=object)
                data[c][:] = cols[c]
            tf.transform(pd.DataFrame(data, copy=False))

        fast = pct(timed(lambda cols=cols: tf.transform_values(cols), 200), 50)
        slow = pct(timed(pandas_path, 200), 50)
        rows_out.append((k, fast, slow))
    return rows_out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model artifact folder (default: champion, else build one)")
    ap.add_argument("--requests", type=int, default=1000, help="measured requests per case")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1], help="client threads")
    ap.add_argument("--crossover", action="store_true", help="time row-wise vs pandas transform")
    args = ap.parse_args(argv)

    import torch

    from torchkfp.artifacts.model import ModelArtifact

    torch.set_num_threads(int(os.environ.get("TORCHKFP_TORCH_THREADS", "1")))
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        model = args.model or find_or_build_model(Path(tmp))
        runtimes = ["torch"] + (["onnx"] if ModelArtifact.load(model).has_onnx else [])
        instances = synthetic_instances(model, 1000)
        results: dict[str, dict[str, list[float]]] = {}
        n, n5 = args.requests, max(args.requests // 5, 20)
        for rt in runtimes:
            results[rt] = inprocess(model, rt, instances, args.requests)
            port = free_port()
            proc = start_server(model, port, rt, Path(tmp) / f"server-{rt}.log")
            base = f"http://127.0.0.1:{port}"
            try:
                for c in args.concurrency:
                    cases: list[Case] = [
                        (f"http-1 c{c}", "POST", "/predict", {"instances": instances[:1]}, n),
                        (f"health c{c}", "GET", "/health", None, n),
                        (f"http-100 c{c}", "POST", "/predict", {"instances": instances[:100]}, n5),
                    ]
                    results[rt].update(run_http(base, cases, c))
            finally:
                stop(proc)
        cross = crossover(model, instances) if args.crossover else []

    load = os.getloadavg()
    print(
        f"\n{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"torch {torch.__version__}, 1 intra-op thread (server and in-process); "
        f"{args.requests} measured calls per case (100-instance cases: a fifth)"
    )
    labels = {
        "forward": "model forward alone, 1 row",
        "forward-cold": "  the same, after other work",
        "fast-1": "in-process predict, 1 (fast path)",
        "pandas-1": "in-process predict, 1 (pandas)",
        "batch-100": "in-process predict, 100",
    }
    for c in args.concurrency:
        labels[f"http-1 c{c}"] = f"HTTP predict, 1 instance, conc {c}"
        labels[f"http-100 c{c}"] = f"HTTP predict, 100 instances, conc {c}"
        labels[f"health c{c}"] = f"HTTP health, conc {c}"
    head = f"{'case':<38}" + "".join(f"{rt + ' p50':>12}{rt + ' p99':>12}" for rt in runtimes)
    print(head + "   (ms)")
    print("-" * len(head))
    for key, label in labels.items():
        cells = "".join(
            f"{pct(results[rt][key], 50):>12.3f}{pct(results[rt][key], 99):>12.3f}"
            for rt in runtimes
        )
        print(f"{label:<38}{cells}")
    c1 = args.concurrency[0]
    ratios = [
        ("in-process fast path / forward alone (target <= 3)", "fast-1", "forward"),
        ("in-process pandas path / forward alone", "pandas-1", "forward"),
        (
            f"HTTP predict-1 / HTTP health, conc {c1} (target <= 2)",
            f"http-1 c{c1}",
            f"health c{c1}",
        ),
        (f"HTTP predict-100 / HTTP predict-1, conc {c1}", f"http-100 c{c1}", f"http-1 c{c1}"),
    ]
    print("\nratios of p50s" + "".join(f"{rt:>10}" for rt in runtimes))
    for label, a, b in ratios:
        cells = "".join(
            f"{pct(results[rt][a], 50) / pct(results[rt][b], 50):>9.2f}x" for rt in runtimes
        )
        print(f"  {label:<56}{cells}")
    if len(runtimes) == 2:
        print("\nONNX Runtime / PyTorch, p50:")
        for key in ("forward", "fast-1", f"http-1 c{c1}", f"http-100 c{c1}"):
            ratio = pct(results["onnx"][key], 50) / pct(results["torch"][key], 50)
            print(f"  {labels[key]:<56}{ratio:>9.2f}x")
    if cross:
        print("\ntransform of validated columns, p50 ms (FAST_PATH_MAX_ROWS decides)")
        print(f"  {'rows':>6}{'row-wise':>12}{'pandas':>12}")
        for k, fast, slow in cross:
            print(f"  {k:>6}{fast:>12.3f}{slow:>12.3f}")


if __name__ == "__main__":
    main()
