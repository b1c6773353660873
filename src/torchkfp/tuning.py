"""Hyperparameter search over ``train`` settings (``torchkfp tune``), locally with Optuna.

Each trial draws settings from the search space (``tune.space`` over
:data:`torchkfp.config.tune.DEFAULT_SPACE`) with a seeded TPE sampler, trains with the real
trainer (:func:`torchkfp.training.launch`: one torchrun process group per trial, one process
with one thread, so ``tune.parallel_trials`` trials run at once, capped at the CPU cores), then
scores the trained model on the raw **validation** rows of the dataset with the gate's metric
(``tune.metric``, else ``evaluate.metric``, else the task's default; the model's own transform,
as the evaluate stage scores the test rows: the split streamed shard by shard, never held in
memory, :func:`torchkfp.evaluation.stream_scores`) and optimizes it in its direction. The test
split is never looked at.

Outputs: the study summary (JSON: every trial's parameters, value, state, seconds and start
and end times; the best trial), the best settings as a YAML ``train:`` snippet (load it with
``-c`` or pass the ``--set`` list of the summary), and the best trial's model folder. The other
trials' models are temporary and deleted.

Pruning (Optuna's MedianPruner) is not offered: a trial is one training subprocess that reports
only when it ends, so there is nothing to prune on mid-trial; the trainer's early stopping on
the validation loss (``train.patience``) cuts each trial short instead.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torchkfp import artifacts, metrics
from torchkfp.artifacts import features as features_artifact
from torchkfp.config import ConfigError, EvaluateConfig, TrainConfig
from torchkfp.config.tune import ParamSpec, TuneConfig, _is_int
from torchkfp.errors import ArtifactError, TrainingError

SUMMARY_VERSION = 1
TRIAL_SETTINGS = {"nproc_per_node": 1, "threads_per_process": 1}
"""Every trial trains as one process with one thread (``parallel_trials`` of them at once)."""
TUNING_FIELD = "tuning"
"""The ``train`` setting naming the study a model's settings came from (recorded in the model
metadata with the rest of the train settings), where the config has it."""


@dataclass
class TrialRecord:
    number: int
    state: str
    """``COMPLETE``, ``FAIL`` (training failed, or the metric is not a finite number)."""
    params: dict[str, Any]
    """The drawn values of the searched settings."""
    value: float | None
    seconds: float
    started: float
    """Wall-clock start and end (Unix seconds)."""
    ended: float
    error: str | None = None
    epochs_run: int | None = None


@dataclass
class TuneResult:
    metric: str
    direction: str
    """``maximize`` or ``minimize``."""
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    best_settings: dict[str, Any]
    """The ``train`` settings to use: the searched ones plus ``epochs``."""
    set_args: list[str]
    """``--set train.X=Y`` values for the best settings."""
    trials: list[TrialRecord]
    parallel: int
    seconds: float
    summary_path: str
    best_settings_path: str
    best_model: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- metric and search space -------------------------------------------------------------------
def resolve_metric(tune: TuneConfig, ec: EvaluateConfig, task: str) -> tuple[str, bool]:
    """The metric to optimize (``tune.metric``, ``evaluate.metric``, the task's default) and
    whether higher is better; ConfigError when it is not a metric of this task."""
    metric = tune.metric or ec.metric or metrics.DEFAULT_METRIC[task]
    allowed = metrics.TASK_METRICS[task]
    if metric not in allowed:
        where = "tune.metric" if tune.metric else "evaluate.metric"
        raise ConfigError(f"{where}={metric!r} is not a metric of a {task} model; use {allowed}")
    return metric, metric in metrics.HIGHER_IS_BETTER


def _encode_choice(v: Any) -> Any:
    # Optuna's categorical values are scalars: a list (hidden_sizes) travels as its JSON text
    return json.dumps(v) if isinstance(v, list) else v


def _decode_choice(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) and v.startswith("[") else v


def suggest(trial: Any, space: dict[str, ParamSpec], epochs_cap: int | None) -> dict[str, Any]:
    """One trial's values of the searched ``train`` settings."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.choices is not None:
            choice = trial.suggest_categorical(name, [_encode_choice(c) for c in spec.choices])
            params[name] = _decode_choice(choice)
        elif _is_int(name):
            hi = int(spec.high)
            if name == "epochs" and epochs_cap is not None:
                hi = max(int(spec.low), min(hi, epochs_cap))
            params[name] = trial.suggest_int(name, int(spec.low), hi, log=spec.log)
        else:
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    return params


def best_train_settings(params: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The ``train`` settings a trial used beyond the base config: its drawn values and its
    epochs."""
    return {"epochs": epochs, **params}


def trial_config(tc: TrainConfig, settings: dict[str, Any]) -> TrainConfig:
    """The train settings of a trial: ``tc`` with ``settings``, one process, one thread."""
    return TrainConfig.from_dict({**tc.to_dict(), **settings, **TRIAL_SETTINGS})


# ---- scoring ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitRows:
    """One split of a Dataset artifact to score on: read shard by shard, chunk by chunk, each
    time a model is scored (:func:`validation_score`), never held in memory."""

    dataset_dir: str
    split: str
    rows: int


def validation_rows(dataset_dir: str | os.PathLike) -> SplitRows:
    """The validation split of a Dataset artifact to score on (its row count from the shards'
    Parquet footers); ArtifactError when it has no rows."""
    from torchkfp.artifacts import dataset as dataset_artifact

    _, rows = dataset_artifact.split_layout(dataset_dir, "validation")
    if rows == 0:
        raise ArtifactError(
            f"dataset {str(dataset_dir)!r} has no validation rows: tuning scores on them; "
            "change the split (split.validation_start / split.validation_fraction)"
        )
    return SplitRows(str(dataset_dir), "validation", rows)


def validation_score(
    model_dir: str | os.PathLike, rows: Any, metric: str, threshold: float = 0.5
) -> float:
    """``metric`` of the model on the raw rows, through its own transform (the evaluate
    stage's computation, on the validation split). ``rows``: a :class:`SplitRows` (streamed:
    :func:`torchkfp.evaluation.stream_scores`) or a DataFrame held in memory; both give the
    same value on the same rows."""
    from torchkfp.evaluation import score, stream_scores
    from torchkfp.predictor import Predictor

    p = Predictor(model_dir)
    if isinstance(rows, SplitRows):
        [scored], _ = stream_scores([p], rows.dataset_dir, rows.split, threshold=threshold)
    else:
        scored = score(p, rows, threshold, "validation")
    assert isinstance(scored, dict)  # the first model's errors are raised
    return float(scored["metrics"][metric])


# ---- the search ----------------------------------------------------------------------------------
def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def settings_yaml(settings: dict[str, Any], header: list[str]) -> str:
    """A config file holding the ``train`` settings, with ``#`` header lines."""
    import yaml

    body = yaml.safe_dump({"train": settings}, sort_keys=False, default_flow_style=None)
    return "".join(f"# {line}\n" for line in header) + body


def set_args(settings: dict[str, Any]) -> list[str]:
    return [f"train.{k}={json.dumps(v)}" for k, v in settings.items()]


def _log(msg: str) -> None:
    print(f"[tune] {msg}", file=sys.stderr, flush=True)


def tune(
    tc: TrainConfig,
    ec: EvaluateConfig,
    tcfg: TuneConfig,
    features_dir: str | os.PathLike,
    transform_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    summary_path: str | os.PathLike,
    *,
    best_settings_path: str | os.PathLike | None = None,
    best_model_dir: str | os.PathLike | None = None,
) -> TuneResult:
    """Run the search (see the module docstring) and write the study summary to
    ``summary_path``, the best settings to ``best_settings_path`` (default: next to it,
    ``<stem>.best.yaml``) and the best trial's model to ``best_model_dir`` (default:
    ``<stem>.best-model``). TrainingError when every trial failed."""
    import optuna

    t0 = time.perf_counter()
    summary_p = Path(summary_path).resolve()
    best_p = Path(best_settings_path or summary_p.with_name(f"{summary_p.stem}.best.yaml"))
    model_p = Path(best_model_dir or summary_p.with_name(f"{summary_p.stem}.best-model"))
    fmeta = artifacts.require(features_dir, features_artifact.KIND)
    task = fmeta["task"]
    metric, higher = resolve_metric(tcfg, ec, task)
    space = tcfg.search_space()
    epochs = tcfg.epochs or tc.epochs
    if "epochs" not in space:
        trial_config(tc, {"epochs": epochs})  # the base settings are valid for a trial
    rows = validation_rows(dataset_dir)
    from torchkfp.training.launcher import available_cores, launch

    cores = available_cores()
    parallel = min(tcfg.parallel_trials, cores, tcfg.n_trials)
    notes = []
    if parallel < tcfg.parallel_trials:
        notes.append(
            f"tune.parallel_trials={tcfg.parallel_trials} capped at {parallel} "
            f"({cores} CPU core(s) available, {tcfg.n_trials} trial(s))"
        )
        _log(notes[-1])
    direction = "maximize" if higher else "minimize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=tcfg.seed, n_startup_trials=tcfg.startup_trials, multivariate=True
    )
    study = optuna.create_study(direction=direction, sampler=sampler)
    summary_p.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{summary_p.stem}-trials-", dir=summary_p.parent))
    records: dict[int, TrialRecord] = {}
    lock = threading.Lock()

    def objective(trial: Any) -> float:
        params = suggest(trial, space, tcfg.epochs)
        settings = best_train_settings(params, params.get("epochs", epochs))
        started = time.time()
        rec = TrialRecord(trial.number, "RUNNING", params, None, 0.0, started, started)
        with lock:
            records[trial.number] = rec
        try:
            cfg = trial_config(tc, settings)
            model = work / f"trial-{trial.number}" / "model"
            r = launch(cfg, features_dir, transform_dir, model, tensorboard=False)
            rec.epochs_run = r.epochs_run
            value = validation_score(model, rows, metric, ec.threshold)
        except (TrainingError, ArtifactError, ConfigError) as e:
            rec.state, rec.error = "FAIL", str(e)[:2000]
            raise
        finally:
            rec.ended = time.time()
            rec.seconds = rec.ended - started
        if not math.isfinite(value):
            rec.state, rec.error = "FAIL", f"validation {metric} is not a finite number"
            raise TrainingError(rec.error)
        rec.state, rec.value = "COMPLETE", value
        _log(
            f"trial {trial.number}: {metric}={value:.6g} in {rec.seconds:.1f}s "
            f"({json.dumps(params)})"
        )
        return value

    try:
        study.optimize(
            objective,
            n_trials=tcfg.n_trials,
            n_jobs=parallel,
            timeout=tcfg.timeout_s,
            catch=(TrainingError, ArtifactError, ConfigError),
        )
        trials = [records[n] for n in sorted(records)]
        done = [t for t in trials if t.state == "COMPLETE"]
        if not done:
            first = next((t.error for t in trials if t.error), "no trial ran")
            raise TrainingError(
                f"every one of {len(trials)} tuning trial(s) failed; the first: {first}"
            )
        pick = max if higher else min
        best = pick(done, key=lambda t: (t.value, -t.number) if higher else (t.value, t.number))
        assert best.value is not None
        settings = best_train_settings(best.params, best.params.get("epochs", epochs))
        if model_p.exists():
            shutil.rmtree(model_p)
        model_p.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work / f"trial-{best.number}" / "model"), model_p)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    recorded = dict(settings)
    if TUNING_FIELD in TrainConfig.model_fields:
        recorded[TUNING_FIELD] = f"{summary_p}#trial-{best.number}"
    result = TuneResult(
        metric=metric,
        direction=direction,
        best_trial=best.number,
        best_value=best.value,
        best_params=best.params,
        best_settings=recorded,
        set_args=set_args(recorded),
        trials=trials,
        parallel=parallel,
        seconds=time.perf_counter() - t0,
        summary_path=str(summary_p),
        best_settings_path=str(best_p.resolve()),
        best_model=str(model_p.resolve()),
        notes=notes,
    )
    header = [
        f"torchkfp tune: trial {best.number} of {len(trials)}, validation {metric}="
        f"{best.value:.6g} ({direction})",
        f"study: {summary_p}",
        "trials trained with train.nproc_per_node=1, train.threads_per_process=1 "
        f"(base train seed {tc.seed}); batch_size is per process, so with",
        "nproc_per_node=N the global batch is N x batch_size",
    ]
    _write_atomic(best_p, settings_yaml(recorded, header))
    summary = {
        "version": SUMMARY_VERSION,
        **result.to_dict(),
        "task": task,
        "space": {k: v.to_dict() for k, v in space.items()},
        "tune": tcfg.to_dict(),
        "base_train": tc.to_dict(),
        "trial_settings": TRIAL_SETTINGS,
        "cores": cores,
        "inputs": {
            "features": str(Path(features_dir).resolve()),
            "transform": str(Path(transform_dir).resolve()),
            "dataset": str(Path(dataset_dir).resolve()),
            "data_fingerprint": fmeta.get("data_fingerprint"),
        },
    }
    _write_atomic(summary_p, json.dumps(summary, indent=2, default=str))
    return result


