from pathlib import Path

import pytest
import yaml

from torchkfp.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_local_yaml_spells_out_the_embedded_defaults():
    assert Config.load(ROOT / "configs/local.yaml", resolve_paths=False) == Config()


def test_vertex_example_loads_and_is_a_cloud_config():
    cfg = Config.load(ROOT / "configs/vertex.example.yaml", resolve_paths=False)
    assert cfg.warehouse.backend == "bigquery"
    assert cfg.deploy.registry == "vertex"
    assert cfg.vertex.pipeline_root.startswith("gs://")


def test_json_round_trip():
    cfg = Config().override({"train.epochs": 3, "vertex.labels": {"team": "ml"}})
    assert Config.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"train": {"epochs": 0}}, "train.epochs must be >= 1"),
        ({"train": {"epoch": 3}}, "unknown setting(s) ['epoch']"),
        ({"bogus": {}}, "unknown setting(s) ['bogus']"),
        ({"train": {"epochs": "3"}}, "train.epochs='3' must be an integer"),
        ({"data": {"start_date": "2013-13-01"}}, "not an ISO date"),
        ({"data": {"test_start": "2013-09-01"}}, "start_date < validation_start < test_start"),
        ({"warehouse": {"backend": "bigquery"}}, "warehouse.project is required"),
        ({"warehouse": {"source_dataset": "x; DROP TABLE y"}}, "is not a dataset name"),
        ({"vertex": {"pipeline_root": "/tmp/x"}}, "must be a gs:// URI"),
        ({"data": {"label": "carrier"}}, "is also listed as a feature"),
        ({"deploy": {"registry": "s3"}}, "use 'local' or 'vertex'"),
    ],
)
def test_bad_values_fail_on_load_with_a_specific_message(raw, message):
    with pytest.raises(ConfigError) as e:
        Config.from_dict(raw)
    assert message in str(e.value)


def test_load_resolves_relative_paths_and_reports_missing_file(tmp_path, monkeypatch):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"deploy": {"registry_dir": "reg"}}))
    monkeypatch.chdir(tmp_path)
    cfg = Config.load(p)
    assert cfg.deploy.registry_dir == str(tmp_path / "reg")
    with pytest.raises(ConfigError, match="does not exist"):
        Config.load(tmp_path / "missing.yaml")
