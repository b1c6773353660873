"""Submit a compiled pipeline to Vertex AI Pipelines, follow a run, and manage schedules.

This is library code: it takes the path of an already compiled pipeline YAML (``torchkfp
submit`` compiles it first) and talks to Vertex AI through the google-cloud-aiplatform SDK only,
imported inside the functions. The whole config travels as the pipeline's ``config_json``
parameter, so a run executes exactly the settings it was submitted with.

Everything that can be checked offline is checked before any request is sent (project, region,
pipeline root, template, service account, labels, network, key, cron and time zone), and a dry
run returns the exact request the SDK would send instead of sending it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torchkfp.config import Config, ConfigError

PARAMETER = "config_json"
API_HOST = "{region}-aiplatform.googleapis.com"
CONSOLE = "https://console.cloud.google.com/vertex-ai/locations/{region}/pipelines"

_PROJECT_ID = re.compile(r"^([a-z][a-z0-9.\-]*[a-z0-9]:)?[a-z][a-z0-9\-]{4,28}[a-z0-9]$")
_PROJECT_NUMBER = re.compile(r"^[0-9]{6,20}$")
_REGION = re.compile(r"^[a-z]+(-[a-z]+)+[0-9]+$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$")
_NETWORK = re.compile(r"^projects/[^/\s]+/global/networks/[^/\s]+$")
_KMS_KEY = re.compile(
    r"^projects/[^/\s]+/locations/(?P<loc>[^/\s]+)/keyRings/[^/\s]+/cryptoKeys/[^/\s]+$"
)
_JOB_ID = re.compile(r"^[a-z][-a-z0-9]{0,127}$")
_LABEL_KEY = re.compile(r"^[\w\-]{1,63}$")
_SCHEDULE_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/schedules/[^/]+$")
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScheduleInfo:
    name: str
    display_name: str
    state: str
    cron: str
    next_run_time: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    max_concurrent_run_count: int = 1
    max_run_count: int | None = None
    started_run_count: int = 0
    create_time: str | None = None
    dashboard_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScheduleResult:
    """What a schedule command did: the request (always) and the schedule after it."""

    request: dict[str, Any]
    dry_run: bool
    schedule: ScheduleInfo | None = None
    next_runs: list[str] = field(default_factory=list)
    """Create: the next few run times the cron expression gives (ISO, in its time zone)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- offline validation -------------------------------------------------------------------
def validate_config(cfg: Config) -> None:
    """Raise ConfigError naming the setting and the fix for anything Vertex AI would reject or
    a run on Vertex AI could not use."""
    v = cfg.vertex
    if not v.project:
        raise ConfigError(
            "vertex.project is required to run on Vertex AI: set it in the config or pass "
            "--set vertex.project=MY_PROJECT"
        )
    if not (_PROJECT_ID.match(v.project) or _PROJECT_NUMBER.match(v.project)):
        raise ConfigError(
            f"vertex.project={v.project!r} is not a Google Cloud project ID (6-30 characters: "
            "lowercase letters, digits and '-', starting with a letter) or project number"
        )
    if not _REGION.match(v.region or ""):
        raise ConfigError(
            f"vertex.region={v.region!r} is not a Vertex AI region such as 'us-central1' or "
            "'europe-west4'"
        )
    if not v.pipeline_root:
        raise ConfigError(
            "vertex.pipeline_root is required: a gs:// folder for the run's artifacts, "
            "e.g. gs://my-bucket/torchkfp/pipeline-root"
        )
    bucket = _bucket_of(v.pipeline_root)
    if bucket is None or not _BUCKET.match(bucket):
        raise ConfigError(
            f"vertex.pipeline_root={v.pipeline_root!r} must be gs://BUCKET/optional/folder with a "
            "valid bucket name (lowercase letters, digits, '-', '_' and '.')"
        )
    if v.service_account is not None and not _EMAIL.match(v.service_account):
        raise ConfigError(
            f"vertex.service_account={v.service_account!r} is not a service account email such "
            "as torchkfp@my-project.iam.gserviceaccount.com (leave it empty for the default)"
        )
    if len(v.labels) > 64:
        raise ConfigError(f"vertex.labels: {len(v.labels)} labels; Vertex AI allows 64")
    for k, val in v.labels.items():
        if not _LABEL_KEY.match(k) or not re.match(r"^[\w\-]{0,63}$", val) or k != k.lower():
            raise ConfigError(
                f"vertex.labels: {k}={val!r} is not a valid label (keys and values: up to 63 "
                "lowercase letters, digits, '_' or '-'; keys start with a letter)"
            )
        if k.startswith("vertex-ai-pipelines-run-billing-id"):
            raise ConfigError(f"vertex.labels: {k!r} is reserved by Vertex AI; rename it")
    if v.network is not None and not _NETWORK.match(v.network):
        raise ConfigError(
            f"vertex.network={v.network!r} must be projects/PROJECT_NUMBER/global/networks/NAME"
        )
    if v.encryption_key is not None:
        m = _KMS_KEY.match(v.encryption_key)
        if not m:
            raise ConfigError(
                f"vertex.encryption_key={v.encryption_key!r} must be projects/P/locations/L/"
                "keyRings/R/cryptoKeys/K"
            )
        if m.group("loc") != v.region:
            raise ConfigError(
                f"vertex.encryption_key is in location {m.group('loc')!r} but vertex.region is "
                f"{v.region!r}: Vertex AI needs a key in the region of the run"
            )
    if cfg.warehouse.backend != "bigquery":
        raise ConfigError(
            f"warehouse.backend={cfg.warehouse.backend!r} cannot run on Vertex AI (the local "
            "DuckDB file is not there): set warehouse.backend: bigquery and warehouse.project"
        )
    if cfg.deploy.registry != "vertex":
        raise ConfigError(
            f"deploy.registry={cfg.deploy.registry!r} cannot run on Vertex AI (a folder inside "
            "a container does not outlive the run): set deploy.registry: vertex"
        )


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


