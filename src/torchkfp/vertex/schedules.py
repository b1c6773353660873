"""Vertex AI pipeline schedules: create one that runs the compiled pipeline on a cron, list,
pause, resume and delete them.

Library code over the google-cloud-aiplatform SDK (imported inside the functions). The cron
(:mod:`torchkfp.cron`, five fields with an optional ``TZ=`` prefix), the times and the run the
schedule starts (:func:`torchkfp.vertex.runs.build_job`) are checked offline first, and a dry
run returns the exact request instead of sending it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torchkfp.config import Config, ConfigError
from torchkfp.config.vertex import _PROJECT_ID, _PROJECT_NUMBER, _REGION  # one home of the checks
from torchkfp.cron import CronSchedule
from torchkfp.vertex import API_HOST, CONSOLE, api_error_message, init
from torchkfp.vertex.runs import SubmitError, api_error, build_job, pipeline_job

_SCHEDULE_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/schedules/[^/]+$")


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


# ---- create -------------------------------------------------------------------------------
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
    pipeline: str = "training",
    dry_run: bool = False,
) -> ScheduleResult:
    """Create a Vertex AI schedule that runs the compiled pipeline on ``cron``
    (e.g. ``"TZ=America/New_York 0 3 * * *"``) with the parameters of a run with this config.

    ``pipeline``: which pipeline ``template_path`` holds, ``training`` (the DAG) or ``batch``
    (batch scoring: its parameters are the ``batch`` section and the sections it uses, see
    :func:`pipeline_values`)."""
    schedule = CronSchedule.parse(cron)
    if parameter_values is None:
        parameter_values = pipeline_values(cfg, pipeline)
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
    job_args = build_job(
        cfg, template_path, display_name=display_name, parameter_values=parameter_values
    )
    v = cfg.vertex
    upcoming = [t.isoformat() for t in schedule.next_runs(3)]
    parent = f"projects/{v.project}/locations/{v.region}"
    url = f"https://{API_HOST.format(region=v.region)}/v1/{parent}/schedules"
    job = pipeline_job(cfg, job_args, dry_run)
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
        raise api_error(f"creating schedule {display_name!r} in {v.project}/{v.region}", e) from e
    return ScheduleResult(
        request, False, _schedule_info(sched.gca_resource, v.region, v.project), upcoming
    )


PIPELINES = ("training", "batch")
"""What a schedule can run: the training DAG or the batch-scoring pipeline."""


def pipeline_values(cfg: Config, pipeline: str) -> dict[str, Any] | None:
    """The parameter values of a scheduled run of ``pipeline`` (None: the training DAG's, which
    :func:`torchkfp.vertex.runs.build_job` fills in). Batch scoring is checked first:
    input and output set, and reachable from Vertex AI
    (:func:`torchkfp.batch_predict.check_for_vertex`)."""
    if pipeline not in PIPELINES:
        raise ConfigError(f"pipeline={pipeline!r}: use one of {list(PIPELINES)}")
    if pipeline == "training":
        return None
    from torchkfp.batch_predict import check_for_vertex, pipeline_parameters
    from torchkfp.config.batch import batch_section
    from torchkfp.images import with_images

    batch = batch_section(cfg)
    check_for_vertex(batch, cfg.warehouse)
    return pipeline_parameters(with_images(cfg), batch)


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


# ---- find and manage ----------------------------------------------------------------------
def _check_location(cfg: Config) -> None:
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

    _check_location(cfg)
    v = cfg.vertex
    init(v)
    filt = f'display_name="{display_name}"' if display_name else None
    try:
        found = aiplatform.PipelineJobSchedule.list(filter=filt)
    except Exception as e:
        raise api_error(f"listing schedules in {v.project}/{v.region}", e) from e
    infos = [_schedule_info(s.gca_resource, v.region, v.project) for s in found]
    return sorted(infos, key=lambda s: s.create_time or "", reverse=True)


def schedule_name(cfg: Config, name: str) -> str:
    """Full resource name for a schedule given as a resource name or a numeric ID (offline);
    a display name is looked up with a list request and must match exactly one schedule."""
    _check_location(cfg)
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
    init(v)
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
        raise SubmitError(api_error_message(f"{action} schedule {full}", e) + hint) from e
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
