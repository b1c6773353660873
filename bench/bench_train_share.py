"""Peak RSS and throughput of one training rank on a synthetic features artifact.

    python bench/bench_train_share.py build DIR ROWS     # x_num [ROWS,27] f32, x_cat [ROWS,7] i32
    python bench/bench_train_share.py run DIR MODE [BUDGET_MB] [BUFFER_ROWS]
        MODE: memory | stream (this code, one rank of world 1), old (the Trainer of git
        revision $OLD_REV, default 1db8dd1: the whole split loaded by read_split)

Each ``run`` is its own process: one gloo rank (world 1), build_trainer (or, for ``old``, the
loop of $OLD_REV with the whole split loaded by read_split as before), one training epoch and
its validation; prints ru_maxrss (peak RSS), seconds to build, samples/s of the epoch, and
the data iterator alone (no model) in rows/s.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build(out: Path, rows: int) -> None:
    from torchkfp import artifacts
    from torchkfp.artifacts import features

    out.mkdir(parents=True)
    cards = [16, 4, 88, 2, 8, 19, 7]
    for split, n in (("train", rows), ("validation", 100_000)):
        w = features.SplitWriter(out, split, n, 27, 7, np.float32)
        rng = np.random.default_rng(0)
        for start in range(0, n, 1 << 20):
            k = min(1 << 20, n - start)
            x_num = rng.standard_normal((k, 27), dtype=np.float32)
            x_cat = np.stack([rng.integers(0, c, k, dtype=np.int32) for c in cards], 1)
            y = (rng.random(k) < 0.2 + 0.1 * (x_num[:, 0] > 0)).astype(np.float32)
            w.write(x_num, x_cat, y)
        w.close()
    meta = {
        "format": 2,
        "rows": {"train": rows, "validation": 100_000},
        "cardinalities": cards,
        "num_numeric_inputs": 27,
        "output_size": 1,
        "task": "binary",
        "data_fingerprint": "0" * 64,
    }
    artifacts.commit(out, features.KIND, meta)


def run(feats: str, mode: str, budget: int, buffer_rows: int) -> None:
    import torch
    import torch.distributed as dist

    from torchkfp.config import TrainConfig

    torch.set_num_threads(1)
    init = Path(tempfile.mkdtemp()) / "init"
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=0, world_size=1)
    tc = TrainConfig(
        epochs=1, memory_budget_mb=budget, shuffle_buffer_rows=buffer_rows, export_onnx=False
    )
    cpu = torch.device("cpu")
    t0 = time.perf_counter()
    if mode == "old":
        import importlib.util

        from torchkfp.artifacts import features
        from torchkfp.model import ModelSpec, build_model

        src = subprocess.run(
            [
                "git",
                "-C",
                str(Path(__file__).resolve().parents[1]),
                "show",
                f"{os.environ.get('OLD_REV', '1db8dd1')}:src/torchkfp/training/loop.py",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        f = Path(tempfile.mkdtemp()) / "oldloop.py"
        f.write_text(src)
        spec_ = importlib.util.spec_from_file_location("oldloop", f)
        old = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(old)
        torch.manual_seed(0)
        train, val = features.read_split(feats, "train"), features.read_split(feats, "validation")
        meta = json.loads((Path(feats) / "metadata.json").read_text())
        spec = ModelSpec(
            num_numeric=27,
            cardinalities=meta["cardinalities"],
            hidden_sizes=list(tc.hidden_sizes),
            dropout=tc.dropout,
            max_embedding_dim=tc.max_embedding_dim,
            numeric_embedding=tc.numeric_embedding,
            numeric_embedding_dim=tc.numeric_embedding_dim,
            periodic_frequencies=tc.periodic_frequencies,
            periodic_sigma=tc.periodic_sigma,
        )
        trainer = old.Trainer(tc, build_model(spec), train, val, cpu, 0, 1, None)
    else:
        from torchkfp.training.worker import build_trainer

        trainer, _, _ = build_trainer(tc, feats, cpu, 0, 1, None)
        assert trainer.share.mode == mode, trainer.share.mode
    built = time.perf_counter() - t0
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t1 = time.perf_counter()
    trainer.train_epoch()
    epoch = time.perf_counter() - t1
    sps = trainer.throughput[0]
    it = None
    if mode != "old":
        t2 = time.perf_counter()
        rows = sum(int(b[2].shape[0]) for b in trainer.share.batches(1, 0, 512, cpu))
        it = rows / (time.perf_counter() - t2)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "mode": mode,
                "budget_mb": budget,
                "buffer_rows": buffer_rows,
                "rows": trainer.steps_per_epoch and trainer.samples,
                "build_s": round(built, 1),
                "peak_rss_after_build_mib": round(rss_built),
                "epoch_s": round(epoch, 1),
                "train_samples_per_s": round(sps),
                "iterator_rows_per_s": round(it) if it else None,
                "peak_rss_mib": round(rss),
            }
        ),
        flush=True,
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        run(
            sys.argv[2],
            sys.argv[3],
            int(sys.argv[4]) if len(sys.argv) > 4 else 1024,
            int(sys.argv[5]) if len(sys.argv) > 5 else 262_144,
        )