def _bucket_of(uri: str) -> str | None:
    if not uri.startswith("gs://"):
        return None
    return uri[len("gs://") :].split("/", 1)[0] or None


def parse_cron(cron: str) -> tuple[str | None, str]:
    """Split and check ``[TZ=Area/City |CRON_TZ=Area/City ]MIN HOUR DOM MON DOW``.

    Returns (time zone or None, the five-field expression); raises ConfigError on a bad
    expression or an unknown IANA time zone."""
    import zoneinfo

    from croniter import croniter

    text = " ".join((cron or "").split())
    tz: str | None = None
    m = re.match(r"^(?:CRON_TZ|TZ)=(\S*)\s*(.*)$", text)
    if m:
        tz, text = m.group(1), m.group(2)
        try:
            if not tz:
                raise ValueError("empty")
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"cron {cron!r}: unknown time zone {tz!r}; use an IANA name such as "
                "'America/New_York' or 'Europe/Berlin' (or 'UTC')"
            ) from None
    fields = text.split()
    if len(fields) != 5 or not croniter.is_valid(text):
        raise ConfigError(
            f"cron {cron!r} is not a valid five-field unix cron expression 'MIN HOUR DAY MONTH "
            "WEEKDAY', optionally prefixed by a time zone, e.g. 'TZ=America/New_York 0 3 * * *'"
        )
    return tz, text


def next_runs(cron: str, count: int = 3, now: dt.datetime | None = None) -> list[str]:
    """The next ``count`` run times of ``cron`` (ISO 8601, in the cron's time zone or UTC)."""
    import zoneinfo

    from croniter import croniter

    tz, expr = parse_cron(cron)
    zone = zoneinfo.ZoneInfo(tz or "UTC")
    it = croniter(expr, (now or dt.datetime.now(dt.timezone.utc)).astimezone(zone))
    return [it.get_next(dt.datetime).isoformat() for _ in range(count)]


