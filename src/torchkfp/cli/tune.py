"""``torchkfp tune``: a hyperparameter search over the ``train`` settings (Optuna, locally), on
the preprocessed features of the latest local run (or of given folders), scored on the
validation split with the gate's metric. See :mod:`torchkfp.tuning`. ``--vertex`` submits the
search as a Vertex AI tuning job (``--wait``: and follows it to the end, as ``--vertex-result
JOB --wait`` does), ``--vertex-result JOB`` reads its best trial back
(:mod:`torchkfp.vertex.tuning`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import typer

from torchkfp.cli.options import (
    ConfigOpt,
    DryRunOpt,
    SetOpt,
    fail,
    load_config,
    load_vertex_config,
    stdout_to_stderr,
)

RUN_OUTPUTS = {
    "dataset": "ingest/dataset",
    "features": "preprocess/features",
    "transform": "preprocess/transform",
}
"""Where a local run (kfp.local) keeps the stage outputs tuning needs, under its run folder."""


def _complete(folder: Path) -> dict[str, str] | None:
    """The run's stage outputs when all three are complete artifacts, else None."""
    from torchkfp import artifacts

    kinds = {"dataset": "dataset", "features": "features", "transform": "transform"}
    found = {}
    for name, rel in RUN_OUTPUTS.items():
        p = folder / rel
        try:
            artifacts.require(p, kinds[name])
        except Exception:
            return None
        found[name] = str(p)
    return found


def find_run_inputs(pipeline_root: str | os.PathLike, run: str | None = None) -> dict[str, str]:
    """The dataset, features and transform of ``run`` (a run folder, its kfp run folder, or a
    run id under ``pipeline_root``), or of the newest local run that has them all. ValueError
    naming what was looked at when there is none."""
    root = Path(pipeline_root)
    if run is not None:
        given = Path(run) if Path(run).is_dir() else root / run
        if not given.is_dir():
            raise ValueError(f"--run {run!r} is neither a folder nor a run id under {str(root)!r}")
        for folder in [given, *sorted(p.parent for p in given.glob("*/run_summary.json"))]:
            found = _complete(folder)
            if found:
                return found
        raise ValueError(
            f"run {str(given)!r} has no complete {', '.join(RUN_OUTPUTS.values())}: it may "
            "have failed before preprocess"
        )
    summaries = sorted(
        root.glob("run-*/*/run_summary.json"),
        key=lambda p: (p.parent.parent.name[:19], p.stat().st_mtime),
        reverse=True,
    )
    for summary in summaries:
        found = _complete(summary.parent)
        if found:
            return found
    raise ValueError(f"no local run under {str(root)!r} has complete preprocess outputs")


def _prepare_inputs(cfg: Any, folder: Path) -> dict[str, str]:
    """Run ingest and preprocess (the library calls) into ``folder``."""
    from torchkfp.ingest import ingest
    from torchkfp.preprocess import preprocess

    ingest(cfg.warehouse, cfg.data, cfg.split, folder / "dataset")
    preprocess(
        cfg.data, cfg.preprocess, folder / "dataset", folder / "transform", folder / "features"
    )
    return {k: str(folder / k) for k in ("dataset", "features", "transform")}


