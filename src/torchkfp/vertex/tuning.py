"""The search of ``torchkfp tune`` as a Vertex AI hyperparameter tuning job (``torchkfp tune
--vertex``), through the aiplatform SDK.

The job's trials are custom jobs of one replica in the training image, each running
:mod:`torchkfp.vertex.tune_trial` on the features, transform and dataset of an earlier Vertex
pipeline run (gs:// folders, read through the job's GCS FUSE mount): Vertex passes the drawn
values as ``--<train setting>=<value>`` arguments, the trial trains with them, scores the model
on the validation split and reports the metric the ``cloudml-hypertune`` way (a JSON line in
``/tmp/hypertune/output.metrics``, :func:`torchkfp.tuning.report_hypertune_metric`). The search
space is the one of the local search (``tune.space``): ranges become double or integer
parameters (``scale`` log or linear), numeric choices discrete parameters, other choices
categorical ones (a list such as ``hidden_sizes`` travels as its JSON text).

``torchkfp tune --vertex --wait`` submits the job and then reads it back the same way.
``torchkfp tune --vertex-result JOB`` reads a job back (:func:`tuning_job_result`): it waits
for the job to end if asked, picks the best SUCCEEDED trial by the study's metric and goal,
and decodes its values with :func:`decode_parameter` (the inverse of :func:`parameter_specs`)
into ``train`` settings, with ``train.tuning`` = ``<job resource name>#trial-<id>``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torchkfp.config import Config, ConfigError
from torchkfp.config.tune import ParamSpec, TuneConfig, _is_int
from torchkfp.vertex.runs import SubmitError

TRIAL_MODULE = "torchkfp.vertex.tune_trial"


def parameter_specs(space: dict[str, ParamSpec], epochs_cap: int | None) -> dict[str, Any]:
    """The search space as the SDK's parameter specs."""
    from google.cloud.aiplatform import hyperparameter_tuning as hpt

    specs: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.choices is not None:
            numeric = all(
                isinstance(c, int | float) and not isinstance(c, bool) for c in spec.choices
            )
            if numeric:
                specs[name] = hpt.DiscreteParameterSpec(
                    values=sorted(float(c) for c in spec.choices), scale="linear"
                )
            else:
                specs[name] = hpt.CategoricalParameterSpec(
                    values=[c if isinstance(c, str) else json.dumps(c) for c in spec.choices]
                )
            continue
        scale = "log" if spec.log else "linear"
        assert spec.low is not None and spec.high is not None
        if _is_int(name):
            hi = int(spec.high)
            if name == "epochs" and epochs_cap is not None:
                hi = max(int(spec.low), min(hi, epochs_cap))
            specs[name] = hpt.IntegerParameterSpec(min=int(spec.low), max=hi, scale=scale)
        else:
            specs[name] = hpt.DoubleParameterSpec(min=spec.low, max=spec.high, scale=scale)
    return specs


def _check(cfg: Config, inputs: dict[str, str]) -> str:
    """ConfigError naming what a tuning job lacks; returns the training image."""
    from torchkfp.images import effective_image, image_problem

    v = cfg.vertex
    if not v.project:
        raise ConfigError("vertex.project is empty: a tuning job needs the project to run in")
    if not v.pipeline_root:
        raise ConfigError(
            "vertex.pipeline_root is empty: the tuning job writes its trials' models under it"
        )
    for name, uri in inputs.items():
        if not str(uri).startswith("gs://"):
            raise ConfigError(
                f"--{name}={uri!r}: a Vertex tuning job reads gs:// folders (the {name} output "
                "of a Vertex pipeline run)"
            )
    image = effective_image(cfg, "training")
    problem = image_problem(image, "training", v.project)
    if problem:
        raise ConfigError(problem)
    assert image is not None
    return image


