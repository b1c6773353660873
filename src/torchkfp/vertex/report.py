"""The HTML evaluation report of a Vertex AI pipeline run, fetched to this machine.

The evaluate task writes its report as the KFP ``HTML`` output ``html_report``
(:data:`torchkfp.report.REPORT_OUTPUT`); Vertex AI records it as an output artifact of that task
in the run's ``jobDetail.taskDetails``, with the gs:// URI of the file. :func:`find_vertex_report`
reads the run through the google-cloud-aiplatform SDK, takes that URI from the ``evaluate`` task
(only once the task SUCCEEDED, or was SKIPPED as a cache hit: a running task's artifact may be
half written) and downloads the file with google-cloud-storage into a local cache folder,
``<run.pipeline_root>/vertex-reports/<job id>/report.html``, written whole or not at all.

Without a job named, the run is the latest pipeline job of this pipeline (its
``pipeline_name``, the compiled pipeline's ``pipelineInfo.name`` = ``run.pipeline_name``; also
the default display name) in ``vertex.project`` / ``vertex.region`` whose evaluate task left a
report. Both SDKs are imported inside the functions.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torchkfp.config import Config, ConfigError
from torchkfp.errors import ArtifactError
from torchkfp.report import REPORT_OUTPUT
from torchkfp.vertex import CONSOLE, api_error_message, init

EVALUATE_TASK = "evaluate"
"""The evaluate task's name in the compiled pipeline (its ``taskInfo.name``)."""
CACHE_FOLDER = "vertex-reports"
"""Under ``run.pipeline_root``: ``<job id>/report.html`` per fetched report."""
REPORT_FILE = "report.html"
MAX_JOBS_LOOKED_AT = 50
"""Without a job named: how many of the newest runs are read before giving up."""

_DONE = ("SUCCEEDED", "SKIPPED")  # SKIPPED: a cache hit, the outputs of an earlier execution
_JOB_ID = re.compile(r"[a-z][-a-z0-9]{0,127}")
_JOB_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/pipelineJobs/([a-z][-a-z0-9]{0,127})")


class ReportError(ArtifactError):
    """The run does not exist, has no evaluation report (yet), or the report cannot be read."""


@dataclass
class VertexReport:
    """A Vertex AI run's report, fetched."""

    report: str
    """The local copy of the HTML file."""
    run: str
    """The job id (what ``torchkfp report --vertex RUN`` takes)."""
    job: str
    """The pipeline job's full resource name."""
    uri: str
    """The gs:// URI of the evaluate task's ``html_report`` artifact."""
    state: str
    """The job's state when read (PIPELINE_STATE_...)."""
    url: str
    """The run's page in the Cloud console."""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def job_resource_name(job: str, project: str, region: str) -> str:
    """The full resource name for ``job``: a pipeline job's resource name, or its id in
    ``project`` / ``region``; ConfigError for anything else."""
    job = job.strip()
    if _JOB_NAME.fullmatch(job):
        return job
    if _JOB_ID.fullmatch(job):
        return f"projects/{project}/locations/{region}/pipelineJobs/{job}"
    raise ConfigError(
        f"{job!r} is not a pipeline job: give its id (e.g. torchkfp-flights-delay-20250101120000-"
        "a1b2c3) or its resource name (projects/P/locations/L/pipelineJobs/ID), as `torchkfp "
        "submit` prints it"
    )


def cache_path(cfg: Config, job_id: str) -> Path:
    """Where the report of run ``job_id`` is kept on this machine."""
    root = cfg.run.pipeline_root
    if "://" in root:
        raise ConfigError(
            f"run.pipeline_root={root!r} is not a local folder; the Vertex report is fetched "
            "into <run.pipeline_root>/vertex-reports: pass --set run.pipeline_root=.runs"
        )
    return Path(root) / CACHE_FOLDER / job_id / REPORT_FILE


