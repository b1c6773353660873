from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output
from torchkfp.components._base import component


@component
def evaluate(
    config_json: str,
    model: Input[Model],
    dataset: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Artifact],
) -> bool:
    """Test metrics for the candidate (and champion); returns the promotion decision.

    The decision is the single return value (``Output``) on purpose: kfp 2.17's local runner
    cannot resolve a dsl.If condition on a named output of a multi-output component."""
    import time

    t0 = time.perf_counter()
    from torchkfp.config import Config
    from torchkfp.evaluate import evaluate as run
    from torchkfp.registry import champion_path

    cfg = Config.from_json(config_json)
    r = run(cfg, model.path, dataset.path, champion_path(cfg))
    for k, v in r.metrics.items():
        metrics.log_metric(k, v)
    if r.champion_metrics:
        metrics.log_metric("champion_roc_auc", r.champion_metrics["roc_auc"])
    classification_metrics.log_roc_curve(*r.roc_columns())
    classification_metrics.log_confusion_matrix(*r.confusion_matrix())
    r.save(report.path)
    report.metadata.update(
        {"promote": r.promote, "reasons": r.reasons, "seconds": time.perf_counter() - t0}
    )
    return r.promote
