"""The KFP components through ``.python_func`` with real artifact objects: what the library
tests cannot see (the components' own checks and container settings). The whole chain runs in
test_pipeline_local.py (kfp.local) and test_component_cli.py; compiling, in test_compile.py."""

from pathlib import Path

import pytest
from kfp import dsl
from torchkfp.components import BASE_IMAGE, deploy, evaluate, fingerprint, ingest, preprocess, train

from torchkfp.errors import ArtifactError
from torchkfp.stage_settings import section_parameter


def art(cls, path: Path):
    return cls(name=path.name, uri=str(path))


def test_stages_refuse_inputs_from_another_ingestion(tmp_path, stage_outputs):
    cfg = stage_outputs["config"]
    with pytest.raises(ArtifactError, match="different ingestion run"):
        preprocess.python_func(
            data_config=section_parameter(cfg.data),
            preprocess_config=section_parameter(cfg.preprocess),
            data_fingerprint="0" * 64,
            dataset=art(dsl.Dataset, Path(stage_outputs["dataset"])),
            transform=art(dsl.Artifact, tmp_path / "t"),
            features=art(dsl.Dataset, tmp_path / "f"),
        )
    with pytest.raises(ArtifactError, match="different ingestion run"):
        train.python_func(
            train_config=section_parameter(cfg.train),
            data_fingerprint="0" * 64,
            features=art(dsl.Dataset, Path(stage_outputs["features"])),
            transform=art(dsl.Artifact, Path(stage_outputs["transform"])),
            model=art(dsl.Model, tmp_path / "m"),
        )
    assert not (tmp_path / "t").exists() and not (tmp_path / "m").exists()


def test_components_use_the_one_base_image_and_skip_kfp_install():
    for op in (fingerprint, ingest, preprocess, train, evaluate, deploy):
        c = op.component_spec.implementation.container
        assert c.image == BASE_IMAGE, op.name
        assert "pip install" not in " ".join(c.command), op.name
