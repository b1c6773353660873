"""``torchkfp run`` (the whole DAG locally, through kfp.local) and ``torchkfp compile`` (the
Vertex AI and the local pipeline to YAML).

The only commands that reach into ``torchkfp.pipelines`` (and so kfp), lazily, inside the
command, so ``torchkfp --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from torchkfp.cli.options import (
    DEFAULT_VERTEX_CONFIG,
    ConfigOpt,
    SetOpt,
    load_config,
    load_vertex_config,
)


def run(
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Hide kfp's per-task logs."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Checkpoint training under <run.pipeline_root>/checkpoints/<key> (key: the "
        "features and the train settings but timeout_s) and resume from the last checkpoint "
        "an earlier --resume run on the same data with the same settings left there. "
        "Without it, training that does run starts from scratch.",
    ),
    no_cache: bool = typer.Option(
        False,
        "--no-cache",
        help="Run ingest, preprocess and train afresh instead of reusing the stage cache "
        "(<run.pipeline_root>/cache: outputs of earlier runs on the same data and settings); "
        "their outputs are still stored there.",
    ),
) -> None:
    """Run the whole DAG locally (kfp.local, embedded defaults: DuckDB, local registry).

    Examples:\n
      torchkfp run\n
      torchkfp run --set train.epochs=3\n
      torchkfp run --resume  (again after a killed run: training goes on where it stopped)\n
      torchkfp run --no-cache  (rerun every stage, even if the data and settings are unchanged)\n
      torchkfp run -q -c my.yaml --set split.validation_start=2013-05-01 \\
        --set split.test_start=2013-06-01\n
      torchkfp init --data my.parquet --label churned --out my.yaml  (then: run -c my.yaml)

    Ingest, preprocess and train reuse an earlier run's outputs when the source data's
    fingerprint and their settings are unchanged (the summary says "cache hit").

    A failed stage: its exception (type and message) is printed as one `error:` line and
    recorded in the run summary (exit code 1).
    """
    cfg = load_config(config, set_)  # first: a config error exits before kfp is imported
    from torchkfp.pipelines.local import PipelineFailed, run_local

    try:
        summary, path = run_local(cfg, quiet_kfp=quiet, resume=resume, reuse=not no_cache)
    except PipelineFailed as e:
        if e.summary:
            print_summary(e.summary)
        # one line naming the stage and the exception it died of (its first line; the whole
        # message is in the summary's "error", the traceback in the run's kfp.log)
        first, *more = (e.error or str(e)).splitlines() or [""]
        sys.stdout.flush()  # the stage table first, also when stdout is a pipe
        typer.secho(
            f"error: {e.stage or 'pipeline'}: {first}{' ...' if more else ''}", fg="red", err=True
        )
        print(e.summary_path)
        raise typer.Exit(1) from None
    print_summary(summary)
    print(path)


def print_summary(s: dict[str, Any]) -> None:
    typer.echo("")
    typer.secho(f"pipeline {s['status']} in {s['wall_seconds']:.1f}s", bold=True)
    for name, st in s["stages"].items():
        secs = s["stage_seconds"].get(name)
        t = f"{secs:6.1f}s" if secs is not None else "     - "
        cache = f"  cache {st['cache']}" if st.get("cache") else ""
        typer.echo(f"  {name:<11} {st['status']:<10} {t}{cache}")
    m = s.get("metrics") or {}
    scalars = {
        k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if scalars:  # whichever the task kind reports (roc_auc, accuracy, rmse, ...)
        shown = (f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items())
        typer.echo("  test: " + " ".join(shown))
    r = s.get("resume") or {}
    train = s["stages"].get("train", {})
    if r.get("requested") and train.get("cache") == "hit":
        typer.echo("  training: reused from the stage cache (nothing to resume)")
    elif r.get("requested") and train.get("status") == "succeeded":
        frm = r.get("resumed_from_epoch")
        how = f"resumed after epoch {frm}" if frm is not None else "from scratch"
        typer.echo(f"  training: {how} (checkpoints: {r.get('checkpoint_dir')})")
    elif r.get("requested"):
        typer.echo(
            f"  training: checkpoints under {r.get('checkpoint_root')}; the same command with "
            "--resume goes on from the last one"
        )
    if s["status"] != "succeeded":
        return
    typer.echo(f"  world size: {s.get('world_size')}  gate: {s['gate']}")
    typer.echo(f"  model: {json.dumps(s['model'])}")
    if s.get("report_html"):
        typer.echo(f"  report: {s['report_html']}  (torchkfp report --open)")


def compile_(
    config: str = typer.Option(
        None, "--config", "-c", help="Local config (default: configs/local.yaml)."
    ),
    vertex_config: str = typer.Option(
        None, "--vertex-config", help=f"Vertex config (default: {DEFAULT_VERTEX_CONFIG})."
    ),
    out: str = typer.Option("build", "--out", "-o", help="Output folder."),
) -> None:
    """Compile the Vertex AI and the local pipeline to YAML.

    Examples:\n
      torchkfp compile\n
      python compile.py --vertex-config configs/vertex.yaml --out build
    """
    local_cfg = load_config(config)  # first: a config error exits before kfp is imported
    vertex_cfg = load_vertex_config(vertex_config)
    from torchkfp.pipelines.compiler import compile_pipelines

    for target, path in compile_pipelines(local_cfg, vertex_cfg, out).items():
        typer.echo(f"{target}: {path}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("compile")(compile_)
