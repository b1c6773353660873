"""Each KFP component through ``.python_func`` with real artifact objects, plus compile tests."""

from pathlib import Path

import pytest
from kfp import dsl
from torchkfp.components import (
    BASE_IMAGE,
    DeployLocalOp,
    EvaluateOp,
    IngestOp,
    PreprocessOp,
    TrainOp,
)

from torchkfp import artifacts


def art(cls, path: Path):
    return cls(name=path.name, uri=str(path))


def test_components_chain_through_python_func(tmp_path, small_config):
    cj = small_config.to_json()
    ds = art(dsl.Dataset, tmp_path / "dataset")
    fp, rows, _ = IngestOp.python_func(config_json=cj, dataset=ds)
    assert rows == sum(ds.metadata["rows"].values()) and ds.metadata["fingerprint"] == fp
    tf, feats = art(dsl.Artifact, tmp_path / "transform"), art(dsl.Dataset, tmp_path / "features")
    PreprocessOp.python_func(
        config_json=cj, data_fingerprint=fp, dataset=ds, transform=tf, features=feats
    )
    model = art(dsl.Model, tmp_path / "model")
    world, sps, _ = TrainOp.python_func(
        config_json=cj, data_fingerprint=fp, features=feats, transform=tf, model=model
    )
    assert world == 2 and sps > 0 and model.metadata["world_size"] == 2
    m, cm = art(dsl.Metrics, tmp_path / "metrics"), art(dsl.ClassificationMetrics, tmp_path / "cm")
    report = art(dsl.Artifact, tmp_path / "report.json")
    promote = EvaluateOp.python_func(
        config_json=cj, model=model, dataset=ds, metrics=m, classification_metrics=cm,
        report=report,
    )  # fmt: skip
    assert promote is True and 0.5 < m.metadata["roc_auc"] < 1
    assert cm.metadata["confusionMatrix"]["annotationSpecs"][1]["displayName"] == "late"
    assert len(cm.metadata["confidenceMetrics"]) > 10
    version, location, _ = DeployLocalOp.python_func(config_json=cj, model=model)
    assert version == "1" and artifacts.require(location, "model")


def test_stages_refuse_inputs_from_another_ingestion(tmp_path, stage_outputs):
    from torchkfp.artifacts import ArtifactError

    cj = stage_outputs["config"].to_json()
    with pytest.raises(ArtifactError, match="different ingestion run"):
        PreprocessOp.python_func(
            config_json=cj, data_fingerprint="0" * 64,
            dataset=art(dsl.Dataset, Path(stage_outputs["dataset"])),
            transform=art(dsl.Artifact, tmp_path / "t"), features=art(dsl.Dataset, tmp_path / "f"),
        )  # fmt: skip
    with pytest.raises(ArtifactError, match="different ingestion run"):
        TrainOp.python_func(
            config_json=cj, data_fingerprint="0" * 64,
            features=art(dsl.Dataset, Path(stage_outputs["features"])),
            transform=art(dsl.Artifact, Path(stage_outputs["transform"])),
            model=art(dsl.Model, tmp_path / "m"),
        )  # fmt: skip


def test_data_fingerprint_is_in_the_cache_key_of_preprocess_and_train(tmp_path, small_config):
    import yaml
    from torchkfp.pipelines.compiler import compile_pipeline

    path = compile_pipeline("local", small_config, tmp_path / "p.yaml")
    tasks = yaml.safe_load(Path(path).read_text())["root"]["dag"]["tasks"]
    for name in ("preprocess", "train"):
        fp = tasks[name]["inputs"]["parameters"]["data_fingerprint"]["taskOutputParameter"]
        assert fp == {"outputParameterKey": "fingerprint", "producerTask": "ingest"}
    assert not tasks["ingest"].get("cachingOptions", {}).get("enableCache")  # never cached
    assert tasks["preprocess"]["cachingOptions"]["enableCache"] is True


def test_components_use_the_one_base_image_and_skip_kfp_install():
    for op in (IngestOp, PreprocessOp, TrainOp, EvaluateOp, DeployLocalOp):
        c = op.component_spec.implementation.container
        assert c.image == BASE_IMAGE
        assert "pip install" not in " ".join(c.command)


def test_compile_both_targets_and_load_back(tmp_path, small_config):
    import yaml
    from kfp.components import load_component_from_file
    from torchkfp.pipelines.compiler import compile_pipelines

    from torchkfp.config import Config

    root = Path(__file__).resolve().parents[1]
    vcfg = Config.load(root / "configs/vertex.example.yaml", resolve_paths=False)
    paths = compile_pipelines(small_config, vcfg, tmp_path)
    for path in paths.values():
        comp = load_component_from_file(path)
        assert comp.name == "torchkfp-flights-delay"
        assert "config_json" in comp.component_spec.inputs
    spec = yaml.safe_load(Path(paths["vertex"]).read_text())
    text = Path(paths["vertex"]).read_text()
    # training runs as a Vertex custom job with chief + workers on GPUs, in our image
    job = next(v for k, v in spec["deploymentSpec"]["executors"].items() if "train" in k)[
        "container"
    ]
    assert "custom_job" in " ".join(job.get("command", []) + job.get("args", [])) or (
        "gcpc" in job["image"] or "google-cloud-pipeline-components" in job["image"]
    )
    assert "NVIDIA_TESLA_T4" in text and "n1-standard-8" in text
    assert vcfg.vertex.training_image in text
    assert "deploy-vertex" in text and "deploy-local" not in text
    local = Path(paths["local"]).read_text()
    assert "deploy-local" in local and "custom_job" not in local
    # the promotion gate wraps deployment
    assert "condition" in text


def test_compile_py_writes_both_yamls(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "compile.py"), "--out", str(tmp_path)],
        cwd=root, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert (tmp_path / "flights_delay_vertex.yaml").is_file()
    assert (tmp_path / "flights_delay_local.yaml").is_file()
    assert "vertex:" in out.stdout


def _worker_pools(spec: dict) -> list[dict] | None:
    for comp in spec["components"].values():
        params = comp.get("inputDefinitions", {}).get("parameters", {})
        if "worker_pool_specs" in params:
            return params["worker_pool_specs"]["defaultValue"]
    return None


def test_vertex_training_is_a_multi_replica_custom_job(tmp_path, small_config):
    import yaml
    from torchkfp.pipelines.compiler import compile_pipeline

    cfg = small_config.override({
        "vertex.replica_count": 3, "vertex.training_image": "example.com/img:1",
        "vertex.machine_type": "a2-highgpu-1g", "vertex.accelerator_type": "NVIDIA_TESLA_A100",
    })  # fmt: skip
    spec = yaml.safe_load(Path(compile_pipeline("vertex", cfg, tmp_path / "v.yaml")).read_text())
    pools = _worker_pools(spec)
    assert [p["replica_count"] for p in pools] == [1, 2]  # chief + 2 workers
    for p in pools:
        assert p["machine_spec"] == {
            "machine_type": "a2-highgpu-1g",
            "accelerator_type": "NVIDIA_TESLA_A100",
            "accelerator_count": 1,
        }
        assert p["container_spec"]["image_uri"] == "example.com/img:1"
    local = yaml.safe_load(Path(compile_pipeline("local", cfg, tmp_path / "l.yaml")).read_text())
    assert _worker_pools(local) is None