def _timestamp(value: str | dt.datetime | None, name: str) -> str | None:
    """An RFC 3339 UTC timestamp from an ISO string or an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"{name}={value!r} is not an ISO 8601 time such as 2026-01-31T03:00:00Z"
            ) from None
    if value.tzinfo is None:
        raise ConfigError(
            f"{name}={value.isoformat()!r} has no time zone: add 'Z' (UTC) or an offset "
            "such as +01:00"
        )
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- pipeline runs ------------------------------------------------------------------------
def build_job(
    cfg: Config,
    template_path: str | Path,
    *,
    display_name: str | None = None,
    parameter_values: dict[str, Any] | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    """Validate ``cfg`` and the template offline and return the keyword arguments for
    ``aiplatform.PipelineJob`` (the config itself goes in as the ``config_json`` parameter)."""
    validate_config(cfg)
    spec = load_template(template_path)
    values = {PARAMETER: cfg.to_json()} if parameter_values is None else dict(parameter_values)
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


def _pipeline_job(cfg: Config, job_args: dict[str, Any], dry_run: bool):
    """An ``aiplatform.PipelineJob`` built from ``job_args`` (nothing is sent yet)."""
    from google.cloud import aiplatform

    from torchkfp.vertex import init

    try:
        if dry_run:  # never reach for real credentials: nothing will be sent
            from google.auth.credentials import AnonymousCredentials

            return aiplatform.PipelineJob(**job_args, credentials=AnonymousCredentials())
        init(cfg)
        return aiplatform.PipelineJob(**job_args)
    except ValueError as e:  # the SDK's own checks (labels, display name, job id)
        raise ConfigError(f"Vertex AI SDK rejected the job: {e}") from None
    except Exception as e:
        if type(e).__name__ == "DefaultCredentialsError":
            raise _api_error("finding Google Cloud credentials", e) from None
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


def _api_error(what: str, e: Exception) -> SubmitError:
    msg = getattr(e, "message", None) or str(e)
    code = getattr(e, "code", None)
    hint = ""
    if type(e).__name__ in ("Forbidden", "Unauthorized", "PermissionDenied", "Unauthenticated",
                            "DefaultCredentialsError"):  # fmt: skip
        hint = (
            " (check `gcloud auth application-default login` and that the caller may use "
            "Vertex AI in this project)"
        )
    return SubmitError(f"{what} failed: {code or type(e).__name__}: {msg}{hint}")


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
) -> SubmitResult:
    """Submit the compiled pipeline at ``template_path`` as a Vertex AI PipelineJob.

    ``dry_run``: validate, build the request and return it; nothing is sent. ``wait``: follow
    the run until it ends (``on_state`` hears every state change); raise PipelineRunFailed if it
    ends FAILED or CANCELLED and SubmitError if ``timeout`` seconds pass first.
    """
    t0 = time.perf_counter()
    job_args = build_job(
        cfg, template_path, display_name=display_name, parameter_values=parameter_values,
        job_id=job_id,
    )  # fmt: skip
    job = _pipeline_job(cfg, job_args, dry_run)
    request = _job_request(job, cfg)
    if dry_run:
        return SubmitResult(request, True, seconds=time.perf_counter() - t0)

    v = cfg.vertex
    try:
        job.submit(service_account=v.service_account, network=v.network)
    except Exception as e:
        raise _api_error(f"creating the pipeline job in {v.project}/{v.region}", e) from e
    name = job.resource_name
    url = f"{CONSOLE.format(region=v.region)}/runs/{name.rsplit('/', 1)[1]}?project={v.project}"
    state = job.gca_resource.state.name
    result = SubmitResult(request, False, name, state, url, time.perf_counter() - t0)
    if on_state:
        on_state(state)
    if wait:
        result.state = wait_for(job, poll_interval=poll_interval, timeout=timeout,
                                on_state=on_state, last=state)  # fmt: skip
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
            raise _api_error(f"reading the state of {job.resource_name}", e) from e
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
            state=state, job_name=job.resource_name, error=detail,
        )  # fmt: skip
    return state


# ---- schedules ----------------------------------------------------------------------------
def _schedule_info(s: Any, region: str, project: str) -> ScheduleInfo:
    """ScheduleInfo from a gca Schedule message."""

    def ts(t: Any) -> str | None:
        if not t:
            return None
        return t.isoformat().replace("+00:00", "Z") if hasattr(t, "isoformat") else str(t)

    sid = s.name.rsplit("/", 1)[1]
    return ScheduleInfo(
        name=s.name,
        display_name=s.display_name,
        state=s.state.name,
        cron=s.cron,
        next_run_time=ts(s.next_run_time),
        start_time=ts(s.start_time),
        end_time=ts(s.end_time),
        max_concurrent_run_count=int(s.max_concurrent_run_count),
        max_run_count=int(s.max_run_count) or None,
        started_run_count=int(s.started_run_count),
        create_time=ts(s.create_time),
        dashboard_url=f"{CONSOLE.format(region=region)}/schedules/{sid}?project={project}",
    )


def create_schedule(
    cfg: Config,
    template_path: str | Path,
    *,
    cron: str,
    display_name: str,
    max_concurrent_run_count: int = 1,
    start_time: str | dt.datetime | None = None,
    end_time: str | dt.datetime | None = None,
    max_run_count: int | None = None,
    parameter_values: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> ScheduleResult:
    """Create a Vertex AI schedule that runs the compiled pipeline on ``cron``
    (e.g. ``"TZ=America/New_York 0 3 * * *"``) with this config as its ``config_json``."""
    parse_cron(cron)
    cron = " ".join(cron.split())
    if not display_name or len(display_name) > 128:
        raise ConfigError("schedule display name must be 1 to 128 characters")
    if max_concurrent_run_count < 1:
        raise ConfigError(f"max_concurrent_run_count={max_concurrent_run_count} must be >= 1")
    if max_run_count is not None and max_run_count < 1:
        raise ConfigError(f"max_run_count={max_run_count} must be >= 1 (or unset: no limit)")
    start = _timestamp(start_time, "start_time")
    end = _timestamp(end_time, "end_time")
    if end is not None:
        if start is not None and end <= start:
            raise ConfigError(f"end_time {end} must be after start_time {start}")
        if end <= dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"):
            raise ConfigError(f"end_time {end} is in the past: the schedule would never run")
    job_args = build_job(cfg, template_path, display_name=display_name,
                         parameter_values=parameter_values)  # fmt: skip
    v = cfg.vertex
    upcoming = next_runs(cron)
    parent = f"projects/{v.project}/locations/{v.region}"
    url = f"https://{API_HOST.format(region=v.region)}/v1/{parent}/schedules"
    job = _pipeline_job(cfg, job_args, dry_run)
    schedule_args = {
        "cron": cron,
        "display_name": display_name,
        "start_time": start,
        "end_time": end,
        "max_run_count": max_run_count,
        "max_concurrent_run_count": max_concurrent_run_count,
        "service_account": v.service_account,
        "network": v.network,
    }
    request = {"method": "POST", "url": url, "body": _schedule_body(job, parent, schedule_args)}
    if dry_run:
        return ScheduleResult(request, True, None, upcoming)
    try:
        sched = job.create_schedule(**schedule_args)
    except Exception as e:
        raise _api_error(f"creating schedule {display_name!r} in {v.project}/{v.region}", e) from e
    return ScheduleResult(
        request, False, _schedule_info(sched.gca_resource, v.region, v.project), upcoming
    )


def _schedule_body(job, parent: str, a: dict[str, Any]) -> dict[str, Any]:
    """The Schedule the SDK's PipelineJobSchedule.create sends (built from the same pieces)."""
    from google.cloud.aiplatform.compat.types import schedule as gca_schedule
    from google.protobuf import json_format

    d = job.to_dict()
    pj: dict[str, Any] = {"runtime_config": job.runtime_config, "pipeline_spec": job.pipeline_spec}
    if d.get("templateUri"):
        pj["template_uri"] = d["templateUri"]
    if d.get("labels"):
        pj["labels"] = d["labels"]
    if d.get("encryptionSpec", {}).get("kmsKeyName"):
        pj["encryption_spec"] = {"kms_key_name": d["encryptionSpec"]["kmsKeyName"]}
    if a["service_account"]:
        pj["service_account"] = a["service_account"]
    if a["network"]:
        pj["network"] = a["network"]
    s = gca_schedule.Schedule(
        display_name=a["display_name"],
        create_pipeline_job_request={"parent": parent, "pipeline_job": pj},
        cron=a["cron"],
        max_concurrent_run_count=a["max_concurrent_run_count"],
    )
    if a["start_time"]:
        s.start_time = a["start_time"]
    if a["end_time"]:
        s.end_time = a["end_time"]
    if a["max_run_count"]:
        s.max_run_count = a["max_run_count"]
    return json_format.MessageToDict(s._pb)


