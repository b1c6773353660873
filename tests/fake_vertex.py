"""A small local stand-in for the Vertex AI v1 REST API, for tests.

Vertex AI has no emulator. Instead of patching the SDK, tests point the real
google-cloud-aiplatform SDK at this server::

    aiplatform.init(project=P, location=L, api_endpoint=fake.endpoint, api_transport="rest",
                    credentials=AnonymousCredentials())

and assert on the HTTP requests the SDK actually sent (``fake.requests``). The server implements
just enough of the API for torchkfp: pipeline jobs (create, get with scripted state
transitions), schedules (create, list, get, pause, resume, delete), models (upload, list, get,
``ID@alias`` / ``ID@version`` lookups, mergeVersionAliases) and endpoints (list, create, get,
patch with an update mask, deployModel, undeployModel; the endpoint keeps its ``deployedModels``
(each with the ``modelVersionId`` it serves) and ``trafficSplit`` up to date) and
hyperparameter tuning jobs (create, get: the job stays pending unless
``script_tuning_job`` scripts its states and trials; ``add_tuning_job`` puts a job with trials
in place, its state scripted over successive GETs). Every answer is a
well-formed resource (the SDK parses replies into protobuf messages and reads their fields);
long-running operations come back already done, or already failed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

API = "type.googleapis.com/google.cloud.aiplatform.v1"


@dataclass
class Request:
    """One HTTP request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any

    def __repr__(self) -> str:  # compact, for assertion messages
        q = "&".join(f"{k}={v}" for k, v in self.query.items() if k != "$alt")
        return f"{self.method} {self.path}{'?' + q if q else ''}"


@dataclass
class _PipelineScript:
    states: list[str]
    error: dict[str, Any] | None


@dataclass
class _Failure:
    code: int  # google.rpc.Code, in an operation's error
    http: int  # the HTTP status, when the request itself is rejected
    status: str
    message: str
    in_operation: bool


@dataclass
class _State:
    pipeline_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_scripts: dict[str, list[str]] = field(default_factory=dict)
    job_errors: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> its default version
    model_versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuning_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuning_scripts: dict[str, list[str]] = field(default_factory=dict)
    tuning_pending_trials: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tuning_errors: dict[str, dict[str, Any] | None] = field(default_factory=dict)


@dataclass
class _TuningScript:
    states: list[str]
    trials: list[dict[str, Any]] | Callable[[dict[str, Any]], list[dict[str, Any]]] | None
    error: dict[str, Any] | None


# google.rpc.Code name -> (its number, the HTTP status the REST API answers with)
_CODES = {
    "INVALID_ARGUMENT": (3, 400),
    "NOT_FOUND": (5, 404),
    "PERMISSION_DENIED": (7, 403),
    "RESOURCE_EXHAUSTED": (8, 429),
    "FAILED_PRECONDITION": (9, 400),
    "INTERNAL": (13, 500),
    "UNAVAILABLE": (14, 503),
}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# a pipeline job's state -> its root task's state; a task's state -> its execution's state
_TASK_STATE = {
    "PIPELINE_STATE_SUCCEEDED": "SUCCEEDED",
    "PIPELINE_STATE_FAILED": "FAILED",
    "PIPELINE_STATE_CANCELLED": "CANCELLED",
}
_EXECUTION_STATE = {
    "SUCCEEDED": "COMPLETE",
    "SKIPPED": "CACHED",
    "FAILED": "FAILED",
    "CANCELLED": "CANCELLED",
    "PENDING": "NEW",
}


def pipeline_task(
    name: str,
    state: str = "SUCCEEDED",
    outputs: dict[str, str] | None = None,
    *,
    artifact_state: str = "LIVE",
    error: str | None = None,
) -> dict[str, Any]:
    """One entry of a pipeline job's ``jobDetail.taskDetails`` as the API returns it (for
    :meth:`FakeVertex.add_pipeline_job`): the task ``name`` (the task's name in the pipeline
    spec), its ``state`` (PipelineTaskDetail.State: SUCCEEDED, RUNNING, FAILED, SKIPPED...) and
    its output artifacts, output name -> gs:// URI (``html_report`` is a system.HTML artifact,
    others system.Artifact); ``artifact_state``: LIVE, or PENDING while the task still writes
    them; ``error``: the task's error message."""
    task: dict[str, Any] = {"taskName": name, "state": state}
    if outputs:
        task["outputs"] = {
            out: {
                "artifacts": [
                    {
                        "displayName": out,
                        "uri": uri,
                        "schemaTitle": "system.HTML" if out == "html_report" else "system.Artifact",
                        "schemaVersion": "0.0.1",
                        "state": artifact_state,
                        "metadata": {},
                    }
                ]
            }
            for out, uri in outputs.items()
        }
    if error:
        task["error"] = {"code": 9, "message": error}
    return task


