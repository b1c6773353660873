from typing import NamedTuple

from torchkfp.components._base import component


@component
def batch_predict(
    batch_config: dict,
    warehouse_config: dict,
    evaluate_config: dict,
    deploy_config: dict,
    vertex_config: dict,
) -> NamedTuple("BatchOutputs", rows=int, output=str, model=str, seconds=float):
    """Score ``batch.input`` with the model (``batch.model``, else the registry's
    ``batch.alias`` / ``deploy.alias`` version) and write key columns + predictions to
    ``batch.output`` (Parquet, a DuckDB table or a BigQuery table), in chunks.

    batch_config: the config's ``batch`` section (model or alias, input, output, key columns,
    chunk rows, if_exists, threshold).
    warehouse_config: the warehouse that tables and queries are read from and written to.
    evaluate_config: ``evaluate.threshold``, the binary threshold unless ``batch.threshold``.
    deploy_config, vertex_config: the registry that resolves the alias.
    """
    from torchkfp.batch_predict import run_batch
    from torchkfp.config import DeployConfig, EvaluateConfig, VertexConfig, WarehouseConfig
    from torchkfp.config.batch import BatchConfig

    r = run_batch(
        BatchConfig.from_dict(batch_config),
        WarehouseConfig.from_dict(warehouse_config),
        DeployConfig.from_dict(deploy_config),
        VertexConfig.from_dict(vertex_config),
        default_threshold=EvaluateConfig.from_dict(evaluate_config).threshold,
    )
    return (r.rows, r.output, r.model, r.seconds)
