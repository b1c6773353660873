"""The DAG: fingerprint -> ingest -> preprocess -> train (DDP) -> evaluate -> [promote?] deploy.

Each config section is one pipeline parameter (``<section>_config``, a dict whose default is
that section of the config the pipeline was compiled with), and each step receives only the
sections it uses (:mod:`torchkfp.stage_settings`). So a step's cache key changes only when
something it uses changes: editing the gate (``evaluate``) or the endpoint (``vertex``)
settings never retrains.

Caching follows the data: ``fingerprint`` (never cached, cheap) computes the source data's
fingerprint and ingest takes it as an input parameter, so with unchanged data and settings
ingest, preprocess and train are cache hits (``vertex.enable_caching``), and changed data reruns
everything from ingest on. No cached step consumes an artifact of an uncached one (a fresh
artifact id would change its cache key every run); evaluate and deploy are never cached (the
champion they compare against and deploy next to may have moved).

The local and Vertex targets share every step except training (a plain component locally, a
multi-replica GPU custom job on Vertex).
"""

import copy

from kfp import dsl
from torchkfp.components import deploy, evaluate, fingerprint, ingest, preprocess, train

from torchkfp.config import Config
from torchkfp.stage_settings import pipeline_parameters

PIPELINE_NAME = "torchkfp-flights-delay"
"""The default ``run.pipeline_name``."""


def vertex_train_op(cfg: Config):
    from google_cloud_pipeline_components.v1.custom_job import (
        create_custom_training_job_from_component,
    )

    v = cfg.vertex
    op = train
    if v.training_image:  # the replicas run the component's own image: set it before wrapping
        op = copy.deepcopy(train)
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
        # Vertex sets AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR from these (the trainer
        # writes there); a fixed folder keeps the step's cache key the same from run to run
        tensorboard=v.tensorboard or "",
        base_output_directory=training_output_directory(cfg),
    )


def training_output_directory(cfg: Config) -> str:
    """The training custom job's base output directory (``vertex.base_output_directory``, else
    ``<vertex.pipeline_root>/training``; empty without a pipeline root)."""
    v = cfg.vertex
    if v.base_output_directory:
        return v.base_output_directory
    return f"{v.pipeline_root.rstrip('/')}/training" if v.pipeline_root else ""


def build_pipeline(target: str, cfg: Config):
    """Return the ``@dsl.pipeline`` function for ``target`` ('local' or 'vertex'); the
    sections of ``cfg`` become the defaults of its parameters."""
    if target not in ("local", "vertex"):
        raise ValueError(f"target={target!r}: use 'local' or 'vertex'")
    train_op = train if target == "local" else vertex_train_op(cfg)
    defaults = pipeline_parameters(cfg)  # one parameter per section: see stage_settings
    image = cfg.vertex.training_image if target == "vertex" else None
    # locally kfp.local does not cache (torchkfp run has its own stage cache): compiled as
    # cached, as on Vertex with its default
    cached = cfg.vertex.enable_caching if target == "vertex" else True

    def step(task, name: str):
        task.set_display_name(name)
        if image:
            task.set_container_image(image)
        return task

    @dsl.pipeline(
        name=cfg.run.pipeline_name,
        description="BigQuery table -> preprocessing -> PyTorch DDP training -> evaluation "
        "gate -> model registry and endpoint.",
    )
    def training_pipeline(
        warehouse_config: dict = defaults["warehouse_config"],
        data_config: dict = defaults["data_config"],
        split_config: dict = defaults["split_config"],
        preprocess_config: dict = defaults["preprocess_config"],
        train_config: dict = defaults["train_config"],
        evaluate_config: dict = defaults["evaluate_config"],
        deploy_config: dict = defaults["deploy_config"],
        vertex_config: dict = defaults["vertex_config"],
    ):
        # Never cached: it is how a run notices that the data changed.
        fp_task = step(
            fingerprint(warehouse_config=warehouse_config, split_config=split_config),
            "fingerprint",
        )
        fp_task.set_caching_options(False)
        ingest_task = step(
            ingest(
                warehouse_config=warehouse_config,
                data_config=data_config,
                split_config=split_config,
                source_fingerprint=fp_task.outputs["fingerprint"],
            ),
            "ingest",
        )
        # ingest's fingerprint of the rows it wrote feeds preprocess and train as a parameter
        # too (they check their inputs against it)
        fingerprint_ = ingest_task.outputs["fingerprint"]
        prep_task = step(
            preprocess(
                data_config=data_config,
                preprocess_config=preprocess_config,
                data_fingerprint=fingerprint_,
                dataset=ingest_task.outputs["dataset"],
            ),
            "preprocess",
        )
        train_task = train_op(
            train_config=train_config,
            data_fingerprint=fingerprint_,
            features=prep_task.outputs["features"],
            transform=prep_task.outputs["transform"],
        ).set_display_name("train")
        for task in (ingest_task, prep_task, train_task):
            task.set_caching_options(cached)
        eval_task = step(
            evaluate(
                evaluate_config=evaluate_config,
                deploy_config=deploy_config,
                vertex_config=vertex_config,
                model=train_task.outputs["model"],
                dataset=ingest_task.outputs["dataset"],
            ),
            "evaluate",
        )
        eval_task.set_caching_options(False)  # the champion it compares against may have moved
        with dsl.If(eval_task.outputs["Output"] == True, name="promote"):  # noqa: E712
            deploy_task = step(
                deploy(
                    deploy_config=deploy_config,
                    vertex_config=vertex_config,
                    model=train_task.outputs["model"],
                ),
                "deploy",
            )
            deploy_task.set_caching_options(False)

    return training_pipeline
