"""Where this process sits in the training cluster, and which backend it uses.

Decided once, in the launcher, from the environment: Vertex AI custom jobs describe the
replicas in ``CLUSTER_SPEC`` (workerpool0 = the chief, workerpool1 = the workers); anywhere
else there is one node on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Literal

from torchkfp.config import TrainConfig
from torchkfp.errors import TrainingError


@dataclass(frozen=True)
class Cluster:
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int | None
    """None: pick a free local port."""

    @property
    def is_chief(self) -> bool:
        return self.node_rank == 0


def cluster_from_env(env: dict[str, str] | None = None) -> Cluster:
    """nnodes, node_rank and the rendezvous address of this replica."""
    env = dict(os.environ if env is None else env)
    spec = env.get("CLUSTER_SPEC")
    if not spec:
        return Cluster(nnodes=1, node_rank=0, master_addr="127.0.0.1", master_port=None)
    cs = json.loads(spec)
    cluster = cs["cluster"]
    pools = [p for p in ("workerpool0", "workerpool1") if p in cluster]
    hosts = [h for p in pools for h in cluster[p]]
    task = cs["task"]
    offset = 0
    for p in pools:
        if p == task["type"]:
            break
        offset += len(cluster[p])
    addr, _, port = cluster["workerpool0"][0].partition(":")
    return Cluster(
        nnodes=len(hosts),
        node_rank=offset + int(task["index"]),
        master_addr=addr,
        master_port=int(port) if port else 29500,
    )


def is_chief(env: dict[str, str] | None = None) -> bool:
    """Only the chief replica writes KFP outputs (every replica runs the train component)."""
    return cluster_from_env(env).is_chief


def choose_backend(tc: TrainConfig) -> Literal["nccl", "gloo"]:
    """nccl with CUDA (unless gloo is asked for), else gloo; nccl without CUDA is an error."""
    import torch

    cuda = torch.cuda.is_available()
    if tc.backend == "nccl" and not cuda:
        raise TrainingError("train.backend='nccl' needs CUDA; use 'auto' or 'gloo'")
    return "nccl" if cuda and tc.backend in ("auto", "nccl") else "gloo"


def processes_per_node(tc: TrainConfig, backend: str) -> int:
    """One process per GPU at most with nccl (it refuses two ranks on one GPU); 0 = one per
    GPU. On CPU (gloo): ``nproc_per_node`` processes, 0 = 1."""
    if backend == "nccl":
        import torch

        gpus = torch.cuda.device_count()
        return gpus if tc.nproc_per_node == 0 else min(tc.nproc_per_node, gpus)
    return tc.nproc_per_node or 1