# ---- the run and its evaluate task --------------------------------------------------------
def _get_job(name: str, what: str) -> Any:
    from google.cloud import aiplatform

    try:
        return aiplatform.PipelineJob.get(resource_name=name)
    except Exception as e:
        if type(e).__name__ == "NotFound":
            raise ReportError(
                f"{what} {name} does not exist (check the id, vertex.project and vertex.region; "
                "`torchkfp report --vertex` without a job takes the latest run)"
            ) from None
        raise ReportError(api_error_message(f"reading {what} {name}", e)) from None


def _task_state(task: Any) -> str:
    return task.state.name if task.state else "STATE_UNSPECIFIED"


def _finished(task: Any) -> float:
    when = task.end_time or task.create_time
    return when.timestamp() if when else 0.0


def report_uri(job: Any) -> tuple[str | None, str]:
    """``(gs:// URI of the evaluate task's html_report, "")`` for a run read with the SDK, or
    ``(None, why there is none)``."""
    gca = job.gca_resource
    state = gca.state.name if gca.state else "PIPELINE_STATE_UNSPECIFIED"
    tasks = [t for t in gca.job_detail.task_details if t.task_name == EVALUATE_TASK]
    if not tasks:
        why = f"it has no {EVALUATE_TASK!r} task yet (the run is {state}"
        if gca.error and gca.error.message:
            why += f": {gca.error.message}"
        failed = [  # the pipeline's own root task (no parent) left out
            f"{t.task_name} {_task_state(t)}"
            + (f": {t.error.message}" if t.error and t.error.message else "")
            for t in gca.job_detail.task_details
            if t.parent_task_id and _task_state(t) in ("FAILED", "CANCELLED")
        ]
        if failed:
            why += f"; {', '.join(failed)}"
        return None, why + ")"
    done = [t for t in tasks if _task_state(t) in _DONE]
    if not done:
        t = tasks[-1]
        why = f"its {EVALUATE_TASK!r} task is {_task_state(t)}"
        if t.error and t.error.message:
            why += f": {t.error.message}"
        if _task_state(t) in ("PENDING", "RUNNING"):
            why += " (wait for it to finish)"
        return None, why + f"; the run is {state}"
    pending = False
    for t in sorted(done, key=_finished, reverse=True):
        out = t.outputs[REPORT_OUTPUT] if REPORT_OUTPUT in t.outputs else None
        for a in out.artifacts if out else []:
            if a.state and a.state.name == "PENDING":  # still being written
                pending = True
            elif a.uri.startswith("gs://"):
                return a.uri, ""
    if pending:
        return None, f"its {REPORT_OUTPUT!r} artifact is still PENDING (being written)"
    return None, (
        f"its {EVALUATE_TASK!r} task finished without an {REPORT_OUTPUT!r} output artifact "
        "(a run of a pipeline compiled before the HTML report?)"
    )


def _job_id(job: Any) -> str:
    return job.resource_name.rsplit("/", 1)[1]


def _newest_jobs(cfg: Config) -> list[Any]:
    """This pipeline's runs in the configured project and region, newest first (listed with
    the SDK's simple view: no task details yet)."""
    from google.cloud import aiplatform

    v, name = cfg.vertex, cfg.run.pipeline_name
    quiet = logging.getLogger("google.cloud.aiplatform.pipeline_jobs")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "simple view" warning is noise for this command
    try:
        with warnings.catch_warnings():  # ... and so is its use of the deprecated Logger.warn
            warnings.simplefilter("ignore", DeprecationWarning)
            jobs = aiplatform.PipelineJob.list(
                filter=f'pipeline_name="{name}"',
                order_by="create_time desc",
                enable_simple_view=True,
                project=v.project,
                location=v.region,
            )
    except Exception as e:
        raise ReportError(
            api_error_message(f"listing the pipeline jobs in {v.project}/{v.region}", e)
        ) from None
    finally:
        quiet.setLevel(level)

    def pipeline_of(job: Any) -> str | None:
        spec = job.gca_resource.pipeline_spec
        info = spec.get("pipelineInfo") if spec else None
        return info.get("name") if info else None

    # the API filters already; a reply without the spec is kept as it came
    jobs = [j for j in jobs if pipeline_of(j) in (None, name)]
    return sorted(jobs, key=lambda j: j.gca_resource.create_time, reverse=True)


