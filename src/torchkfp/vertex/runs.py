"""Pipeline runs on Vertex AI Pipelines: submit a compiled pipeline and follow the run.

This is library code: it takes the path of an already compiled pipeline YAML (``torchkfp
submit`` compiles it first) and talks to Vertex AI through the google-cloud-aiplatform SDK only,
imported inside the functions. The config travels as the pipeline's parameters
(:func:`pipeline_parameters`), so a run executes exactly the settings it was submitted with.

Everything that can be checked offline is checked before any request is sent (the config with
:func:`torchkfp.config.validate_for_vertex`, the template, its parameters and the job id), and
a dry run returns the exact request the SDK would send instead of sending it.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torchkfp import stage_settings
from torchkfp.config import Config, ConfigError, validate_for_vertex
from torchkfp.images import image_problem, template_images, with_images
from torchkfp.vertex import API_HOST, CONSOLE, api_error_message, init

_JOB_ID = re.compile(r"^[a-z][-a-z0-9]{0,127}$")
_TERMINAL = ("PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED")


class SubmitError(RuntimeError):
    """Vertex AI refused a request, or a submitted run did not succeed."""


class PipelineRunFailed(SubmitError):
    """The pipeline run ended FAILED or CANCELLED."""

    def __init__(self, message: str, *, state: str, job_name: str, error: str = "") -> None:
        super().__init__(message)
        self.state, self.job_name, self.error = state, job_name, error


@dataclass
class SubmitResult:
    """What ``submit`` did: the request (always), and the job it created (unless a dry run)."""

    request: dict[str, Any]
    """The HTTP request: method, url and JSON body (the body as the SDK serializes it)."""
    dry_run: bool
    job_name: str | None = None
    """Full resource name of the created run (None on a dry run)."""
    state: str | None = None
    """Last state seen (PIPELINE_STATE_...), after waiting if ``wait=True``."""
    dashboard_url: str | None = None
    seconds: float = 0.0
    query_estimate: dict[str, Any] | None = None
    """The BigQuery dry run of the ingest query (:mod:`torchkfp.vertex.estimate`), if made."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def api_error(what: str, e: Exception) -> SubmitError:
    """A SubmitError for a failed SDK call (see :func:`torchkfp.vertex.api_error_message`)."""
    return SubmitError(api_error_message(what, e))


# ---- the template and its parameters ------------------------------------------------------
def pipeline_parameters(cfg: Config) -> dict[str, Any]:
    """The values of the pipeline's input parameters for a run with ``cfg``: one per config
    section (:mod:`torchkfp.stage_settings`), filled from the one config file."""
    return stage_settings.pipeline_parameters(cfg)


def load_template(template_path: str | Path) -> dict[str, Any]:
    """Load a compiled pipeline (PipelineSpec, or a PipelineJob holding one) and return the
    PipelineSpec, or raise ConfigError saying what is wrong with the file."""
    import yaml

    p = Path(template_path)
    if not p.is_file():
        raise ConfigError(
            f"pipeline template {str(p)!r} does not exist; compile it with `torchkfp compile` "
            "(or let `torchkfp submit` compile it)"
        )
    try:
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
    except yaml.YAMLError as e:
        raise ConfigError(f"pipeline template {str(p)!r} is not valid YAML/JSON: {e}") from None
    doc = docs[0] if docs else None
    if isinstance(doc, dict) and isinstance(doc.get("pipelineSpec"), dict):
        doc = doc["pipelineSpec"]
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("pipelineInfo"), dict)
        or not doc["pipelineInfo"].get("name")
        or not isinstance(doc.get("root"), dict)
        or not doc.get("schemaVersion")
    ):
        raise ConfigError(
            f"pipeline template {str(p)!r} is not a compiled KFP pipeline (no pipelineInfo.name, "
            "root or schemaVersion); compile it with `torchkfp compile`"
        )
    return doc