def build_tuning_job(
    cfg: Config, tcfg: TuneConfig, inputs: dict[str, str], metric: str, higher: bool
) -> Any:
    """The SDK's HyperparameterTuningJob (not yet sent). ``inputs``: gs:// ``features``,
    ``transform`` and ``dataset`` folders."""
    from google.cloud import aiplatform

    from torchkfp.artifacts import gcs_to_fuse

    image = _check(cfg, inputs)
    v = cfg.vertex
    epochs = tcfg.epochs or cfg.train.epochs
    base = {**cfg.train.to_dict(), "epochs": epochs}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    root = str(v.pipeline_root).rstrip("/")
    machine: dict[str, Any] = {"machine_type": v.machine_type}
    if v.accelerator_type and v.accelerator_count:
        machine |= {
            "accelerator_type": v.accelerator_type,
            "accelerator_count": v.accelerator_count,
        }
    args = [
        f"--features={gcs_to_fuse(inputs['features'])}",
        f"--transform={gcs_to_fuse(inputs['transform'])}",
        f"--dataset={gcs_to_fuse(inputs['dataset'])}",
        f"--metric={metric}",
        f"--threshold={cfg.evaluate.threshold}",
        f"--train-settings={json.dumps(base, sort_keys=True)}",
    ]
    common = {
        "project": v.project,
        "location": v.region,
        "labels": dict(v.labels) or None,
        "encryption_spec_key_name": v.encryption_key,
    }
    custom = aiplatform.CustomJob(
        display_name=f"{cfg.run.pipeline_name}-tune-trial",
        worker_pool_specs=[
            {
                "machine_spec": machine,
                "replica_count": 1,
                "container_spec": {
                    "image_uri": image,
                    "command": ["python", "-m", TRIAL_MODULE],
                    "args": args,
                },
            }
        ],
        base_output_dir=f"{root}/tuning/{stamp}",
        staging_bucket=f"{root}/staging",
        **common,
    )
    job = aiplatform.HyperparameterTuningJob(
        display_name=f"{cfg.run.pipeline_name}-tune-{stamp}",
        custom_job=custom,
        metric_spec={metric: "maximize" if higher else "minimize"},
        parameter_spec=parameter_specs(tcfg.search_space(), tcfg.epochs),
        max_trial_count=tcfg.n_trials,
        parallel_trial_count=tcfg.parallel_trials,
        max_failed_trial_count=0,
        **common,
    )
    spec = job._gca_resource.trial_job_spec  # what run() sets, without waiting for the job
    if v.service_account:
        spec.service_account = v.service_account
    if v.network:
        spec.network = v.network
    return job


def job_request(job: Any) -> dict[str, Any]:
    """The HyperparameterTuningJob resource as the REST request body (camelCase JSON)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(job._gca_resource._pb)


def submit_tuning_job(
    cfg: Config,
    tcfg: TuneConfig,
    inputs: dict[str, str],
    metric: str,
    higher: bool,
    *,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Create the tuning job (``dry_run``: only build it) and return ``{"request": ...}`` plus,
    when sent, the job's ``name`` and ``state``. The job runs on; follow it in the console."""
    from torchkfp.vertex.runs import api_error

    job = build_tuning_job(cfg, tcfg, inputs, metric, higher)
    out: dict[str, Any] = {"request": job_request(job), "dry_run": dry_run}
    if dry_run:
        return out
    try:
        created = job.api_client.create_hyperparameter_tuning_job(
            parent=job._parent, hyperparameter_tuning_job=job._gca_resource
        )
    except Exception as e:
        raise api_error("creating the hyperparameter tuning job", e) from None
    out["name"] = created.name
    out["state"] = created.state.name
    return out


# ---- reading a finished job back ------------------------------------------------------------
JOB_NAME = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
    r"hyperparameterTuningJobs/(?P<id>[^/]+)$"
)
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_RUNNING = {
    "JOB_STATE_UNSPECIFIED",
    "JOB_STATE_QUEUED",
    "JOB_STATE_PENDING",
    "JOB_STATE_RUNNING",
    "JOB_STATE_CANCELLING",
    "JOB_STATE_PAUSED",
    "JOB_STATE_UPDATING",
}
"""States of a tuning job that has not ended (``--wait`` keeps polling)."""
FLOAT_TOLERANCE = 1e-9
"""Relative slack when checking a drawn double against the configured range (the API sends
doubles as JSON numbers)."""


class TuningResultError(SubmitError):
    """A tuning job that cannot give a best trial: not found, not finished, failed, no
    succeeded trial, or trials drawn from another search space."""


class TuningJobStillRunning(TuningResultError):
    """The job has not ended: read without waiting, or still running at the end of the wait
    (``timeout`` set). It keeps running on Vertex AI; read it again later."""

    def __init__(self, message: str, job: str, state: str, timeout: float | None) -> None:
        super().__init__(message)
        self.job, self.state, self.timeout = job, state, timeout


