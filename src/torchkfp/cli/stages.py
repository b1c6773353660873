"""``torchkfp component ingest|preprocess|train|evaluate|deploy``: one DAG stage on its own.

Each command maps explicit input/output folders and the config onto the same library call as
the stage's KFP component (components/*.py), so a stage can be rerun by hand, e.g. training on
yesterday's preprocessed features. stdout carries exactly one line, the stage's JSON result
(anything the library or its subprocesses print goes to stderr), so the commands chain in
shell scripts (``| jq -r .model``). Errors print one ``error: ...`` line, no traceback, and exit
non-zero (2: configuration or usage, 1: the stage failed; an OSError such as a full disk counts
as a failed stage). An output folder that is, holds or sits inside another folder of the same
command is refused before anything runs (exit 2): writing it would delete the other.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from torchkfp.cli.options import (
    ConfigOpt,
    SetOpt,
    echo_json,
    fail,
    load_config,
    stdout_to_stderr,
)

component_app = typer.Typer(
    help="Run one DAG stage on its own, with explicit input and output folders and the same "
    "config as `torchkfp run` (the same library call as the stage's KFP component). Each "
    "prints one JSON line on stdout.\n\nExample:  torchkfp component train --features "
    "prev/features --transform prev/transform --model-out model",
    no_args_is_help=True,
)


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    """Run a stage: stdout kept clean, the library's known errors turned into one line."""
    from torchkfp.config import ConfigError
    from torchkfp.errors import USER_ERRORS

    try:
        with stdout_to_stderr():
            yield
    except ConfigError as e:
        fail(f"{name}: {e}", 2)
    except USER_ERRORS as e:
        fail(f"{name}: {e}", 1)
    except OSError as e:  # the environment: a full disk, a folder that cannot be written
        where = f" ({e.filename})" if e.filename else ""
        fail(f"{name}: {type(e).__name__}: {e.strerror or e}{where}", 1)