def tune_cmd(
    config: str = ConfigOpt,
    set_: list[str] = SetOpt,
    trials: int = typer.Option(None, "--trials", min=1, help="Trials (default: tune.n_trials)."),
    parallel: int = typer.Option(
        None,
        "--parallel",
        min=1,
        help="Trials at once (default: tune.parallel_trials; capped at the CPU cores).",
    ),
    epochs: int = typer.Option(
        None, "--epochs", min=1, help="Each trial's epochs (default: tune.epochs, train.epochs)."
    ),
    run: str = typer.Option(
        None,
        "--run",
        help="Tune on this local run's dataset and features (a run folder or id; default: "
        "the latest run under run.pipeline_root that has them).",
    ),
    features: str = typer.Option(
        None,
        "--features",
        help="Features folder (with --transform and --dataset, instead of a run).",
    ),
    transform: str = typer.Option(None, "--transform", help="Transform folder."),
    dataset: str = typer.Option(None, "--dataset", help="Dataset folder (its validation rows)."),
    out: str = typer.Option(
        None,
        "--out",
        "-o",
        help="Study summary JSON to write (default: <run.pipeline_root>/tune-<UTC time>/"
        "study.json); the best settings go next to it (<stem>.best.yaml), with the best "
        "trial's model (<stem>.best-model).",
    ),
    vertex: bool = typer.Option(
        False,
        "--vertex",
        help="Submit the search as a Vertex AI hyperparameter tuning job instead (config: "
        "the Vertex config; --features/--transform/--dataset: gs:// folders of a Vertex run).",
    ),
    dry_run: bool = DryRunOpt,
    apply: str = typer.Option(
        None,
        "--apply",
        help="Also write this config file: the loaded config with the best train settings "
        "(`torchkfp run -c FILE` trains with them). With --vertex: needs --wait.",
    ),
    vertex_result: str = typer.Option(
        None,
        "--vertex-result",
        metavar="JOB",
        help="Read a Vertex AI tuning job back instead of searching (JOB: its id or resource "
        "name, as `tune --vertex` prints it): the best SUCCEEDED trial's settings, with "
        "--apply written into a config (config: the one the job was submitted with).",
    ),
    wait: bool = typer.Option(
        False,
        "--wait",
        help="--vertex: submit, then follow the job to its end and read its best trial back "
        "(as --vertex-result JOB --wait). --vertex-result: wait for the job to end (else exit "
        "1 if it runs).",
    ),
    poll_interval: float = typer.Option(
        60.0, "--poll-interval", min=0.0, help="--wait: seconds between state checks."
    ),
    timeout: float = typer.Option(
        86400.0,
        "--timeout",
        min=0.0,
        help="--wait: give up (exit 1) after this many seconds; the job keeps running.",
    ),
) -> None:
    """Search train settings (Optuna TPE, seeded) for the best validation metric of the gate.

    Prints one JSON line (best params and value, trials, seconds, files).

    Examples:\n
      torchkfp tune --trials 6 --parallel 2 --epochs 3\n
      torchkfp tune --run .runs/run-20261127-231140-6eccba --apply configs/tuned.yaml\n
      torchkfp run -c configs/tuned.yaml\n
      torchkfp tune --vertex -c configs/vertex.yaml --features gs://F --transform gs://T
      --dataset gs://D --wait --apply tuned.yaml\n
      torchkfp tune --vertex-result JOB -c configs/vertex.yaml --wait --apply tuned.yaml
    """
    from torchkfp.config import ConfigError
    from torchkfp.config.tune import TuneConfig
    from torchkfp.errors import USER_ERRORS

    if vertex_result is not None:
        extra = {
            "--vertex": vertex,
            "--dry-run": dry_run,
            "--trials": trials is not None,
            "--parallel": parallel is not None,
            "--epochs": epochs is not None,
            "--run": run is not None,
            "--features": features is not None,
            "--transform": transform is not None,
            "--dataset": dataset is not None,
            "--out": out is not None,
        }
        given_extra = [k for k, v in extra.items() if v]
        if given_extra:
            fail(
                f"--vertex-result reads a finished job: {', '.join(given_extra)} do(es) not go "
                "with it (the job's trials, space and inputs are already fixed)"
            )
        cfg = load_vertex_config(config, set_)
        _vertex_result(cfg, vertex_result, wait, poll_interval, timeout, apply)
        return
    if wait and not vertex:
        fail(
            "--wait goes with --vertex (submit the search and follow it to its end) or with "
            "--vertex-result JOB (follow a submitted job); a local search always runs to its end"
        )
    if vertex and dry_run and (wait or apply):
        flags = " and ".join(f for f, on in (("--wait", wait), ("--apply", apply)) if on)
        fail(
            "--dry-run sends nothing, so there is no job to follow (--wait) or to take the best "
            f"trial of (--apply): drop {flags} to see the request that would be sent, or drop "
            "--dry-run to submit the job"
        )
    if vertex and apply and not wait:
        fail(
            f"--apply {apply} with --vertex needs --wait: a job's best trial can only be applied "
            "once the job has ended; add --wait (submit, follow the job to its end, then write "
            "the config), or apply it later with `torchkfp tune --vertex-result JOB -c CONFIG "
            f"--wait --apply {apply}`"
        )
    if vertex and apply and Path(apply).is_dir():
        fail(f"--apply {apply} is a folder: give the config file to write")
    cfg = load_vertex_config(config, set_) if vertex else load_config(config, set_)
    tcfg = getattr(cfg, "tune", None) or TuneConfig()
    updates = {"n_trials": trials, "parallel_trials": parallel, "epochs": epochs}
    try:
        tcfg = TuneConfig.from_dict(
            {**tcfg.to_dict(), **{k: v for k, v in updates.items() if v is not None}}
        )
    except ConfigError as e:
        fail(str(e))
    given = [features, transform, dataset]
    if any(given) and not all(given):
        fail("--features, --transform and --dataset go together: give all three (or --run)")
    if all(given) and run:
        fail("--run and --features/--transform/--dataset exclude each other; pass one")
    if vertex:
        if not all(given):
            fail(
                "--vertex needs --features, --transform and --dataset (gs:// folders of a "
                "Vertex run)"
            )
        sent = _vertex(
            cfg, tcfg, {"features": features, "transform": transform, "dataset": dataset}, dry_run
        )
        if not wait:
            typer.echo(json.dumps(sent, default=str))
            return
        job = sent["name"]
        resume = resume_command(job, config, set_, apply)
        typer.echo(
            f"submitted hyperparameter tuning job {job} ({sent['state']}); following it to its "
            "end (Ctrl-C or --timeout stops the following, not the job; pick it up later "
            f"with: {resume})",
            err=True,
        )
        _vertex_result(cfg, job, True, poll_interval, timeout, apply, resume=resume)
        return
    if dry_run:
        fail("--dry-run goes with --vertex (a local search has nothing to send)")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out_p = Path(out or Path(cfg.run.pipeline_root) / f"tune-{stamp}" / "study.json").resolve()
    source = "given folders"
    if all(given):
        inputs = {"features": features, "transform": transform, "dataset": dataset}
    else:
        try:
            inputs = find_run_inputs(cfg.run.pipeline_root, run)
            source = f"local run {Path(inputs['features']).parents[1]}"
        except ValueError as e:
            if run:
                fail(str(e))
            source = f"ingest + preprocess into {out_p.parent / 'inputs'} ({e})"
            print(f"[tune] {source}", file=sys.stderr, flush=True)
            inputs = {}
    try:
        with stdout_to_stderr():
            from torchkfp.tuning import tune

            if not inputs:
                inputs = _prepare_inputs(cfg, out_p.parent / "inputs")
            r = tune(
                cfg.train,
                cfg.evaluate,
                tcfg,
                inputs["features"],
                inputs["transform"],
                inputs["dataset"],
                out_p,
            )
            applied = None
            if apply:
                applied = write_applied(cfg, r.best_settings, Path(apply))
    except ConfigError as e:
        fail(f"tune: {e}", 2)
    except USER_ERRORS as e:
        fail(f"tune: {e}", 1)
    except OSError as e:
        fail(f"tune: {type(e).__name__}: {e.strerror or e} ({e.filename})", 1)
    result = {
        "metric": r.metric,
        "direction": r.direction,
        "best_value": r.best_value,
        "best_trial": r.best_trial,
        "best_params": r.best_params,
        "set": r.set_args,
        "trials": len(r.trials),
        "completed": sum(t.state == "COMPLETE" for t in r.trials),
        "parallel": r.parallel,
        "seconds": r.seconds,
        "inputs": source,
        "study": r.summary_path,
        "best_settings": r.best_settings_path,
        "best_model": r.best_model,
        "applied_config": applied,
        "notes": r.notes,
    }
    typer.echo(json.dumps(result, default=str))


