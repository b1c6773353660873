"""Two "replicas" of a Vertex AI custom job on one machine: each runs the train component's
body with a CLUSTER_SPEC, as Vertex does; they form one DDP group of world size 2 (gloo); only
the chief writes the model and the KFP outputs; the worker exits 0 writing nothing."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from torchkfp import artifacts
from torchkfp.artifacts import model as model_artifact
from torchkfp.stage_settings import section_parameter

pytestmark = pytest.mark.integration

REPLICA = textwrap.dedent(
    """
    import json, sys
    from kfp import dsl
    from torchkfp.components import train

    a = json.loads(sys.argv[1])
    art = lambda cls, p: cls(name="x", uri=p)
    model = art(dsl.Model, a["model"])
    out = train.python_func(
        train_config=a["train_config"],
        data_fingerprint=a["fingerprint"],
        features=art(dsl.Dataset, a["features"]),
        transform=art(dsl.Artifact, a["transform"]),
        model=model,
    )
    print("OUTPUTS " + json.dumps({"outputs": list(out), "metadata": model.metadata}))
    """
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_worker_replicas_train_together_and_only_the_chief_reports(
    tmp_path, stage_outputs
):
    cfg = stage_outputs["config"].override({"train.nproc_per_node": 1, "train.epochs": 2})
    port = _port()
    cluster = {"workerpool0": [f"127.0.0.1:{port}"], "workerpool1": [f"127.0.0.1:{_port()}"]}
    args = json.dumps(
        {
            "train_config": section_parameter(cfg.train),
            "fingerprint": stage_outputs["fingerprint"],
            "features": stage_outputs["features"],
            "transform": stage_outputs["transform"],
            "model": str(tmp_path / "model"),  # one shared path, as on GCS
        }
    )
    procs = []
    for pool in ("workerpool1", "workerpool0"):  # the worker starts first: replicas race
        spec = {"cluster": cluster, "task": {"type": pool, "index": 0}}
        env = {**os.environ, "CLUSTER_SPEC": json.dumps(spec)}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", REPLICA, args],
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    (w_out, w_err), (c_out, c_err) = (p.communicate(timeout=300) for p in procs)
    assert procs[0].returncode == 0, w_err[-3000:]
    assert procs[1].returncode == 0, c_err[-3000:]
    assert "OUTPUTS" not in w_out  # the worker wrote no KFP outputs
    chief = json.loads(c_out.split("OUTPUTS ", 1)[1])
    world_size, samples_per_s, _ = chief["outputs"]
    assert world_size == 2 and samples_per_s > 0
    assert chief["metadata"]["world_size"] == 2
    meta = artifacts.require(tmp_path / "model", model_artifact.KIND)
    assert meta["training"]["world_size"] == 2 and meta["training"]["epochs_run"] == 2
