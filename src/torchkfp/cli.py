"""The ``torchkfp`` command line: argument parsing, then one library call per command.

This module is the top layer (cli -> pipelines -> components -> library): it is the only
module under src/ that reaches into ``torchkfp.pipelines`` (and so kfp), lazily, inside the
commands that need it, so ``torchkfp --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from torchkfp.config import Config, ConfigError

app = typer.Typer(
    help="torchkfp: a PyTorch model from a BigQuery table to a prediction endpoint, as one "
    "Kubeflow Pipelines DAG.\n\nStart with:  torchkfp run   (whole DAG locally, embedded "
    "defaults)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_LOCAL_CONFIG = "configs/local.yaml"
DEFAULT_VERTEX_CONFIG = "configs/vertex.example.yaml"

ConfigOpt = typer.Option(
    None, "--config", "-c", help=f"YAML config (default: {DEFAULT_LOCAL_CONFIG} if present, "
    "else the embedded local defaults)."
)  # fmt: skip
SetOpt = typer.Option(
    None,
    "--set",
    help="Override one setting, e.g. --set train.epochs=2 (repeatable; value is YAML).",
)


def fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def load_config(
    path: str | None,
    sets: list[str] | None = None,
    default: str = DEFAULT_LOCAL_CONFIG,
                resolve_paths: bool = True) -> Config:  # fmt: skip
    import yaml

    if path is None and Path(default).is_file():
        path = default
    try:
        cfg = Config.load(path, resolve_paths=False)
        if sets:
            overrides: dict[str, Any] = {}
            for s in sets:
                key, eq, value = s.partition("=")
                if not eq:
                    raise ConfigError(f"--set {s!r}: write it as section.name=value")
                overrides[key.strip()] = yaml.safe_load(value)
            cfg = cfg.override(overrides)
        return cfg.with_absolute_paths() if resolve_paths else cfg
    except ConfigError as e:
        fail(str(e))
        raise  # unreachable


# ------------------------------------------------------------------------------------------
@app.command()
def run(
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Hide kfp's per-task logs."),
) -> None:
    """Run the whole DAG locally (kfp.local, embedded defaults: DuckDB, local registry).

    Examples:\n
      torchkfp run\n
      torchkfp run --set train.epochs=3\n
      torchkfp run -c my.yaml --set data.validation_start=2013-05-01 \\
        --set data.test_start=2013-06-01 --set data.end_date=2013-06-30
    """
    from torchkfp.pipelines.local import PipelineFailed, run_local

    cfg = load_config(config, set_)
    try:
        summary, path = run_local(cfg, quiet_kfp=quiet)
    except PipelineFailed as e:
        typer.secho(str(e), fg="red", err=True)
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
        typer.echo(f"  {name:<11} {st['status']:<10} {t}")
    m = s.get("metrics") or {}
    if m:
        typer.echo(
            f"  test: roc_auc={m['roc_auc']:.4f} accuracy={m['accuracy']:.4f} "
            f"log_loss={m['log_loss']:.4f} precision={m['precision']:.3f} recall={m['recall']:.3f}"
        )
    typer.echo(f"  world size: {s.get('world_size')}  gate: {s['gate']}")
    typer.echo(f"  model: {json.dumps(s['model'])}")


@app.command("compile")
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
    from torchkfp.pipelines.compiler import compile_pipelines

    local_cfg = load_config(config)
    vertex_cfg = load_config(vertex_config, default=DEFAULT_VERTEX_CONFIG, resolve_paths=False)
    for target, path in compile_pipelines(local_cfg, vertex_cfg, out).items():
        typer.echo(f"{target}: {path}")


def _register_commands() -> None:
    from torchkfp.commands import component, local_schedule, serve, vertex

    for module in (vertex, local_schedule, component, serve):
        module.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="torchkfp")


if __name__ == "__main__":
    main(sys.argv[1:])
