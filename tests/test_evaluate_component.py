"""The evaluate component through ``.python_func`` with real artifact objects: it writes the
HTML report as a KFP ``HTML`` output (what the Vertex AI console shows) with the decision and
the primary metric in its metadata, beside the JSON report."""

from pathlib import Path

from kfp import dsl
from torchkfp.components import evaluate

from torchkfp.stage_settings import section_parameter


def art(cls, path: Path):
    return cls(name=path.name, uri=str(path))


def test_evaluate_writes_the_html_report_output(stage_outputs, tmp_path):
    cfg = stage_outputs["config"].override(
        {
            "deploy.registry_dir": str(tmp_path / "registry"),
            "evaluate.slice_columns": ["origin"],
        }
    )
    out = {
        "metrics": art(dsl.Metrics, tmp_path / "metrics"),
        "classification_metrics": art(dsl.ClassificationMetrics, tmp_path / "cm"),
        "report": art(dsl.Artifact, tmp_path / "report"),
        "html_report": art(dsl.HTML, tmp_path / "evaluate" / "html_report"),
    }
    promote = evaluate.python_func(
        evaluate_config=section_parameter(cfg.evaluate),
        deploy_config=section_parameter(cfg.deploy),
        vertex_config=section_parameter(cfg.vertex),
        model=art(dsl.Model, Path(stage_outputs["model"])),
        dataset=art(dsl.Dataset, Path(stage_outputs["dataset"])),
        **out,
    )
    assert promote is True  # an empty registry: no champion yet
    html = out["html_report"]
    page = Path(html.path).read_text()
    assert page.startswith("<!DOCTYPE html>") and "<td>origin</td><td>EWR</td>" in page
    roc_auc = out["metrics"].metadata["roc_auc"]
    assert html.metadata == {"promote": True, "metric": "roc_auc", "roc_auc": roc_auc}
    assert out["report"].metadata["blocked_slices"] == []
    assert evaluate.component_spec.outputs["html_report"].type == "system.HTML@0.0.1"