def _vertex(cfg: Any, tcfg: Any, inputs: dict[str, str], dry_run: bool) -> dict[str, Any]:
    """Build (and unless ``dry_run``, create) the Vertex AI tuning job; returns what
    ``tune --vertex`` prints (``metric``, ``direction``, ``request``, ``dry_run``; once sent,
    the job's ``name`` and ``state``)."""
    from torchkfp.cli._vertex import call
    from torchkfp.config import ConfigError
    from torchkfp.tuning import resolve_metric

    try:
        metric, higher = resolve_metric(tcfg, cfg.evaluate, cfg.data.task)
    except ConfigError as e:
        fail(str(e))

    def submit() -> dict[str, Any]:
        from google.cloud import aiplatform

        from torchkfp.vertex.tuning import submit_tuning_job

        if dry_run:  # nothing is sent: never reach for real credentials
            from google.auth.credentials import AnonymousCredentials

            aiplatform.init(credentials=AnonymousCredentials())
        return submit_tuning_job(cfg, tcfg, inputs, metric, higher, dry_run=dry_run)

    out = call(submit)
    return {"metric": metric, "direction": "maximize" if higher else "minimize", **out}


def resume_command(job: str, config: str | None, sets: list[str] | None, apply: str | None) -> str:
    """The shell command that follows ``job`` with the same config (``-c``, ``--set``) and
    ``--apply`` as the ``tune --vertex --wait`` that submitted it."""
    args = ["torchkfp", "tune", "--vertex-result", job]
    if config:
        args += ["-c", config]
    for s in sets or []:
        args += ["--set", s]
    args.append("--wait")
    if apply:
        args += ["--apply", apply]
    return shlex.join(args)


