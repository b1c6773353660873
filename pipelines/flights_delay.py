"""The DAG: ingest -> preprocess -> train (DDP) -> evaluate -> [promote?] deploy.

The local and Vertex targets share every step except two: training (a plain component locally,
a multi-replica GPU custom job on Vertex) and deployment (local registry vs Vertex AI).
"""

import copy

from kfp import dsl
from torchkfp.components import (
    DeployLocalOp,
    DeployVertexOp,
    EvaluateOp,
    IngestOp,
    PreprocessOp,
    TrainOp,
)

from torchkfp.config import Config

PIPELINE_NAME = "torchkfp-flights-delay"


def vertex_train_op(cfg: Config):
    from google_cloud_pipeline_components.v1.custom_job import (
        create_custom_training_job_from_component,
    )

    v = cfg.vertex
    op = TrainOp
    if v.training_image:  # the replicas run the component's own image: set it before wrapping
        op = copy.deepcopy(TrainOp)
        op.component_spec.implementation.container.image = v.training_image
    return create_custom_training_job_from_component(
        op,
        display_name="torchkfp-ddp-train",
        replica_count=v.replica_count,
        machine_type=v.machine_type,
        accelerator_type=v.accelerator_type if v.accelerator_count else "",
        accelerator_count=v.accelerator_count if v.accelerator_type else 0,
        service_account=v.service_account or "",
        network=v.network or "",
        encryption_spec_key_name=v.encryption_key or "",
        # a preempted or failed replica restarts the job; training resumes from its checkpoint
        restart_job_on_worker_restart=True,
        labels=v.labels or None,
    )


def build_pipeline(target: str, cfg: Config):
    """Return the ``@dsl.pipeline`` function for ``target`` ('local' or 'vertex'); ``cfg``
    becomes the default of the pipeline's ``config_json`` parameter."""
    if target not in ("local", "vertex"):
        raise ValueError(f"target={target!r}: use 'local' or 'vertex'")
    train_op = TrainOp if target == "local" else vertex_train_op(cfg)
    deploy_op = DeployLocalOp if target == "local" else DeployVertexOp
    default_config = cfg.to_json()
    image = cfg.vertex.training_image if target == "vertex" else None

    def step(task, name: str):
        task.set_display_name(name)
        if image:
            task.set_container_image(image)
        return task

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="BigQuery table -> preprocessing -> PyTorch DDP training -> evaluation "
        "gate -> model registry and endpoint.",
    )
    def flights_delay_pipeline(config_json: str = default_config):
        ingest = step(IngestOp(config_json=config_json), "ingest")
        # The warehouse may have changed since the last run: never serve ingestion from cache.
        # Its fingerprint output feeds preprocess and train as a parameter, so their cache keys
        # follow the data: unchanged data -> cache hits; changed data -> reruns.
        ingest.set_caching_options(False)
        prep = step(
            PreprocessOp(
                config_json=config_json,
                data_fingerprint=ingest.outputs["fingerprint"],
                dataset=ingest.outputs["dataset"],
            ),
            "preprocess",
        )
        train = train_op(
            config_json=config_json,
            data_fingerprint=ingest.outputs["fingerprint"],
            features=prep.outputs["features"],
            transform=prep.outputs["transform"],
        ).set_display_name("train")
        if target == "vertex":
            train.set_caching_options(cfg.vertex.enable_caching)
        evaluate = step(
            EvaluateOp(
                config_json=config_json,
                model=train.outputs["model"],
                dataset=ingest.outputs["dataset"],
            ),
            "evaluate",
        )
        evaluate.set_caching_options(False)  # the champion it compares against may have moved
        with dsl.If(evaluate.outputs["Output"] == True, name="promote"):  # noqa: E712
            deploy = step(
                deploy_op(config_json=config_json, model=train.outputs["model"]), "deploy"
            )
            deploy.set_caching_options(False)

    return flights_delay_pipeline
