from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output
from torchkfp.components._base import component


@component
def evaluate(
    evaluate_config: dict,
    deploy_config: dict,
    vertex_config: dict,
    model: Input[Model],
    dataset: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Artifact],
    html_report: Output[HTML],
) -> bool:
    """Test metrics for the candidate (and the registry's champion); returns the promotion
    decision.

    evaluate_config: the config's ``evaluate`` section (thresholds, champion margin).
    deploy_config, vertex_config: where the registry is, to find the champion (this step
    is never cached). A champion that cannot be used (its artifacts deleted, its alias
    dangling) is "no usable champion": the gate uses the thresholds only and ``notes`` in the
    report and its metadata say why.

    report: the evaluation as JSON (metrics, gate reasons, per-slice metrics); html_report:
    the same as a self-contained HTML page (plots, champion beside candidate, training curves,
    slices), which the Vertex AI console shows.

    The decision is the single return value (``Output``) on purpose: kfp 2.17's local runner
    cannot resolve a dsl.If condition on a named output of a multi-output component."""
    import time

    t0 = time.perf_counter()
    from torchkfp.config import DeployConfig, EvaluateConfig, VertexConfig
    from torchkfp.evaluation import evaluate_against_registry
    from torchkfp.registry import open_registry

    registry = open_registry(
        DeployConfig.from_dict(deploy_config), VertexConfig.from_dict(vertex_config)
    )
    r = evaluate_against_registry(
        EvaluateConfig.from_dict(evaluate_config), registry, model.path, dataset.path
    )
    for k, v in r.metrics.items():
        metrics.log_metric(k, v)
    if r.champion_metrics:
        metrics.log_metric(f"champion_{r.metric}", r.champion_metrics[r.metric])
    if r.roc:  # binary
        classification_metrics.log_roc_curve(*r.roc_columns())
    if r.confusion:  # binary and multi-class
        classification_metrics.log_confusion_matrix(*r.confusion_matrix())
    r.save(report.path)
    r.save_html(html_report.path)
    html_report.metadata.update(
        {"promote": r.promote, "metric": r.metric, r.metric: r.metrics.get(r.metric)}
    )
    report.metadata.update(
        {
            "task": r.task,
            "metric": r.metric,
            "promote": r.promote,
            "reasons": r.reasons,
            "notes": r.notes,  # why there is no usable champion, when that is the case
            "blocked_slices": r.blocked_slices(),
            "seconds": time.perf_counter() - t0,
        }
    )
    return r.promote