@dataclass
class TrialOutcome:
    """One trial of a Vertex AI tuning job, as read back."""

    id: str
    state: str
    """Trial.State: ``SUCCEEDED``, ``INFEASIBLE`` (the trial failed), ``ACTIVE``..."""
    value: float | None
    """The study metric's final measurement (None when the trial reported none)."""
    raw_params: dict[str, Any]
    """Parameter id -> the value as the API returned it (a number or a string)."""
    error: str | None = None
    """``infeasibleReason`` of a failed trial."""


@dataclass
class VertexTuningResult:
    job: str
    """The job's resource name."""
    display_name: str
    state: str
    metric: str
    direction: str
    best_trial: str
    best_value: float
    best_params: dict[str, Any]
    """The best trial's drawn values, decoded into ``train`` settings."""
    best_settings: dict[str, Any]
    """The ``train`` settings to use: ``epochs`` (the trials'), the drawn values and
    ``tuning`` (``<job>#trial-<id>``)."""
    trials: list[TrialOutcome]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_resource_name(job: str, cfg: Config) -> tuple[str, str | None, str | None]:
    """``job`` (an id or a full resource name) as ``(name or id, project, location)`` for the
    SDK's get: a bare id is looked up in ``vertex.project`` / ``vertex.region``. ConfigError for
    anything else."""
    if JOB_NAME.match(job):
        return job, None, None
    if "/" in job or not _JOB_ID.match(job):
        raise ConfigError(
            f"--vertex-result {job!r}: give a hyperparameter tuning job id or its resource name "
            "projects/P/locations/L/hyperparameterTuningJobs/ID (as `torchkfp tune --vertex` "
            "prints it)"
        )
    if not cfg.vertex.project:
        raise ConfigError(
            f"--vertex-result {job!r} is a bare job id: set vertex.project (and vertex.region) "
            "in the config, or pass the full resource name"
        )
    return job, cfg.vertex.project, cfg.vertex.region


def get_tuning_job(job: str, cfg: Config) -> Any:
    """The ``aiplatform.HyperparameterTuningJob`` (one GET); TuningResultError naming the job
    when Vertex AI does not have it, SubmitError for other failed requests."""
    from google.api_core import exceptions as gexc
    from google.cloud import aiplatform

    from torchkfp.vertex.runs import api_error

    name, project, location = job_resource_name(job, cfg)
    where = f" in {project}/{location}" if project else ""
    try:
        return aiplatform.HyperparameterTuningJob.get(name, project=project, location=location)
    except gexc.NotFound as e:
        raise TuningResultError(
            f"hyperparameter tuning job {job!r}{where} not found ({e.message}); check the "
            "name `torchkfp tune --vertex` printed, and vertex.project / vertex.region"
        ) from None
    except Exception as e:
        raise api_error(f"reading hyperparameter tuning job {job!r}{where}", e) from None


def wait_for_tuning_job(
    job: Any,
    *,
    wait: bool,
    poll_interval: float = 60.0,
    timeout: float = 86400.0,
    on_state: Callable[[str], None] | None = None,
) -> str:
    """The job's state once it has ended. Without ``wait`` a job still running is a
    TuningJobStillRunning error; with it, poll every ``poll_interval`` seconds for at most
    ``timeout`` (then TuningJobStillRunning, with ``timeout`` set)."""
    from torchkfp.vertex.runs import api_error

    deadline = time.monotonic() + timeout
    last = None
    while True:
        state = job.gca_resource.state.name
        if state != last and on_state:
            on_state(state)
        last = state
        if state not in _RUNNING:
            return state
        if not wait:
            raise TuningJobStillRunning(
                f"hyperparameter tuning job {job.resource_name} is still {state}: wait for it "
                "(add --wait) or read it again once it has ended",
                job.resource_name,
                state,
                None,
            )
        left = deadline - time.monotonic()
        if left <= 0:
            raise TuningJobStillRunning(
                f"hyperparameter tuning job {job.resource_name} is still {state} after "
                f"{timeout:g}s of --wait; it keeps running (raise --timeout, or read it again "
                "later)",
                job.resource_name,
                state,
                timeout,
            )
        time.sleep(min(poll_interval, left))
        try:
            job._sync_gca_resource()  # a GET of the job
        except Exception as e:
            raise api_error(f"reading the state of {job.resource_name}", e) from None