# ---- Vertex AI trials ---------------------------------------------------------------------------
HYPERTUNE_FILE = "/tmp/hypertune/output.metrics"
"""Where a Vertex AI tuning trial reports its metric (``CLOUD_ML_HP_METRIC_FILE`` overrides
it): the convention of Google's ``cloudml-hypertune`` package, whose file the service reads."""


def report_hypertune_metric(tag: str, value: float, step: int = 0) -> str:
    """Report a trial's metric to Vertex AI hyperparameter tuning, as ``cloudml-hypertune``'s
    ``HyperTune().report_hyperparameter_tuning_metric`` does: one JSON line (``timestamp``,
    ``trial`` from ``CLOUD_ML_TRIAL_ID``, the metric's tag with the value as text,
    ``global_step`` as text) in ``CLOUD_ML_HP_METRIC_FILE`` (default :data:`HYPERTUNE_FILE`).
    Returns the file's path."""
    path = Path(os.environ.get("CLOUD_ML_HP_METRIC_FILE", HYPERTUNE_FILE))
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "timestamp": time.time(),
        "trial": str(os.environ.get("CLOUD_ML_TRIAL_ID", 0)),
        tag: str(float(value)),
        "global_step": str(int(step)),
    }
    with path.open("a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
    return str(path)


def parse_trial_value(name: str, text: str) -> Any:
    """A value Vertex AI passes for a searched setting (``--name=text``) as the ``train``
    setting's type: integers (sent as ``4`` or ``4.0``), numbers, JSON lists (``[128, 64]``),
    else the text. ConfigError for a setting that cannot be tuned."""
    from torchkfp.config.tune import TUNABLE

    if name not in TUNABLE:
        raise ConfigError(f"--{name}: not a tunable train setting; tunable: {list(TUNABLE)}")
    if text.startswith("["):
        return json.loads(text)
    if _is_int(name):
        number = float(text)
        if not number.is_integer():
            raise ConfigError(f"--{name}={text}: train.{name} is an integer")
        return int(number)
    default = TrainConfig.model_fields[name].default
    return float(text) if isinstance(default, float) else text