def _separate(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """Exit 2 if an output folder is, holds or sits inside another input or output folder
    (each output is cleared before it is written)."""
    named = {k: Path(_abs(v)) for k, v in {**inputs, **outputs}.items() if v and "://" not in v}
    for out in (k for k in outputs if k in named):
        for other, path in named.items():
            o = named[out]
            if other != out and (o == path or o.is_relative_to(path) or path.is_relative_to(o)):
                relation = "is" if o == path else "is inside" if o.is_relative_to(path) else "holds"
                fail(
                    f"{out} {str(o)!r} {relation} {other} {str(path)!r}: writing it would "
                    f"{'overwrite' if relation != 'is inside' else 'change'} the other; give "
                    "separate folders",
                    2,
                )


def _emit(result: dict[str, Any]) -> None:
    echo_json(result, indent=None)  # one line: the commands chain with `| jq`


def _abs(p: str) -> str:
    return p if "://" in p else str(Path(p).resolve())


# ------------------------------------------------------------------------------------------
@component_app.command("ingest")
def ingest_cmd(
    out: str = typer.Option(..., "--out", "-o", help="Dataset folder to write (replaced)."),
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Run the warehouse query and write the Dataset artifact (Parquet shards per split).

    Examples:\n
      torchkfp component ingest --out w/dataset\n
      torchkfp component ingest -o w/dataset --set split.strategy=hash --set split.column=null
    """
    from torchkfp.ingest import ingest

    cfg = load_config(config, set_, query=True)
    with _stage("ingest"):
        r = ingest(cfg.warehouse, cfg.data, cfg.split, _abs(out))
    _emit(
        {
            "stage": "ingest",
            "dataset": r.path,
            "rows": r.rows,
            "fingerprint": r.fingerprint,
            "seconds": r.seconds,
        }
    )


@component_app.command("preprocess")
def preprocess_cmd(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset folder (from ingest)."),
    transform_out: str = typer.Option(..., "--transform-out", help="Transform folder to write."),
    features_out: str = typer.Option(..., "--features-out", help="Features folder to write."),
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Fit the transform on the training split and write tensors for every split.

    Example:\n
      torchkfp component preprocess -d w/dataset --transform-out w/transform --features-out w/feat
    """
    from torchkfp.preprocess import preprocess

    _separate(
        {"--transform-out": transform_out, "--features-out": features_out}, {"--dataset": dataset}
    )
    cfg = load_config(config, set_)
    with _stage("preprocess"):
        r = preprocess(
            cfg.data, cfg.preprocess, _abs(dataset), _abs(transform_out), _abs(features_out)
        )
    _emit(
        {
            "stage": "preprocess",
            "transform": r.transform_path,
            "features": r.features_path,
            "rows": r.rows,
            "label_stats": r.label_stats,
            "seconds": r.seconds,
        }
    )


@component_app.command("train")
def train_cmd(
    features: str = typer.Option(..., "--features", "-f", help="Features folder (preprocess)."),
    transform: str = typer.Option(..., "--transform", "-t", help="Transform folder (preprocess)."),
    model_out: str = typer.Option(..., "--model-out", "-o", help="Model folder to write."),
    checkpoint_dir: str = typer.Option(
        None,
        "--checkpoint-dir",
        help="Checkpoint every epoch here and resume from it if it holds one (default: none, "
        "train from scratch). The DAG's train step uses <model>-checkpoints.",
    ),
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """DDP training (torchrun, train.nproc_per_node processes) into a model artifact.

    Examples:\n
      torchkfp component train --features w/feat --transform w/transform --model-out w/model\n
      torchkfp component train -f w/feat -t w/transform -o w/model2 --set train.epochs=3\n
      torchkfp component train -f w/feat -t w/transform -o w/model --checkpoint-dir w/ckpt
    """
    from torchkfp.training import launch

    _separate(
        {"--model-out": model_out, "--checkpoint-dir": checkpoint_dir},
        {"--features": features, "--transform": transform},
    )
    cfg = load_config(config, set_)
    ckpt = _abs(checkpoint_dir) if checkpoint_dir else None
    with _stage("train"):
        r = launch(cfg.train, _abs(features), _abs(transform), _abs(model_out), ckpt)
    _emit(
        {
            "stage": "train",
            "model": r.model_path,
            "world_size": r.world_size,
            "epochs_run": r.epochs_run,
            "best_epoch": r.best_epoch,
            "best_val_loss": r.best_val_loss,
            "samples_per_s": r.samples_per_s,
            "checkpoint_dir": ckpt,
            "seconds": r.seconds,
        }
    )


@component_app.command("evaluate")
def evaluate_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Candidate model folder (train)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset folder (its test split)."),
    champion: str = typer.Option(
        None,
        "--champion",
        help="Champion model folder to compare against (default: the registry's "
        "deploy.alias version, if any).",
    ),
    no_champion: bool = typer.Option(
        False, "--no-champion", help="Gate on the absolute thresholds only."
    ),
    report_out: str = typer.Option(
        None, "--report-out", help="Write the evaluation report JSON here (as the DAG does)."
    ),
    html_out: str = typer.Option(
        None,
        "--html-out",
        help="Write the HTML evaluation report here (default: next to --report-out, with "
        "the suffix .html; without either, none).",
    ),
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Test-split metrics of the candidate (and champion) and the promotion decision.

    Exit code 0 whether or not the gate promotes; read "promote" in the JSON. With
    evaluate.slice_columns set, "blocked_slices" names the slices that blocked it.

    Examples:\n
      torchkfp component evaluate --model w/model --dataset w/dataset --report-out w/report.json
      (also writes w/report.html)\n
      torchkfp component evaluate -m w/model -d w/dataset --no-champion --html-out r.html\n
      torchkfp component evaluate -m w/model2 -d w/dataset --champion w/model
    """
    from torchkfp.evaluation import evaluate_against_registry, evaluate_candidate
    from torchkfp.registry import open_registry

    if champion and no_champion:
        fail("--champion and --no-champion exclude each other; pass one", 2)
    if report_out and not html_out:
        html_out = str(_html_next_to(Path(report_out)))
    _separate(
        {"--report-out": report_out, "--html-out": html_out},
        {"--model": model, "--dataset": dataset},
    )
    cfg = load_config(config, set_)
    out: Path | None = None
    html: Path | None = None
    with _stage("evaluate"):
        t0 = time.perf_counter()
        if no_champion or champion:
            champ = _abs(champion) if champion else None  # --no-champion: None
            r = evaluate_candidate(cfg.evaluate, _abs(model), _abs(dataset), champ)
        else:
            registry = open_registry(cfg.deploy, cfg.vertex)
            r = evaluate_against_registry(cfg.evaluate, registry, _abs(model), _abs(dataset))
        if report_out:
            out = Path(r.save(Path(report_out).resolve()))
        if html_out:
            html = Path(r.save_html(Path(html_out).resolve()))
    _emit(
        {
            "stage": "evaluate",
            "promote": r.promote,
            "reasons": r.reasons,
            "metrics": r.metrics,
            "champion": r.champion,
            "champion_metrics": r.champion_metrics,
            "blocked_slices": r.blocked_slices(),
            "report": str(out) if out else None,
            "report_html": str(html) if html else None,
            "seconds": time.perf_counter() - t0,
        }
    )


def _html_next_to(report: Path) -> Path:
    """The HTML report's default path beside the JSON report: ``x.json`` -> ``x.html``."""
    html = report.with_suffix(".html")
    return html if html != report else report.with_name(f"{report.name}.html")


@component_app.command("deploy")
def deploy_cmd(
    model: str = typer.Option(
        ..., "--model", "-m", help="Model folder to register (deploy.registry=vertex: a gs:// URI)."
    ),
    if_promoted: str = typer.Option(
        None,
        "--if-promoted",
        help="An evaluate report (--report-out): deploy only if it says promote, as the DAG "
        "does; otherwise print the skip and exit 0.",
    ),
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
) -> None:
    """Register the model as a new version and move the serving alias to it (local registry),
    or upload and deploy it to the Vertex AI endpoint (deploy.registry=vertex).

    Examples:\n
      torchkfp component deploy --model w/model\n
      torchkfp component deploy --model w/model --if-promoted w/report.json
    """
    cfg = load_config(config, set_)
    if if_promoted:
        try:
            decision = json.loads(Path(if_promoted).read_text())["promote"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            fail(
                f"deploy: --if-promoted {if_promoted!r} is not an evaluate report "
                f"({type(e).__name__}: {e}); write one with `component evaluate "
                "--report-out`",
                2,
            )
        if decision is not True:
            _emit(
                {
                    "stage": "deploy",
                    "deployed": False,
                    "model": _abs(model),
                    "reason": f"not promoted by the evaluation gate ({if_promoted})",
                }
            )
            return
    with _stage("deploy"):
        from torchkfp.registry import open_registry

        registry = open_registry(cfg.deploy, cfg.vertex)
        result = registry.publish(_abs(model)).to_dict()
    _emit({"stage": "deploy", "deployed": True, **result})


def register(app: typer.Typer) -> None:
    app.add_typer(component_app, name="component")