def _latest_with_report(cfg: Config) -> tuple[Any, str]:
    v, name = cfg.vertex, cfg.run.pipeline_name
    jobs = _newest_jobs(cfg)
    where = f"pipeline {name!r} (run.pipeline_name) in {v.project}/{v.region}"
    if not jobs:
        raise ReportError(
            f"no pipeline job of {where}: submit one (`torchkfp submit`), or name a job"
        )
    first_why = ""
    for job in jobs[:MAX_JOBS_LOOKED_AT]:
        full = _get_job(job.resource_name, "pipeline job")
        uri, why = report_uri(full)
        if uri is not None:
            return full, uri
        first_why = first_why or f"the latest, {_job_id(job)}: {why}"
    looked = min(len(jobs), MAX_JOBS_LOOKED_AT)
    raise ReportError(
        f"none of the {looked} newest pipeline jobs of {where} has an evaluation report yet "
        f"({first_why}); name a job to see why it has none"
    )


# ---- the file -----------------------------------------------------------------------------
def _split_gs(uri: str) -> tuple[str, str]:
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket or not name:
        raise ReportError(f"the report artifact's URI {uri!r} names no object")
    return bucket, name


def download_report(uri: str, dest: Path, project: str | None, job: str) -> Path:
    """Download the report at ``uri`` to ``dest`` (a temporary file in its folder, checked by
    the client against the object's checksum, then renamed: ``dest`` is whole or untouched)."""
    from google.cloud import storage

    bucket, name = _split_gs(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        client = storage.Client(project=project)
        with open(part, "wb") as f:
            client.bucket(bucket).blob(name).download_to_file(f)
        with open(part, "rb") as f:
            f.seek(max(0, part.stat().st_size - 256))
            tail = f.read().rstrip().lower()
        if not tail.endswith(b"</html>"):
            raise ReportError(
                f"the report of pipeline job {job} at {uri} is not a complete HTML page "
                f"({part.stat().st_size} bytes, no closing </html>)"
            )
        os.replace(part, dest)
    except ReportError:
        raise
    except Exception as e:
        if type(e).__name__ == "NotFound":
            raise ReportError(
                f"the report of pipeline job {job} is gone from Cloud Storage: {uri} does not "
                "exist (deleted, or removed by the bucket's lifecycle rules); run the pipeline "
                "again for a new one"
            ) from None
        msg = getattr(e, "message", None) or str(e)
        raise ReportError(
            f"downloading the report of pipeline job {job} from {uri} failed "
            f"({type(e).__name__}: {msg}); check that this account may read the bucket "
            "(roles/storage.objectViewer)"
        ) from None
    finally:
        part.unlink(missing_ok=True)
    return dest


def find_vertex_report(cfg: Config, job: str | None = None) -> VertexReport:
    """The HTML evaluation report of the Vertex AI run ``job`` (its id or resource name;
    default: the latest run of ``run.pipeline_name`` that has one), downloaded into
    :func:`cache_path`. ConfigError for a bad job name or config; ReportError naming the run
    and what is missing otherwise."""
    v = cfg.vertex
    if not v.project:
        raise ConfigError("vertex.project is required for Vertex AI; set it in the config")
    name = job_resource_name(job, v.project, v.region) if job else None
    cache_path(cfg, "check")  # a bad run.pipeline_root is refused before any request
    init(v)
    if name is not None:
        found = _get_job(name, "pipeline job")
        uri, why = report_uri(found)
        if uri is None:
            raise ReportError(f"pipeline job {found.resource_name} has no evaluation report: {why}")
    else:
        found, uri = _latest_with_report(cfg)
    job_id, full = _job_id(found), found.resource_name
    path = download_report(uri, cache_path(cfg, job_id), v.project, full)
    region = full.split("/")[3]
    project = full.split("/")[1]
    return VertexReport(
        report=str(path.resolve()),
        run=job_id,
        job=full,
        uri=uri,
        state=found.gca_resource.state.name,
        url=f"{CONSOLE.format(region=region)}/runs/{job_id}?project={project}",
    )
