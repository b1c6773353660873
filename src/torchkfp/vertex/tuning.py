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
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from torchkfp.config import Config, ConfigError
from torchkfp.config.tune import ParamSpec, TuneConfig, _is_int

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