_TUNING_RUNNING = (
    "JOB_STATE_QUEUED",
    "JOB_STATE_PENDING",
    "JOB_STATE_RUNNING",
    "JOB_STATE_CANCELLING",
    "JOB_STATE_PAUSED",
    "JOB_STATE_UPDATING",
)


def tuning_trial(
    trial_id: str | int,
    params: dict[str, Any],
    value: float | None = None,
    *,
    metric: str = "roc_auc",
    state: str = "SUCCEEDED",
    infeasible_reason: str | None = None,
) -> dict[str, Any]:
    """One entry of a hyperparameter tuning job's ``trials`` as the API returns it (for
    :meth:`FakeVertex.add_tuning_job`): ``params`` parameter id -> value as Vertex AI sends it
    (a JSON number for double, integer and discrete parameters, a string for categorical
    ones); ``value``: the final measurement of ``metric`` (None: no final measurement);
    ``state``: Trial.State (SUCCEEDED, INFEASIBLE for a failed trial, ACTIVE...)."""
    now = _now()
    trial: dict[str, Any] = {
        "id": str(trial_id),
        "state": state,
        "parameters": [{"parameterId": k, "value": v} for k, v in params.items()],
        "startTime": now,
    }
    if state in ("SUCCEEDED", "INFEASIBLE"):
        trial["endTime"] = now
    if value is not None:
        trial["finalMeasurement"] = {
            "stepCount": "3",
            "metrics": [{"metricId": metric, "value": value}],
        }
    if infeasible_reason:
        trial["infeasibleReason"] = infeasible_reason
    return trial