def _location_cfg(cfg: Config) -> None:
    v = cfg.vertex
    if not v.project:
        raise ConfigError(
            "vertex.project is required to manage Vertex AI schedules: set it in the config or "
            "pass --set vertex.project=MY_PROJECT"
        )
    if not (_PROJECT_ID.match(v.project) or _PROJECT_NUMBER.match(v.project)):
        raise ConfigError(f"vertex.project={v.project!r} is not a Google Cloud project ID")
    if not _REGION.match(v.region or ""):
        raise ConfigError(f"vertex.region={v.region!r} is not a Vertex AI region")


def list_schedules(cfg: Config, *, display_name: str | None = None) -> list[ScheduleInfo]:
    """The schedules in the configured project and region (optionally one display name),
    newest first."""
    from google.cloud import aiplatform

    from torchkfp.vertex import init

    _location_cfg(cfg)
    v = cfg.vertex
    init(cfg)
    filt = f'display_name="{display_name}"' if display_name else None
    try:
        found = aiplatform.PipelineJobSchedule.list(filter=filt)
    except Exception as e:
        raise _api_error(f"listing schedules in {v.project}/{v.region}", e) from e
    infos = [_schedule_info(s.gca_resource, v.region, v.project) for s in found]
    return sorted(infos, key=lambda s: s.create_time or "", reverse=True)