def template_parameters(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pipeline's input parameters: name -> its definition (parameterType, defaultValue)."""
    return dict(((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {})


def check_template_images(spec: dict[str, Any], path: str) -> None:
    """ConfigError if a container image in the compiled pipeline is a placeholder or not an
    image reference (a template compiled without ``vertex.training_image``)."""
    for image in template_images(spec):
        problem = image_problem(image, "training", field=f"the image {image!r} in {path!r}")
        if problem:
            raise ConfigError(
                f"{problem}; compile the pipeline again with vertex.training_image set "
                "(`torchkfp compile --vertex-config ...`, or let `torchkfp submit` compile it)"
            )


def _check_parameters(spec: dict[str, Any], values: dict[str, Any], path: str) -> None:
    params = template_parameters(spec)
    unknown = sorted(set(values) - set(params))
    if unknown:
        raise ConfigError(
            f"parameter(s) {unknown} are not inputs of the pipeline in {path!r}; "
            f"its inputs are {sorted(params)}"
        )
    missing = sorted(
        n
        for n, d in params.items()
        if n not in values and "defaultValue" not in d and not d.get("isOptional")
    )
    if missing:
        raise ConfigError(f"the pipeline in {path!r} needs value(s) for {missing}")


# ---- the job ------------------------------------------------------------------------------
def build_job(
    cfg: Config,
    template_path: str | Path,
    *,
    display_name: str | None = None,
    parameter_values: dict[str, Any] | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    """Validate ``cfg`` and the template offline and return the keyword arguments for
    ``aiplatform.PipelineJob`` (the config goes in as :func:`pipeline_parameters`, with the
    effective images written into its vertex section: :func:`torchkfp.images.with_images`)."""
    cfg = with_images(cfg)
    validate_for_vertex(cfg)
    spec = load_template(template_path)
    check_template_images(spec, str(template_path))
    values = pipeline_parameters(cfg) if parameter_values is None else dict(parameter_values)
    _check_parameters(spec, values, str(template_path))
    name = display_name or spec["pipelineInfo"]["name"]
    if len(name) > 128:
        raise ConfigError(f"display name {name[:40]!r}... is longer than 128 characters")
    if job_id is None:  # the SDK's default (name-timestamp) collides for two runs in a second
        slug = re.sub(r"[^-0-9a-z]+", "-", spec["pipelineInfo"]["name"].lower()).strip("-")
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
        job_id = f"{slug[:100] or 'run'}-{stamp}-{uuid.uuid4().hex[:6]}"
    if not _JOB_ID.match(job_id):
        raise ConfigError(
            f"job id {job_id!r}: use up to 128 lowercase letters, digits and '-', starting "
            "with a letter"
        )
    v = cfg.vertex
    return {
        "display_name": name,
        "template_path": str(template_path),
        "job_id": job_id,
        "pipeline_root": v.pipeline_root,
        "parameter_values": values,
        # True must not reach the SDK: it would switch caching on for every task, also for
        # those the pipeline keeps uncached on purpose (ingest, evaluate, deploy). None keeps
        # the compiled per-task settings; False switches caching off everywhere.
        "enable_caching": None if v.enable_caching else False,
        "labels": dict(v.labels) or None,
        "encryption_spec_key_name": v.encryption_key,
        "project": v.project,
        "location": v.region,
    }


def pipeline_job(cfg: Config, job_args: dict[str, Any], dry_run: bool):
    """An ``aiplatform.PipelineJob`` built from ``job_args`` (nothing is sent yet)."""
    from google.cloud import aiplatform

    try:
        if dry_run:  # never reach for real credentials: nothing will be sent
            from google.auth.credentials import AnonymousCredentials

            return aiplatform.PipelineJob(**job_args, credentials=AnonymousCredentials())
        init(cfg.vertex)
        return aiplatform.PipelineJob(**job_args)
    except ValueError as e:  # the SDK's own checks (labels, display name, job id)
        raise ConfigError(f"Vertex AI SDK rejected the job: {e}") from None
    except Exception as e:
        if type(e).__name__ == "DefaultCredentialsError":
            raise api_error("finding Google Cloud credentials", e) from None
        raise


def _job_request(job, cfg: Config) -> dict[str, Any]:
    """The createPipelineJob request the SDK sends for ``job`` (as PipelineJob.submit fills it)."""
    v = cfg.vertex
    body = job.to_dict()
    if v.service_account:
        body["serviceAccount"] = v.service_account
    if v.network:
        body["network"] = v.network
    parent = f"projects/{v.project}/locations/{v.region}"
    return {
        "method": "POST",
        "url": f"https://{API_HOST.format(region=v.region)}/v1/{parent}/pipelineJobs"
        f"?pipelineJobId={job.job_id}",
        "body": body,
    }


def estimate_ingest_query(cfg: Config, warehouse: Any = None):
    """The BigQuery dry run of the run's ingest query (:mod:`torchkfp.vertex.estimate`),
    checked against ``warehouse.maximum_bytes_billed`` (QueryOverBudget, a ConfigError, when
    over); a failed BigQuery request is a SubmitError saying what was attempted."""
    from torchkfp.vertex.estimate import check_budget, estimate_query

    try:
        est = estimate_query(cfg, warehouse)
    except ConfigError:
        raise
    except Exception as e:
        wc = cfg.warehouse
        what = f"the BigQuery dry run of the ingest query in project {wc.project} ({wc.location})"
        msg = api_error_message(what, e)
        if type(e).__name__ in ("Forbidden", "Unauthorized", "DefaultCredentialsError"):
            msg = msg.replace("Vertex AI", "BigQuery")
        raise SubmitError(msg + " (pass --no-estimate to submit without the estimate)") from None
    return check_budget(est)


# ---- submit and follow --------------------------------------------------------------------
def submit(
    cfg: Config,
    template_path: str | Path,
    *,
    display_name: str | None = None,
    parameter_values: dict[str, Any] | None = None,
    job_id: str | None = None,
    dry_run: bool = False,
    wait: bool = False,
    poll_interval: float = 15.0,
    timeout: float | None = None,
    on_state: Callable[[str], None] | None = None,
    estimate: bool | None = None,
    warehouse: Any = None,
) -> SubmitResult:
    """Submit the compiled pipeline at ``template_path`` as a Vertex AI PipelineJob.

    ``dry_run``: validate, build the request and return it; nothing is sent to Vertex AI.
    ``estimate`` (default: on dry runs): first dry-run the ingest query in BigQuery
    (:func:`estimate_ingest_query`; ``warehouse``: the warehouse to ask, default the config's)
    and refuse a query over ``warehouse.maximum_bytes_billed``. ``wait``: follow the run until
    it ends (``on_state`` hears every state change); raise PipelineRunFailed if it ends FAILED
    or CANCELLED and SubmitError if ``timeout`` seconds pass first.
    """
    t0 = time.perf_counter()
    job_args = build_job(
        cfg,
        template_path,
        display_name=display_name,
        parameter_values=parameter_values,
        job_id=job_id,
    )
    query_estimate = None
    if dry_run if estimate is None else estimate:
        query_estimate = estimate_ingest_query(cfg, warehouse).to_dict()
    job = pipeline_job(cfg, job_args, dry_run)
    request = _job_request(job, cfg)
    if dry_run:
        return SubmitResult(
            request, True, seconds=time.perf_counter() - t0, query_estimate=query_estimate
        )

    v = cfg.vertex
    try:
        job.submit(service_account=v.service_account, network=v.network)
    except Exception as e:
        raise api_error(f"creating the pipeline job in {v.project}/{v.region}", e) from e
    name = job.resource_name
    url = f"{CONSOLE.format(region=v.region)}/runs/{name.rsplit('/', 1)[1]}?project={v.project}"
    state = job.gca_resource.state.name
    result = SubmitResult(
        request, False, name, state, url, time.perf_counter() - t0, query_estimate
    )
    if on_state:
        on_state(state)
    if wait:
        result.state = wait_for(
            job, poll_interval=poll_interval, timeout=timeout, on_state=on_state, last=state
        )
    result.seconds = time.perf_counter() - t0
    return result


def wait_for(
    job,
    *,
    poll_interval: float = 15.0,
    timeout: float | None = None,
    on_state: Callable[[str], None] | None = None,
    last: str | None = None,
) -> str:
    """Poll a submitted ``aiplatform.PipelineJob`` until it ends; return the final state name
    or raise PipelineRunFailed / SubmitError (timeout)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            state = job.state.name  # a GET of the job
        except Exception as e:
            raise api_error(f"reading the state of {job.resource_name}", e) from e
        if state != last and on_state:
            on_state(state)
        last = state
        if state in _TERMINAL:
            break
        if deadline is not None and time.monotonic() >= deadline:
            raise SubmitError(
                f"{job.resource_name} is still {state} after {timeout:.0f}s; it keeps running "
                "(follow it in the console or cancel it there)"
            )
        time.sleep(poll_interval)
    if state != "PIPELINE_STATE_SUCCEEDED":
        err = job.gca_resource.error
        detail = err.message if err and err.message else ""
        raise PipelineRunFailed(
            f"pipeline run {job.resource_name} ended {state}" + (f": {detail}" if detail else ""),
            state=state,
            job_name=job.resource_name,
            error=detail,
        )
    return state