def decode_parameter(name: str, spec: ParamSpec, value: Any, epochs_cap: int | None = None) -> Any:
    """The ``train`` setting's value for what Vertex AI drew for ``name`` under
    ``parameter_specs(...)[name]``: the inverse of that encoding (discrete numbers back to the
    listed choice, categorical text back to the choice it spells, e.g. ``"[256, 128]"`` to a
    list; integers to int, doubles to float). ValueError when the value cannot come from
    ``spec`` (the job searched another space)."""
    if spec.choices is not None:
        numeric = all(isinstance(c, int | float) and not isinstance(c, bool) for c in spec.choices)
        if numeric:
            if isinstance(value, int | float) and not isinstance(value, bool):
                for c in spec.choices:
                    if float(c) == float(value):
                        return c
        else:
            for c in spec.choices:
                if (c if isinstance(c, str) else json.dumps(c)) == value:
                    return c
        raise ValueError(f"{value!r} is not one of the configured choices {spec.choices}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number, but tune.space.{name} is a range")
    assert spec.low is not None and spec.high is not None
    low, high = spec.low, spec.high
    if _is_int(name):
        if not float(value).is_integer():
            raise ValueError(f"{value!r} is not a whole number, but train.{name} is an integer")
        number: int | float = int(value)
        high = int(high)
        if name == "epochs" and epochs_cap is not None:
            high = max(int(low), min(high, epochs_cap))
        slack = 0.0
    else:
        number = float(value)
        slack = FLOAT_TOLERANCE * max(abs(low), abs(high), 1e-300)
    if not low - slack <= number <= high + slack:
        raise ValueError(f"{value!r} is outside the configured range [{low:g}, {high:g}]")
    return number


def _trial_base_settings(gca_job: Any) -> dict[str, Any] | None:
    """The ``--train-settings`` JSON the job's trials trained with (None when the job was not
    made by ``torchkfp tune --vertex``)."""
    for pool in gca_job.trial_job_spec.worker_pool_specs:
        for arg in pool.container_spec.args:
            if arg.startswith("--train-settings="):
                try:
                    settings = json.loads(arg.partition("=")[2])
                except ValueError:
                    return None
                return settings if isinstance(settings, dict) else None
    return None


def _trial_outcomes(gca_job: Any, metric: str) -> list[TrialOutcome]:
    out = []
    for t in gca_job.trials:
        value = None
        for m in t.final_measurement.metrics:
            if m.metric_id == metric:
                value = float(m.value)
        out.append(
            TrialOutcome(
                id=t.id,
                state=t.state.name,
                value=value,
                raw_params={p.parameter_id: p.value for p in t.parameters},
                error=t.infeasible_reason or None,
            )
        )
    return out


def _trial_key(t: TrialOutcome) -> tuple[int, str]:
    return (int(t.id), "") if t.id.isdigit() else (1 << 62, t.id)


