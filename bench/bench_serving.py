"""Latency and throughput of the prediction server against the in-process predictor.

Starts the real server (``python -m torchkfp.cli serve``) in a subprocess and measures, in one run:

  (a) POST predict, 1 instance     (b) POST predict, 100 instances     (c) GET health (overhead)
  (d) in-process ``Predictor.predict_proba`` on 1 and 100 rows (same torch thread count as the
      server: TORCHKFP_TORCH_THREADS, default 1)

Usage::

    python bench/bench_serving.py                       # local registry champion, else builds one
    python bench/bench_serving.py --model PATH --requests 1000 --concurrency 1 4 16

Client and server share this machine's cores, so at high concurrency the client's own cost is
part of the numbers. Instances are synthetic but realistic: numeric features drawn around the
training mean/std with some nulls, categorical values drawn from the training vocabulary.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
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
    """The local registry champion (configs/local.yaml), else a model trained on a small slice."""
    from torchkfp.config import Config
    from torchkfp.registry import open_registry

    cfg_file = REPO / "configs" / "local.yaml"
    cfg = Config.load(cfg_file if cfg_file.is_file() else None).with_absolute_paths(REPO)
    if cfg.deploy.registry == "local":
        path = open_registry(cfg.deploy).champion()
        if path:
            print(f"model: local registry champion {path}")
            return path
    from torchkfp.ingest import ingest
    from torchkfp.preprocess import preprocess
    from torchkfp.training import launch

    print("model: no champion in the local registry; training one on January 2013 ...")
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


def start_server(model: str, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIP_")}
    fh = open(log, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchkfp.cli", "serve", "--model", model, "--port", str(port)],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
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


def run_http(
    base: str, method: str, path: str, body: Any, n: int, concurrency: int, warmup: int = 20
) -> tuple[list[float], float]:
    """Latencies (s) of n requests spread over `concurrency` threads, and the wall time."""

    def worker(count: int) -> list[float]:
        lat: list[float] = []
        with httpx.Client(base_url=base, timeout=60) as client:
            for i in range(count + warmup):
                t0 = time.perf_counter()
                r = client.request(method, path, json=body)
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
                if i >= warmup:
                    lat.append(dt)
        return lat

    shares = [n // concurrency + (i < n % concurrency) for i in range(concurrency)]
    # warm up every connection first, then time the measured requests only
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: worker(0), range(concurrency)))
    with ThreadPoolExecutor(concurrency) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(worker, shares))
        wall = time.perf_counter() - t0
    return [x for lat in results for x in lat], wall


def run_inprocess(fn: Callable[[], Any], n: int, warmup: int = 20) -> tuple[list[float], float]:
    for _ in range(warmup):
        fn()
    lat = []
    t_start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    return lat, time.perf_counter() - t_start


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model artifact folder (default: champion, else build one)")
    ap.add_argument("--requests", type=int, default=500, help="measured requests per case")
    ap.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8], help="client threads (list)"
    )
    args = ap.parse_args(argv)

    import torch

    from torchkfp.predictor import Predictor

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        model = args.model or find_or_build_model(Path(tmp))
        instances = synthetic_instances(model, 100)
        port = free_port()
        log = Path(tmp) / "server.log"
        t0 = time.perf_counter()
        proc = start_server(model, port, log)
        startup = time.perf_counter() - t0
        base = f"http://127.0.0.1:{port}"
        rows: list[tuple[str, int, int, list[float], float]] = []
        try:
            cases = [
                ("HTTP predict, 1 instance", "POST", "/predict", {"instances": instances[:1]}, 1),
                ("HTTP predict, 100 instances", "POST", "/predict", {"instances": instances}, 100),
                ("HTTP health", "GET", "/health", None, 0),
            ]
            for c in args.concurrency:
                for name, method, path, body, k in cases:
                    lat, wall = run_http(base, method, path, body, args.requests, c)
                    rows.append((name, c, k, lat, wall))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

        torch.set_num_threads(int(os.environ.get("TORCHKFP_TORCH_THREADS", "1")))
        pred = Predictor(model)
        for k in (1, 100):
            lat, wall = run_inprocess(lambda k=k: pred.predict_proba(instances[:k]), args.requests)
            rows.append(
                (f"in-process predict_proba, {k} row{'s' if k > 1 else ''}", 1, k, lat, wall)
            )

    print(
        f"\n{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} intra-op "
        f"thread(s)), {args.requests} measured requests per row, server startup {startup:.1f}s"
    )
    header = f"{'case':<34} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'req/s':>8} {'rows/s':>9}"  # noqa: E501
    print(header)
    print("-" * len(header))
    p50: dict[tuple[str, int], float] = {}
    for name, c, k, lat, wall in rows:
        rps = len(lat) / wall
        rows_s = f"{rps * k:>9.0f}" if k else f"{'-':>9}"
        p50[(name, c)] = pct(lat, 50)
        print(
            f"{name:<34} {c:>4} {pct(lat, 50) * 1e3:>8.2f} {pct(lat, 99) * 1e3:>8.2f} "
            f"{statistics.fmean(lat) * 1e3:>8.2f} {rps:>8.0f} {rows_s}"
        )
    c1 = args.concurrency[0]
    ratios = [
        (
            "HTTP predict-1 p50 / HTTP health p50",
            ("HTTP predict, 1 instance", c1),
            ("HTTP health", c1),
        ),
        (
            "HTTP predict-1 p50 / in-process predict-1 p50",
            ("HTTP predict, 1 instance", c1),
            ("in-process predict_proba, 1 row", 1),
        ),
        (
            "HTTP predict-100 p50 / in-process predict-100 p50",
            ("HTTP predict, 100 instances", c1),
            ("in-process predict_proba, 100 rows", 1),
        ),
        (
            "HTTP predict-100 p50 / HTTP predict-1 p50",
            ("HTTP predict, 100 instances", c1),
            ("HTTP predict, 1 instance", c1),
        ),
    ]
    print(f"\nratios (concurrency {c1}):")
    for label, a, b in ratios:
        print(f"  {label:<50} {p50[a] / p50[b]:6.2f}x")


if __name__ == "__main__":
    main()