def _vertex_result(
    cfg: Any,
    job: str,
    wait: bool,
    poll_interval: float,
    timeout: float,
    apply: str | None,
    resume: str | None = None,
) -> None:
    """Read a Vertex AI tuning job back (waiting if asked), write the applied config when
    ``apply``; print one JSON line. ``resume`` (``tune --vertex --wait``, which just submitted
    the job): the command that picks the job up again, told when the wait times out or is
    interrupted."""
    from torchkfp.cli._vertex import call
    from torchkfp.config import ConfigError
    from torchkfp.config.tune import TuneConfig
    from torchkfp.tuning import set_args

    tcfg = getattr(cfg, "tune", None) or TuneConfig()
    unwritten = f", nothing written to {apply}" if apply else ""

    def show(state: str) -> None:
        typer.echo(f"state: {state}", err=True)

    def read() -> Any:
        from torchkfp.vertex.tuning import (
            TuningJobStillRunning,
            TuningResultError,
            tuning_job_result,
        )

        try:
            return tuning_job_result(
                cfg,
                tcfg,
                job,
                wait=wait,
                poll_interval=poll_interval,
                timeout=timeout,
                on_state=show,
            )
        except TuningJobStillRunning as e:
            if resume is None or e.timeout is None:
                raise
            raise TuningResultError(
                f"hyperparameter tuning job {e.job} is still {e.state} after {e.timeout:g}s "
                f"of --wait (--timeout); it keeps running on Vertex AI{unwritten}: pick it up "
                f"later with `{resume}`"
            ) from None

    try:
        r = call(read)
    except KeyboardInterrupt:
        if resume is None:
            raise
        fail(
            f"interrupted: stopped following hyperparameter tuning job {job}; it keeps "
            f"running on Vertex AI{unwritten}: pick it up later with `{resume}`",
            130,
        )
    applied = None
    if apply:
        try:
            applied = write_applied(cfg, r.best_settings, Path(apply))
        except ConfigError as e:
            fail(f"tune --vertex-result {r.job}: {e}", 2)
        except OSError as e:
            fail(f"tune --vertex-result: writing {apply}: {e.strerror or e}", 1)
    result = {
        "job": r.job,
        "display_name": r.display_name,
        "state": r.state,
        "metric": r.metric,
        "direction": r.direction,
        "best_trial": r.best_trial,
        "best_value": r.best_value,
        "best_params": r.best_params,
        "best_settings": r.best_settings,
        "set": set_args(r.best_settings),
        "trials": [
            {"id": t.id, "state": t.state, "value": t.value}
            | ({"error": t.error} if t.error else {})
            for t in r.trials
        ],
        "succeeded": sum(t.state == "SUCCEEDED" for t in r.trials),
        "applied_config": applied,
        "notes": r.notes,
    }
    typer.echo(json.dumps(result, default=str))


def write_applied(cfg: Any, settings: dict[str, Any], path: Path) -> str:
    """Write ``cfg`` with the best train settings as a YAML config; returns its path."""
    import yaml

    new = cfg.override({f"train.{k}": v for k, v in settings.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(new.to_dict(), sort_keys=False))
    os.replace(tmp, path)
    return str(path.resolve())


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_cmd)