class ApiError(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


class FakeVertex:
    """The fake Vertex AI server. Use as a context manager or call start()/stop().

    ``script_pipeline_job(["PIPELINE_STATE_RUNNING", "PIPELINE_STATE_FAILED"], error=...)``
    sets the states that successive GETs of the next created pipeline job return;
    ``fail_next_deploy(...)`` makes the next deployModel fail.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.state = _State()
        self._scripts: list[_PipelineScript] = []
        self._tuning_scripts: list[_TuningScript] = []
        self._deploy_failures: list[_Failure] = []
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeVertex:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _handle(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeVertex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        """The value for ``aiplatform.init(api_endpoint=...)``."""
        return f"http://127.0.0.1:{self.port}"

    # ---- test helpers ------------------------------------------------------------------
    def script_pipeline_job(self, states: list[str], error: dict[str, Any] | None = None) -> None:
        """States returned by successive GETs of the next created pipeline job (the last one
        repeats); ``error`` (a google.rpc.Status dict) is attached once a state is FAILED."""
        self._scripts.append(_PipelineScript(list(states), error))

    def script_tuning_job(
        self,
        states: list[str],
        trials: list[dict[str, Any]]
        | Callable[[dict[str, Any]], list[dict[str, Any]]]
        | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """States returned by successive GETs of the next *created* hyperparameter tuning job
        (the last one repeats; the create itself answers JOB_STATE_PENDING). ``trials`` (build
        them with :func:`tuning_trial`, or a function of the created job's request body, e.g.
        to draw values from its ``studySpec.parameters``) appear on the job once a GET finds it
        past QUEUED/PENDING; ``error`` (a google.rpc.Status dict) once a state is FAILED."""
        self._tuning_scripts.append(_TuningScript(list(states), trials, error))

    def fail_next_deploy(
        self,
        message: str = "Model server never became ready.",
        status: str = "FAILED_PRECONDITION",
        in_operation: bool = True,
    ) -> None:
        """Make the next deployModel fail and change nothing on the endpoint. By default it fails
        the way a deployment that never gets healthy does: the request is accepted and its
        long-running operation ends with ``error``. With ``in_operation=False`` the request
        itself is rejected (as a quota or permission problem is)."""
        code, http = _CODES[status]
        self._deploy_failures.append(_Failure(code, http, status, message, in_operation))

    def find(self, method: str, pattern: str) -> list[Request]:
        """Requests with this method whose path matches the regex ``pattern`` (search)."""
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    def clear(self) -> None:
        self.requests.clear()

    def add_pipeline_job(
        self,
        job_id: str,
        *,
        pipeline_name: str,
        display_name: str | None = None,
        state: str = "PIPELINE_STATE_SUCCEEDED",
        create_time: str | None = None,
        tasks: list[dict[str, Any]] | None = None,
        project: str = "test-project",
        location: str = "us-central1",
    ) -> dict[str, Any]:
        """A pipeline job as Vertex AI holds one that already ran (put in place, not created
        through the API), answered by get and list as it is: ``pipeline_name`` is its
        ``pipelineSpec.pipelineInfo.name``, ``tasks`` its ``jobDetail.taskDetails`` (build them
        with :func:`pipeline_task`; the pipeline's root task is added first). Returns the job."""
        loc = f"projects/{project}/locations/{location}"
        name = f"{loc}/pipelineJobs/{job_id}"
        created = create_time or _now()
        ids = itertools.count(1)
        root = pipeline_task(pipeline_name, _TASK_STATE.get(state, "RUNNING"))
        details = []
        for t in [root, *(tasks or [])]:
            t = json.loads(json.dumps(t))  # a copy the job owns
            task_id = str(next(ids))
            t.update(taskId=task_id, createTime=created)
            if details:  # under the root task
                t["parentTaskId"] = details[0]["taskId"]
            t["execution"] = {
                "name": f"{loc}/metadataStores/default/executions/{job_id}-{task_id}",
                "displayName": t["taskName"],
                "state": _EXECUTION_STATE.get(t["state"], "RUNNING"),
                "schemaTitle": "system.ContainerExecution",
                "createTime": created,
                "updateTime": created,
            }
            for out, artifacts in (t.get("outputs") or {}).items():
                for i, a in enumerate(artifacts["artifacts"]):
                    a.setdefault(
                        "name",
                        f"{loc}/metadataStores/default/artifacts/{job_id}-{task_id}-{out}-{i}",
                    )
                    a.update(createTime=created, updateTime=created, etag=f"etag-{job_id}")
            details.append(t)
        job = {
            "name": name,
            "displayName": display_name or pipeline_name,
            "pipelineSpec": {"pipelineInfo": {"name": pipeline_name}, "schemaVersion": "2.1.0"},
            "state": state,
            "createTime": created,
            "updateTime": created,
            "startTime": created,
            "jobDetail": {
                "pipelineContext": {"name": f"{loc}/metadataStores/default/contexts/{job_id}"},
                "pipelineRunContext": {
                    "name": f"{loc}/metadataStores/default/contexts/{job_id}-run"
                },
                "taskDetails": details,
            },
        }
        if state in ("PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED"):
            job["endTime"] = created
        with self._lock:
            self.state.pipeline_jobs[name] = job
            self.state.job_scripts[name] = [state]
            self.state.job_errors[name] = None
        return job

    def add_tuning_job(
        self,
        job_id: str,
        *,
        trials: list[dict[str, Any]],
        metric: str = "roc_auc",
        goal: str = "MAXIMIZE",
        state: str = "JOB_STATE_SUCCEEDED",
        states: list[str] | None = None,
        parameters: list[dict[str, Any]] | None = None,
        trial_args: list[str] | None = None,
        error: dict[str, Any] | None = None,
        display_name: str = "flights-delay-tune",
        project: str = "test-project",
        location: str = "us-central1",
    ) -> dict[str, Any]:
        """A hyperparameter tuning job as Vertex AI holds one that already ran (put in place,
        not created through the API), answered by get: its ``studySpec`` optimizes ``metric``
        toward ``goal`` (MAXIMIZE or MINIMIZE) over ``parameters`` (``studySpec.parameters``,
        e.g. the request body of ``torchkfp tune --vertex``); ``trials`` (build them with
        :func:`tuning_trial`); ``trial_args``: the trials' container args (where ``torchkfp``
        puts ``--train-settings=JSON``); ``error``: a google.rpc.Status dict, for a FAILED job.
        ``states``: the states successive GETs return (the last one repeats) instead of
        ``state``. Returns the job."""
        name = f"projects/{project}/locations/{location}/hyperparameterTuningJobs/{job_id}"
        now = _now()
        first = (states or [state])[0]
        job: dict[str, Any] = {
            "name": name,
            "displayName": display_name,
            "studySpec": {
                "metrics": [{"metricId": metric, "goal": goal}],
                "parameters": list(parameters or []),
            },
            "maxTrialCount": max(len(trials), 1),
            "parallelTrialCount": 1,
            "trialJobSpec": {
                "workerPoolSpecs": [
                    {
                        "machineSpec": {"machineType": "n1-standard-4"},
                        "replicaCount": "1",
                        "containerSpec": {
                            "imageUri": "us-docker.pkg.dev/p/r/torchkfp-train:1",
                            "command": ["python", "-m", "torchkfp.vertex.tune_trial"],
                            "args": list(trial_args or []),
                        },
                    }
                ]
            },
            "trials": json.loads(json.dumps(trials)),  # a copy the job owns
            "state": first,
            "createTime": now,
            "updateTime": now,
            "startTime": now,
        }
        if first not in _TUNING_RUNNING:
            job["endTime"] = now
        if error:
            job["error"] = error
        with self._lock:
            self.state.tuning_jobs[name] = job
            if states:
                self.state.tuning_scripts[name] = list(states)
        return job

    # ---- HTTP plumbing -----------------------------------------------------------------
    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        req = Request(h.command, unquote(url.path), query, body)
        with self._lock:
            self.requests.append(req)
            try:
                status, payload = 200, self._route(req)
            except ApiError as e:
                status = e.code
                payload = {"error": {"code": e.code, "message": e.message, "status": e.status}}
            except Exception as e:  # a bug in the fake: say so loudly
                status = 500
                payload = {"error": {"code": 500, "message": f"fake: {e!r}", "status": "INTERNAL"}}
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    _LOC = r"/v1/(?P<loc>projects/[^/]+/locations/[^/]+)"

    def _route(self, r: Request) -> Any:
        routes: list[tuple[str, str, Any]] = [
            ("POST", r"/pipelineJobs", self._create_pipeline_job),
            ("GET", r"/pipelineJobs/(?P<id>[^/:]+)", self._get_pipeline_job),
            ("GET", r"/pipelineJobs", self._list_pipeline_jobs),
            ("POST", r"/schedules", self._create_schedule),
            ("GET", r"/schedules", self._list_schedules),
            ("GET", r"/schedules/(?P<id>[^/:]+)", self._get_schedule),
            ("POST", r"/schedules/(?P<id>[^/:]+):pause", self._pause_schedule),
            ("POST", r"/schedules/(?P<id>[^/:]+):resume", self._resume_schedule),
            ("DELETE", r"/schedules/(?P<id>[^/:]+)", self._delete_schedule),
            ("POST", r"/models:upload", self._upload_model),
            ("GET", r"/models", self._list_models),
            ("GET", r"/models/(?P<id>[^/:@]+)(@(?P<ver>[^/:]+))?", self._get_model),
            (
                "POST",
                r"/models/(?P<id>[^/:@]+)(@(?P<ver>[^/:]+))?:mergeVersionAliases",
                self._merge_version_aliases,
            ),
            ("GET", r"/endpoints", self._list_endpoints),
            ("POST", r"/endpoints", self._create_endpoint),
            ("GET", r"/endpoints/(?P<id>[^/:]+)", self._get_endpoint),
            ("PATCH", r"/endpoints/(?P<id>[^/:]+)", self._update_endpoint),
            ("POST", r"/endpoints/(?P<id>[^/:]+):deployModel", self._deploy_model),
            ("POST", r"/endpoints/(?P<id>[^/:]+):undeployModel", self._undeploy_model),
            ("POST", r"/hyperparameterTuningJobs", self._create_tuning_job),
            ("GET", r"/hyperparameterTuningJobs/(?P<id>[^/:]+)", self._get_tuning_job),
            ("GET", r"/operations/(?P<id>[^/:]+)", self._get_operation),
            ("GET", r"/.*/operations/(?P<id>[^/:]+)", self._get_operation),
        ]
        for method, pattern, fn in routes:
            m = re.fullmatch(self._LOC + pattern, r.path)
            if m and r.method == method:
                return fn(r, **m.groupdict())
        raise ApiError(404, "NOT_FOUND", f"fake Vertex AI: no route for {r.method} {r.path}")

    def _new_id(self) -> str:
        return str(next(self._ids))

    def _operation(self, loc: str, response: dict[str, Any], metadata_type: str) -> dict:
        op_name = f"{loc}/operations/{self._new_id()}"
        op = {
            "name": op_name,
            "metadata": {
                "@type": f"{API}.{metadata_type}",
                "genericMetadata": {"createTime": _now(), "updateTime": _now()},
            },
            "done": True,
            "response": response,
        }
        self.state.operations[op_name.rsplit("/", 1)[1]] = op
        return op

    def _failed_operation(self, loc: str, failure: _Failure, metadata_type: str) -> dict:
        op = self._operation(loc, {}, metadata_type)
        del op["response"]
        op["error"] = {"code": failure.code, "message": failure.message}
        return op

    def _get_operation(self, r: Request, loc: str, id: str) -> dict:
        if id not in self.state.operations:
            raise ApiError(404, "NOT_FOUND", f"operation {id} not found")
        return self.state.operations[id]

    # ---- hyperparameter tuning jobs ----------------------------------------------------
    def _create_tuning_job(self, r: Request, loc: str) -> dict:
        body = dict(r.body or {})
        for key in ("displayName", "studySpec", "maxTrialCount", "parallelTrialCount"):
            if not body.get(key):
                raise ApiError(
                    400, "INVALID_ARGUMENT", f"hyperparameterTuningJob.{key} is required"
                )
        pools = (body.get("trialJobSpec") or {}).get("workerPoolSpecs") or []
        if not pools or not all(p.get("containerSpec", {}).get("imageUri") for p in pools):
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                "trialJobSpec.workerPoolSpecs need a containerSpec.imageUri",
            )
        name = f"{loc}/hyperparameterTuningJobs/{self._new_id()}"
        body.update(name=name, state="JOB_STATE_PENDING", createTime=_now(), updateTime=_now())
        self.state.tuning_jobs[name] = body
        if self._tuning_scripts:
            script = self._tuning_scripts.pop(0)
            self.state.tuning_scripts[name] = script.states
            trials = (
                script.trials(json.loads(json.dumps(body)))
                if callable(script.trials)
                else script.trials
            )
            self.state.tuning_pending_trials[name] = json.loads(json.dumps(trials or []))
            self.state.tuning_errors[name] = script.error
        return body

    def _get_tuning_job(self, r: Request, loc: str, id: str) -> dict:
        name = f"{loc}/hyperparameterTuningJobs/{id}"
        if name not in self.state.tuning_jobs:
            raise ApiError(404, "NOT_FOUND", f"hyperparameter tuning job {name} not found")
        job = self.state.tuning_jobs[name]
        states = self.state.tuning_scripts.get(name)
        if states:  # only jobs put in place by add_tuning_job(states=...) change
            job["state"] = states.pop(0) if len(states) > 1 else states[0]
            job["updateTime"] = _now()
            if job["state"] not in _TUNING_RUNNING:
                job.setdefault("endTime", _now())
            if job["state"] not in ("JOB_STATE_QUEUED", "JOB_STATE_PENDING"):
                if name in self.state.tuning_pending_trials:  # scripted: trials once started
                    job["trials"] = self.state.tuning_pending_trials.pop(name)
            if job["state"] == "JOB_STATE_FAILED" and self.state.tuning_errors.get(name):
                job["error"] = self.state.tuning_errors[name]
        return job

    # ---- pipeline jobs -----------------------------------------------------------------
    def _create_pipeline_job(self, r: Request, loc: str) -> dict:
        job_id = r.query.get("pipelineJobId") or f"job-{self._new_id()}"
        name = f"{loc}/pipelineJobs/{job_id}"
        if name in self.state.pipeline_jobs:
            raise ApiError(409, "ALREADY_EXISTS", f"pipeline job {name} already exists")
        script = (
            self._scripts.pop(0)
            if self._scripts
            else _PipelineScript(["PIPELINE_STATE_RUNNING", "PIPELINE_STATE_SUCCEEDED"], None)
        )
        job = dict(r.body or {})
        job.update(
            name=name,
            state="PIPELINE_STATE_PENDING",
            createTime=_now(),
            updateTime=_now(),
            jobDetail={
                "pipelineContext": {"name": f"{loc}/metadataStores/default/contexts/{job_id}"},
                "pipelineRunContext": {
                    "name": f"{loc}/metadataStores/default/contexts/{job_id}-run"
                },
            },
        )
        self.state.pipeline_jobs[name] = job
        self.state.job_scripts[name] = script.states
        self.state.job_errors[name] = script.error
        return job

    def _get_pipeline_job(self, r: Request, loc: str, id: str) -> dict:
        name = f"{loc}/pipelineJobs/{id}"
        if name not in self.state.pipeline_jobs:
            raise ApiError(404, "NOT_FOUND", f"pipeline job {name} not found")
        job = self.state.pipeline_jobs[name]
        states = self.state.job_scripts[name]
        if states:
            job["state"] = states.pop(0) if len(states) > 1 else states[0]
            job["updateTime"] = _now()
        if job["state"] == "PIPELINE_STATE_RUNNING":
            job.setdefault("startTime", _now())
        if job["state"] in (
            "PIPELINE_STATE_SUCCEEDED",
            "PIPELINE_STATE_FAILED",
            "PIPELINE_STATE_CANCELLED",
        ):
            job.setdefault("startTime", _now())
            job.setdefault("endTime", _now())
            if job["state"] == "PIPELINE_STATE_FAILED" and self.state.job_errors[name]:
                job["error"] = self.state.job_errors[name]
        return job

    def _list_pipeline_jobs(self, r: Request, loc: str) -> dict:
        jobs = [j for n, j in self.state.pipeline_jobs.items() if n.startswith(loc + "/")]
        return {"pipelineJobs": jobs}

    # ---- schedules ---------------------------------------------------------------------
    def _create_schedule(self, r: Request, loc: str) -> dict:
        name = f"{loc}/schedules/{self._new_id()}"
        sched = dict(r.body or {})
        now = _now()
        sched.update(
            name=name,
            state="ACTIVE",
            createTime=now,
            updateTime=now,
            nextRunTime=sched.get("startTime", now),
            startedRunCount="0",
        )
        sched.setdefault("startTime", now)
        sched.setdefault("maxConcurrentRunCount", "1")
        self.state.schedules[name] = sched
        return sched

    def _schedule(self, loc: str, id: str) -> dict:
        name = f"{loc}/schedules/{id}"
        if name not in self.state.schedules:
            raise ApiError(404, "NOT_FOUND", f"schedule {name} not found")
        return self.state.schedules[name]

    def _list_schedules(self, r: Request, loc: str) -> dict:
        found = [s for n, s in self.state.schedules.items() if n.startswith(loc + "/")]
        m = re.search(r'display_name="([^"]*)"', r.query.get("filter", ""))
        if m:
            found = [s for s in found if s.get("displayName") == m.group(1)]
        return {"schedules": found}

    def _get_schedule(self, r: Request, loc: str, id: str) -> dict:
        return self._schedule(loc, id)

    def _pause_schedule(self, r: Request, loc: str, id: str) -> dict:
        s = self._schedule(loc, id)
        if s["state"] != "ACTIVE":
            raise ApiError(400, "FAILED_PRECONDITION", f"schedule {s['name']} is {s['state']}")
        s.update(state="PAUSED", updateTime=_now())
        return {}

    def _resume_schedule(self, r: Request, loc: str, id: str) -> dict:
        s = self._schedule(loc, id)
        if s["state"] != "PAUSED":
            raise ApiError(400, "FAILED_PRECONDITION", f"schedule {s['name']} is {s['state']}")
        s.update(state="ACTIVE", updateTime=_now(), lastResumeTime=_now())
        return {}

    def _delete_schedule(self, r: Request, loc: str, id: str) -> dict:
        s = self._schedule(loc, id)
        del self.state.schedules[s["name"]]
        return self._operation(
            loc, {"@type": "type.googleapis.com/google.protobuf.Empty"}, "DeleteOperationMetadata"
        )

    # ---- models ------------------------------------------------------------------------
    def _upload_model(self, r: Request, loc: str) -> dict:
        body = r.body or {}
        spec = dict(body.get("model") or {})
        parent = body.get("parentModel")
        if parent:
            model_id = parent.rsplit("/", 1)[1]
            if model_id not in self.state.models:
                raise ApiError(404, "NOT_FOUND", f"parent model {parent} not found")
        else:
            model_id = self._new_id()
        versions = self.state.model_versions.setdefault(model_id, [])
        version_id = str(len(versions) + 1)
        aliases = list(spec.get("versionAliases") or [])
        if not versions and "default" not in aliases:  # the first version is the default one
            aliases.append("default")
        for v in versions:  # an alias names one version: it moves to the new one
            v["versionAliases"] = [a for a in v["versionAliases"] if a not in aliases]
        now = _now()
        model = {
            **spec,
            "name": f"{loc}/models/{model_id}",
            "versionId": version_id,
            "versionAliases": aliases,
            "createTime": versions[0]["createTime"] if versions else now,
            "updateTime": now,
            "versionCreateTime": now,
            "versionUpdateTime": now,
            "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"],
            "etag": f"etag-{model_id}-{version_id}",
        }
        versions.append(model)
        # the model (no version given) reads as its default version
        self.state.models[model_id] = next(
            v for v in reversed(versions) if "default" in v["versionAliases"]
        )
        return self._operation(
            loc,
            {
                "@type": f"{API}.UploadModelResponse",
                "model": f"{loc}/models/{model_id}",
                "modelVersionId": version_id,
            },
            "UploadModelOperationMetadata",
        )

    def _list_models(self, r: Request, loc: str) -> dict:
        models = [m for m in self.state.models.values() if m["name"].startswith(loc + "/")]
        m = re.search(r'display_name="([^"]*)"', r.query.get("filter", ""))
        if m:
            models = [x for x in models if x.get("displayName") == m.group(1)]
        return {"models": models}

    def _get_model(self, r: Request, loc: str, id: str, ver: str | None) -> dict:
        if id not in self.state.models or not self.state.models[id]["name"].startswith(loc):
            raise ApiError(404, "NOT_FOUND", f"model {loc}/models/{id} not found")
        if ver is None:
            return self.state.models[id]
        for v in self.state.model_versions[id]:
            if v["versionId"] == ver or ver in v["versionAliases"]:
                return v
        raise ApiError(404, "NOT_FOUND", f"model {loc}/models/{id}@{ver} not found")

    _ALIAS = re.compile(r"[a-z][a-zA-Z0-9-]{0,126}[a-z0-9-]")

    def _merge_version_aliases(self, r: Request, loc: str, id: str, ver: str | None) -> dict:
        """``alias`` adds it to this version (taking it off any other version of the model:
        an alias names one version); ``-alias`` removes it from this version."""
        if ver is None or not ver.isdigit():  # the API wants ID@VERSION_ID, not an alias
            raise ApiError(
                400, "INVALID_ARGUMENT", f"name must include a version id, not {r.path!r}"
            )
        target = self._get_model(r, loc, id, ver)
        changes = list((r.body or {}).get("versionAliases") or [])
        if not changes:
            raise ApiError(400, "INVALID_ARGUMENT", "version_aliases must not be empty")
        for c in changes:
            if not self._ALIAS.fullmatch(c.removeprefix("-")):
                raise ApiError(400, "INVALID_ARGUMENT", f"invalid version alias {c!r}")
        if "-default" in changes:
            raise ApiError(400, "INVALID_ARGUMENT", "the default alias cannot be removed")
        versions = self.state.model_versions[id]
        now = _now()
        for c in changes:
            if c.startswith("-"):
                target["versionAliases"] = [a for a in target["versionAliases"] if a != c[1:]]
                continue
            for v in versions:
                if v is not target and c in v["versionAliases"]:
                    v["versionAliases"] = [a for a in v["versionAliases"] if a != c]
                    v["versionUpdateTime"] = now
            if c not in target["versionAliases"]:
                target["versionAliases"].append(c)
        target["versionUpdateTime"] = target["updateTime"] = now
        self.state.models[id] = next(v for v in versions if "default" in v["versionAliases"])
        return target

    # ---- endpoints ---------------------------------------------------------------------
    def _list_endpoints(self, r: Request, loc: str) -> dict:
        eps = [e for e in self.state.endpoints.values() if e["name"].startswith(loc + "/")]
        m = re.search(r'display_name="([^"]*)"', r.query.get("filter", ""))
        if m:
            eps = [e for e in eps if e.get("displayName") == m.group(1)]
        return {"endpoints": eps}

    def _create_endpoint(self, r: Request, loc: str) -> dict:
        ep_id = r.query.get("endpointId") or self._new_id()
        now = _now()
        ep = {
            **(r.body or {}),
            "name": f"{loc}/endpoints/{ep_id}",
            "createTime": now,
            "updateTime": now,
            "etag": f"etag-{ep_id}",
        }
        self.state.endpoints[ep_id] = ep
        return self._operation(
            loc, {"@type": f"{API}.Endpoint", **ep}, "CreateEndpointOperationMetadata"
        )

    def _endpoint(self, loc: str, id: str) -> dict:
        if id not in self.state.endpoints or not self.state.endpoints[id]["name"].startswith(loc):
            raise ApiError(404, "NOT_FOUND", f"endpoint {loc}/endpoints/{id} not found")
        return self.state.endpoints[id]

    def _get_endpoint(self, r: Request, loc: str, id: str) -> dict:
        return self._endpoint(loc, id)

    _ENDPOINT_FIELDS = {"trafficSplit", "displayName", "description", "labels"}

    def _update_endpoint(self, r: Request, loc: str, id: str) -> dict:
        """PATCH with ``updateMask``: only the named fields change (a traffic split must name
        deployed models and add up to 100; unnamed deployed models get no traffic)."""
        ep = self._endpoint(loc, id)
        mask = [m.strip() for m in r.query.get("updateMask", "").split(",") if m.strip()]
        if not mask:
            raise ApiError(400, "INVALID_ARGUMENT", "update_mask must name the fields to update")
        body = r.body or {}
        camel = [re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f) for f in mask]
        unsupported = sorted(set(camel) - self._ENDPOINT_FIELDS)
        if unsupported:
            raise ApiError(400, "INVALID_ARGUMENT", f"cannot update {unsupported} of an endpoint")
        for f in camel:
            if f == "trafficSplit":
                known = {d["id"] for d in ep.get("deployedModels", [])}
                split = self._check_split(body.get("trafficSplit") or {}, known)
                if known and not split:
                    raise ApiError(
                        400, "INVALID_ARGUMENT", "traffic_split must add up to 100, not {}"
                    )
                ep["trafficSplit"] = split
            elif f in body:
                ep[f] = body[f]
            else:
                ep.pop(f, None)
        ep["updateTime"] = _now()
        return ep

    @staticmethod
    def _check_split(split: dict[str, Any], known: set[str]) -> dict[str, int]:
        """A trafficSplit as the API accepts it: known deployed model ids, adding up to 100
        (or empty: no traffic at all)."""
        unknown = sorted(set(split) - known)
        if unknown:
            raise ApiError(
                400, "INVALID_ARGUMENT", f"traffic_split names unknown deployed models {unknown}"
            )
        out = {k: int(v) for k, v in split.items()}
        if out and sum(out.values()) != 100:
            raise ApiError(400, "INVALID_ARGUMENT", f"traffic_split must add up to 100, not {out}")
        return out

    def _deploy_model(self, r: Request, loc: str, id: str) -> dict:
        ep = self._endpoint(loc, id)
        if self._deploy_failures:
            failure = self._deploy_failures.pop(0)
            if not failure.in_operation:
                raise ApiError(failure.http, failure.status, failure.message)
            return self._failed_operation(loc, failure, "DeployModelOperationMetadata")
        body = r.body or {}
        deployed = dict(body.get("deployedModel") or {})
        version = self._deployed_version(loc, deployed.get("model") or "")
        deployed_id = self._new_id()
        deployed.update(id=deployed_id, createTime=_now(), modelVersionId=version)
        known = {d["id"] for d in ep.get("deployedModels", [])} | {deployed_id}
        split = self._check_split(
            {
                (deployed_id if k == "0" else k): v
                for k, v in (body.get("trafficSplit") or {}).items()
            },
            known,
        )
        if not split:
            split = {deployed_id: 100}
        ep.setdefault("deployedModels", []).append(deployed)
        ep["trafficSplit"] = split
        ep["updateTime"] = _now()
        return self._operation(
            loc,
            {"@type": f"{API}.DeployModelResponse", "deployedModel": deployed},
            "DeployModelOperationMetadata",
        )

    def _deployed_version(self, loc: str, model: str) -> str:
        """The version id a deployModel request's ``model`` names (``.../models/ID``: the
        default version, ``ID@VERSION`` or ``ID@ALIAS``), as the API checks it."""
        m = re.fullmatch(r"projects/[^/]+/locations/[^/]+/models/([^/@]+)(?:@(.+))?", model)
        if not m:
            raise ApiError(400, "INVALID_ARGUMENT", f"deployed_model.model {model!r} is invalid")
        model_id, ver = m.groups()
        if model_id not in self.state.models:
            raise ApiError(404, "NOT_FOUND", f"model {model} not found")
        if ver is None:
            return self.state.models[model_id]["versionId"]
        for v in self.state.model_versions[model_id]:
            if v["versionId"] == ver or ver in v["versionAliases"]:
                return v["versionId"]
        raise ApiError(404, "NOT_FOUND", f"model {model} not found")

    def _undeploy_model(self, r: Request, loc: str, id: str) -> dict:
        """Like the API: a given trafficSplit replaces the endpoint's; the deployed model must be
        left with no traffic; undeploying the last one leaves the split empty."""
        ep = self._endpoint(loc, id)
        body = r.body or {}
        deployed_id = body.get("deployedModelId")
        models = ep.get("deployedModels", [])
        if not deployed_id or deployed_id not in {d["id"] for d in models}:
            raise ApiError(
                404, "NOT_FOUND", f"deployed model {deployed_id!r} not found on {ep['name']}"
            )
        remaining = [d for d in models if d["id"] != deployed_id]
        split = dict(ep.get("trafficSplit") or {})
        if "trafficSplit" in body:
            split = self._check_split(body["trafficSplit"] or {}, {d["id"] for d in models})
        if split.get(deployed_id):
            raise ApiError(
                400,
                "FAILED_PRECONDITION",
                f"deployed model {deployed_id} still has {split[deployed_id]}% of the traffic",
            )
        split.pop(deployed_id, None)
        ep["deployedModels"] = remaining
        ep["trafficSplit"] = split if remaining else {}
        ep["updateTime"] = _now()
        return self._operation(
            loc, {"@type": f"{API}.UndeployModelResponse"}, "UndeployModelOperationMetadata"
        )