def tuning_job_result(
    cfg: Config,
    tcfg: TuneConfig,
    job: str,
    *,
    wait: bool = False,
    poll_interval: float = 60.0,
    timeout: float = 86400.0,
    on_state: Callable[[str], None] | None = None,
) -> VertexTuningResult:
    """Read a Vertex AI hyperparameter tuning job back through the SDK (``job``: its id or
    resource name): wait for it to end if ``wait``, pick the best SUCCEEDED trial by the
    study's metric and goal, and decode its values with ``tcfg``'s search space (the space
    :func:`parameter_specs` encoded). TuningResultError (naming the job) when the job is not
    found, has not ended (without ``wait``), failed or was cancelled, has no succeeded trial
    with the metric, or a value is not from the configured space."""
    from torchkfp.config import TrainConfig
    from torchkfp.tuning import TUNING_FIELD, best_train_settings, resolve_metric

    sdk_job = get_tuning_job(job, cfg)
    state = wait_for_tuning_job(
        sdk_job, wait=wait, poll_interval=poll_interval, timeout=timeout, on_state=on_state
    )
    gca = sdk_job.gca_resource
    name = gca.name
    if state != "JOB_STATE_SUCCEEDED":
        detail = gca.error.message if gca.error and gca.error.message else ""
        done = sum(t.state.name == "SUCCEEDED" for t in gca.trials)
        raise TuningResultError(
            f"hyperparameter tuning job {name} ended {state}"
            + (f": {detail}" if detail else "")
            + f" ({done} of {len(gca.trials)} trial(s) succeeded); it has no result to apply: "
            "fix the cause (the trials' logs are in the console) and submit the search again"
        )
    metrics = list(gca.study_spec.metrics)
    if not metrics:
        raise TuningResultError(f"hyperparameter tuning job {name} has no metric in its study")
    notes: list[str] = []
    try:
        gate_metric, _ = resolve_metric(tcfg, cfg.evaluate, cfg.data.task)
    except ConfigError:
        gate_metric = None
    spec = metrics[0]
    if len(metrics) > 1:
        spec = next((m for m in metrics if m.metric_id == gate_metric), None)
        if spec is None:
            raise TuningResultError(
                f"hyperparameter tuning job {name} optimizes "
                f"{[m.metric_id for m in metrics]}, none of them the gate metric {gate_metric!r}"
            )
    metric = spec.metric_id
    goal = spec.goal.name
    if goal not in ("MAXIMIZE", "MINIMIZE"):
        raise TuningResultError(
            f"hyperparameter tuning job {name}: metric {metric!r} has goal {goal}, "
            "neither MAXIMIZE nor MINIMIZE"
        )
    higher = goal == "MAXIMIZE"
    if gate_metric is not None and gate_metric != metric:
        notes.append(f"the job optimized {metric!r}; this config's gate metric is {gate_metric!r}")
    trials = sorted(_trial_outcomes(gca, metric), key=_trial_key)
    done = [t for t in trials if t.state == "SUCCEEDED" and t.value is not None]
    unmeasured = [t.id for t in trials if t.state == "SUCCEEDED" and t.value is None]
    if unmeasured:
        notes.append(f"succeeded trial(s) {unmeasured} reported no {metric!r}: left out")
    if not done:
        states = ", ".join(f"trial {t.id}: {t.state}" for t in trials) or "no trials"
        first = next((t.error for t in trials if t.error), None)
        raise TuningResultError(
            f"hyperparameter tuning job {name} has no SUCCEEDED trial with a final {metric!r} "
            f"({states})" + (f"; the first failure: {first}" if first else "")
        )
    best = max(done, key=lambda t: (t.value if higher else -t.value, -_trial_key(t)[0]))
    assert best.value is not None

    space = tcfg.search_space()
    base = _trial_base_settings(gca)
    epochs_cap = tcfg.epochs
    if base is not None and isinstance(base.get("epochs"), int):
        epochs_cap = base["epochs"]
    params: dict[str, Any] = {}
    for pid, raw in best.raw_params.items():
        if pid not in space:
            raise TuningResultError(
                f"hyperparameter tuning job {name}, trial {best.id}: parameter {pid!r} is not "
                f"in this config's search space {sorted(space)}; read the job with the config "
                "it was submitted with (its tune.space)"
            )
        try:
            params[pid] = decode_parameter(pid, space[pid], raw, epochs_cap)
        except ValueError as e:
            raise TuningResultError(
                f"hyperparameter tuning job {name}, trial {best.id}: parameter {pid!r}={raw!r}: "
                f"{e} of tune.space.{pid}; read the job with the config it was submitted with"
            ) from None
    missing = sorted(set(space) - set(params))
    if missing:
        notes.append(
            f"the job did not search {missing} (in this config's space): their train values "
            "stay as configured"
        )
    if base is not None:
        epochs = int(base.get("epochs", cfg.train.epochs))
        own = cfg.train.to_dict()
        differ = sorted(
            k
            for k, v in base.items()
            if k not in params and k not in ("epochs", TUNING_FIELD) and own.get(k, v) != v
        )
        if differ:
            notes.append(
                f"the trials trained with other train settings than this config's {differ} "
                "(the job's values: "
                + ", ".join(f"{k}={base[k]!r}" for k in differ)
                + "): training these settings with this config may not reproduce the trial"
            )
    else:
        epochs = tcfg.epochs or cfg.train.epochs
        notes.append(
            "the job's trials carry no --train-settings (not made by `torchkfp tune --vertex`): "
            f"epochs taken from this config ({epochs})"
        )
    settings = best_train_settings(params, params.get("epochs", epochs))
    try:
        TrainConfig.from_dict({**cfg.train.to_dict(), **settings})
    except ValueError as e:  # ConfigError is one
        raise TuningResultError(
            f"hyperparameter tuning job {name}, trial {best.id}: its settings are not a valid "
            f"train config: {e}"
        ) from None
    if TUNING_FIELD in TrainConfig.model_fields:
        settings[TUNING_FIELD] = f"{name}#trial-{best.id}"
    return VertexTuningResult(
        job=name,
        display_name=gca.display_name,
        state=state,
        metric=metric,
        direction="maximize" if higher else "minimize",
        best_trial=best.id,
        best_value=best.value,
        best_params=params,
        best_settings=settings,
        trials=trials,
        notes=notes,
    )