def schedule_name(cfg: Config, name: str) -> str:
    """Full resource name for a schedule given as a resource name or a numeric ID (offline);
    a display name is looked up with a list request and must match exactly one schedule."""
    _location_cfg(cfg)
    v = cfg.vertex
    name = name.strip()
    if _SCHEDULE_NAME.match(name):
        return name
    if re.fullmatch(r"[0-9]+", name):
        return f"projects/{v.project}/locations/{v.region}/schedules/{name}"
    found = list_schedules(cfg, display_name=name)
    if len(found) == 1:
        return found[0].name
    if not found:
        raise SubmitError(
            f"no schedule named {name!r} in {v.project}/{v.region}; see `torchkfp schedule list`"
        )
    raise SubmitError(
        f"{len(found)} schedules are named {name!r}: give the ID instead "
        f"({', '.join(s.name.rsplit('/', 1)[1] for s in found)})"
    )


def _schedule_action(cfg: Config, name: str, action: str, dry_run: bool) -> ScheduleResult:
    from google.cloud import aiplatform

    from torchkfp.vertex import init

    full = schedule_name(cfg, name)
    v = cfg.vertex
    base = f"https://{API_HOST.format(region=v.region)}/v1/{full}"
    request = (
        {"method": "DELETE", "url": base}
        if action == "delete"
        else {"method": "POST", "url": f"{base}:{action}", "body": {}}
    )
    if dry_run:
        return ScheduleResult(request, True)
    init(cfg)
    try:
        sched = aiplatform.PipelineJobSchedule.get(full)
        state = sched.gca_resource.state.name
        needed = {"pause": "ACTIVE", "resume": "PAUSED"}.get(action)
        if needed and state != needed:
            raise SubmitError(
                f"schedule {full} is {state}: only {'an' if needed == 'ACTIVE' else 'a'} "
                f"{needed} schedule can be {action}d"
            )
        if action == "pause":
            sched.pause()
        elif action == "resume":
            sched.resume()
        else:
            info = _schedule_info(sched.gca_resource, v.region, v.project)
            sched.delete()
            return ScheduleResult(request, False, info)
        sched.state  # noqa: B018 (a GET: read back the state it is in now)
    except SubmitError:
        raise
    except Exception as e:
        hint = "; see `torchkfp schedule list`" if type(e).__name__ == "NotFound" else ""
        raise SubmitError(str(_api_error(f"{action} schedule {full}", e)) + hint) from e
    return ScheduleResult(request, False, _schedule_info(sched.gca_resource, v.region, v.project))


def pause_schedule(cfg: Config, name: str, *, dry_run: bool = False) -> ScheduleResult:
    """Pause a schedule (ID, resource name or display name): no new runs until resumed."""
    return _schedule_action(cfg, name, "pause", dry_run)


def resume_schedule(cfg: Config, name: str, *, dry_run: bool = False) -> ScheduleResult:
    """Resume a paused schedule."""
    return _schedule_action(cfg, name, "resume", dry_run)


def delete_schedule(cfg: Config, name: str, *, dry_run: bool = False) -> ScheduleResult:
    """Delete a schedule (runs it already started are not affected)."""
    return _schedule_action(cfg, name, "delete", dry_run)


def to_json(obj: Any) -> str:
    """JSON for a result object (dataclass with to_dict) or plain data."""
    data = obj.to_dict() if hasattr(obj, "to_dict") else obj
    return json.dumps(data, indent=2, sort_keys=False, default=str)
