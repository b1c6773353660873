"""The batch-scoring pipeline: one step (``batch_predict``) that scores ``batch.input`` with the
registry's champion (or ``batch.model``) and writes ``batch.output``; compiled for Vertex AI
(and kfp.local) like the training DAG, and scheduled the same way (``torchkfp schedule create
--pipeline batch``).

Its parameters are the sections the step uses (:data:`torchkfp.batch_predict.BATCH_SECTIONS`),
each a ``<section>_config`` dict whose default is that section of the config it was compiled
with. The step is never cached: the input rows and the champion change between runs.
"""

from pathlib import Path

from kfp import compiler, dsl
from torchkfp.components.batch_predict import batch_predict

from torchkfp.batch_predict import pipeline_parameters
from torchkfp.config import Config
from torchkfp.config.batch import BatchConfig

PIPELINE_SUFFIX = "-batch"
"""The batch pipeline's name is ``run.pipeline_name`` plus this."""


def batch_pipeline_name(cfg: Config) -> str:
    return f"{cfg.run.pipeline_name}{PIPELINE_SUFFIX}"


def build_batch_pipeline(target: str, cfg: Config, batch: BatchConfig | None = None):
    """Return the ``@dsl.pipeline`` function for ``target`` ('local' or 'vertex'); ``cfg``'s
    sections (and its ``batch`` section, or ``batch`` if given) become the parameters'
    defaults."""
    if target not in ("local", "vertex"):
        raise ValueError(f"target={target!r}: use 'local' or 'vertex'")
    defaults = pipeline_parameters(cfg, batch)
    image = cfg.vertex.training_image if target == "vertex" else None

    @dsl.pipeline(
        name=batch_pipeline_name(cfg),
        description="Score a table or files with the registered champion model, in chunks, "
        "and write key columns + predictions (Parquet, DuckDB or BigQuery).",
    )
    def batch_scoring_pipeline(
        batch_config: dict = defaults["batch_config"],
        warehouse_config: dict = defaults["warehouse_config"],
        evaluate_config: dict = defaults["evaluate_config"],
        deploy_config: dict = defaults["deploy_config"],
        vertex_config: dict = defaults["vertex_config"],
    ):
        task = batch_predict(
            batch_config=batch_config,
            warehouse_config=warehouse_config,
            evaluate_config=evaluate_config,
            deploy_config=deploy_config,
            vertex_config=vertex_config,
        )
        task.set_display_name("batch-predict")
        task.set_caching_options(False)  # new rows and a new champion come between runs
        if image:
            task.set_container_image(image)

    return batch_scoring_pipeline


def compile_batch_pipeline(
    target: str, cfg: Config, path: str | Path, batch: BatchConfig | None = None
) -> str:
    """Compile the batch pipeline to ``path`` (written under a temporary name, then renamed).
    For Vertex the effective images (config, else TORCHKFP_*_IMAGE now) go in first."""
    if target == "vertex":
        from torchkfp.images import with_images

        cfg = with_images(cfg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.yaml")  # kfp insists on a .yaml suffix
    compiler.Compiler().compile(build_batch_pipeline(target, cfg, batch), str(tmp))
    tmp.replace(path)
    return str(path)
