"""Batch prediction throughput against the in-process predictor on the same rows.

Measures, in one process, on the same rows and the same model (same torch thread count):

  (a) in-process ``Predictor.predict`` on the rows already in memory (a pandas DataFrame), all
      at once: the transform and the network, nothing else;
  (b) the same, chunk by chunk (``--chunk-rows``): what batch prediction computes per chunk;
  (c) batch prediction, Parquet file in -> Parquet file out (``torchkfp.batch_predict``,
      the model already loaded): reading, Arrow -> pandas, scoring, writing, the rename;
  (d) the same as ``run_batch`` (the CLI's call): model loading included;
  (e) DuckDB table in -> DuckDB table out (one transaction at the end).

and prints rows/s side by side with the I/O overhead ratio (time of c / time of a). Each case
is timed ``--repeats`` times after one warm-up, the cases interleaved round by round; the best
time is reported (on a shared machine the best is the least disturbed).

Rows: the default query's rows (``configs/local.yaml``: all of 2013, ~336k flights with
weather and planes) from the embedded DuckDB warehouse; ``--rows test`` keeps the test split
(November-December). Model: ``--model PATH``, else the local registry's champion, else one
trained on January 2013 (as bench/bench_serving.py does).

Usage::

    python bench/bench_batch.py                          # all rows, champion (or a new model)
    python bench/bench_batch.py --model PATH --rows test --chunk-rows 65536 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def best_of(cases: list[tuple[str, Callable[[], Any]]], repeats: int) -> dict[str, float]:
    """The best time of each case over ``repeats`` rounds; a round runs every case once, so
    a busy spell on the (shared) machine hits all cases alike, not one of them."""
    for _, fn in cases:
        fn()  # warm-up (first-touch allocations, lazy imports, file cache)
    best = {name: float("inf") for name, _ in cases}
    for _ in range(repeats):
        for name, fn in cases:
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def load_rows(which: str, workdir: Path):
    """The default query's rows (all splits, or the test split) as an Arrow table."""
    import pyarrow as pa

    from torchkfp.artifacts.dataset import SPLITS, read_split
    from torchkfp.config import Config
    from torchkfp.ingest import ingest

    cfg_file = REPO / "configs" / "local.yaml"
    cfg = Config.load(cfg_file if cfg_file.is_file() else None).with_absolute_paths(REPO)
    ingest(cfg.warehouse, cfg.data, cfg.split, workdir / "dataset")
    splits = ("test",) if which == "test" else SPLITS
    return pa.concat_tables([read_split(workdir / "dataset", s) for s in splits])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model artifact folder (default: champion, else build one)")
    ap.add_argument("--rows", choices=["all", "test"], default="all", help="which rows to score")
    ap.add_argument("--chunk-rows", type=int, default=None, help="default: batch.chunk_rows")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import duckdb
    import pyarrow.parquet as pq
    import torch

    from torchkfp.batch_predict import (
        DuckDBSink,
        ParquetFileSink,
        ParquetSource,
        WarehouseSource,
        predict_to,
        run_batch,
    )
    from torchkfp.config import WarehouseConfig
    from torchkfp.config.batch import BatchConfig, Location
    from torchkfp.predictor import Predictor
    from torchkfp.warehouse import DuckDBWarehouse

    chunk = args.chunk_rows or BatchConfig().chunk_rows
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = Path(tmp)
        if args.model:
            model = args.model
        else:
            from bench_serving import find_or_build_model

            model = find_or_build_model(work)
        t0 = time.perf_counter()
        rows = load_rows(args.rows, work)
        print(f"rows: {rows.num_rows:,} ({args.rows}), read in {time.perf_counter() - t0:.1f}s")
        src = work / "rows.parquet"
        pq.write_table(rows, src)
        duck = work / "w.duckdb"
        con = duckdb.connect(str(duck))
        con.execute("CREATE TABLE rows AS SELECT * FROM read_parquet(?)", [str(src)])
        con.close()

        predictor = Predictor(model)
        keys = [c for c in rows.column_names if c not in set(predictor.feature_names)][:3]
        df = rows.to_pandas()  # "already in memory"
        n = rows.num_rows

        def inprocess_all():
            predictor.predict(df)

        def inprocess_chunked():
            for start in range(0, n, chunk):
                predictor.predict(df.iloc[start : start + chunk])

        out = work / "scores.parquet"

        def batch_parquet():
            predict_to(
                predictor,
                ParquetSource(str(src)),
                ParquetFileSink(str(out), "replace"),
                key_columns=keys,
                chunk_rows=chunk,
            )

        cfg = BatchConfig(
            model=model,
            input=str(src),
            output=str(out),
            key_columns=keys,
            chunk_rows=chunk,
            if_exists="replace",
        )

        def batch_run():
            run_batch(cfg)

        wc = WarehouseConfig(duckdb_path=str(duck))

        def batch_duckdb():
            predict_to(
                predictor,
                WarehouseSource(DuckDBWarehouse(str(duck)), "SELECT * FROM rows", {}, "rows"),
                DuckDBSink(Location("duckdb", "scores"), wc, "replace"),
                key_columns=keys,
                chunk_rows=chunk,
            )

        cases = [
            ("(a) in-process predict, rows in memory, one call", inprocess_all),
            (f"(b) in-process predict, chunks of {chunk:,}", inprocess_chunked),
            ("(c) batch: Parquet file -> Parquet file", batch_parquet),
            ("(d) batch: run_batch (model load included)", batch_run),
            ("(e) batch: DuckDB table -> DuckDB table", batch_duckdb),
        ]
        print(
            f"model: {model} ({predictor.task}); torch threads: {torch.get_num_threads()}; "
            f"chunk_rows: {chunk:,}; best of {args.repeats}"
        )
        results = best_of(cases, args.repeats)
        a, b = results[cases[0][0]], results[cases[1][0]]
        print(f"\n{'case':<52} {'seconds':>8} {'rows/s':>11} {'x (a)':>7} {'x (b)':>7}")
        for name, sec in results.items():
            print(f"{name:<52} {sec:8.3f} {n / sec:11,.0f} {sec / a:7.2f} {sec / b:7.2f}")
        c = results[cases[2][0]]
        print(
            f"\nI/O overhead ratio, batch Parquet->Parquet (c) over the in-process predictor: "
            f"{c / a:.2f}x one call on all rows (a), {c / b:.2f}x the same chunks (b)"
        )


if __name__ == "__main__":
    main()
