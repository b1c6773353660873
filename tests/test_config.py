import json
from pathlib import Path

import pytest
import yaml

from torchkfp.config import SECTIONS, Config, ConfigError, TrainConfig, validate_for_vertex

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
        ({"split": {"validation_start": "2013-13-01"}}, "not an ISO date"),
        ({"split": {"test_start": "2013-09-01"}}, "must satisfy validation_start < test_start"),
        ({"data": {"start_date": "2013-01-01"}}, "unknown setting(s) ['start_date'] in data"),
        ({"split": {"column": "a b"}}, "split.column='a b' is not a column name"),
        ({"warehouse": {"table": "t; DROP", "query_file": None}}, "is not a table name"),
        ({"warehouse": {"backend": "bigquery"}}, "warehouse.project is required"),
        ({"warehouse": {"source_dataset": "x; DROP TABLE y"}}, "is not a dataset name"),
        ({"vertex": {"pipeline_root": "/tmp/x"}}, "must be a gs:// URI"),
        ({"data": {"label": "carrier"}}, "is also listed as a feature"),
        ({"deploy": {"registry": "s3"}}, "use 'local' or 'vertex'"),
        ({"train": {"epochs": 2.5}}, "train.epochs=2.5 must be an integer"),
        ({"train": {"epochs": True}}, "train.epochs=True must be an integer"),
        ({"train": {"hidden_sizes": [64, 2.5]}}, "train.hidden_sizes[1]=2.5 must be an integer"),
        ({"train": {"hidden_sizes": [64, 0]}}, "train.hidden_sizes must be positive"),
        ({"evaluate": {"threshold": True}}, "evaluate.threshold=True must be a number"),
        ({"train": {"learning_rate": "nan"}}, "train.learning_rate='nan' must be a finite number"),
        ({"train": {"dropout": 1.0}}, "train.dropout must be in [0, 1)"),
        ({"vertex": {"traffic_percentage": 0}}, "vertex.traffic_percentage must be in (0, 100]"),
        ({"train": {"nproc_per_node": -1}}, "train.nproc_per_node must be >= 0 (0: one per GPU)"),
        ({"train": {"epochs": None}}, "train.epochs must not be empty"),
        ({"data": {"label": 1}}, "data.label=1 must be a string"),
        ({"data": {"numeric_features": "distance"}}, "data.numeric_features must be a list"),
        ({"train": 3}, "train must be a mapping, got int"),
        ({"vertex": {"labels": {"Team": "ml"}}}, "vertex.labels: Team='ml' is not a valid label"),
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


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_exponent_without_a_dot_is_a_float_though_yaml_reads_a_string(tmp_path):
    text = "train:\n  learning_rate: 3e-4\n"
    assert yaml.safe_load(text)["train"]["learning_rate"] == "3e-4"  # YAML 1.1: not a float
    cfg = Config.load(write(tmp_path, text), resolve_paths=False)
    assert cfg.train.learning_rate == pytest.approx(3e-4)
    assert type(cfg.train.learning_rate) is float


def test_a_word_for_a_number_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError) as e:
        Config.load(write(tmp_path, "train:\n  learning_rate: abc\n"))
    assert str(e.value) == "train.learning_rate='abc' must be a number"


def test_an_unknown_key_names_its_section_and_the_valid_keys():
    with pytest.raises(ConfigError) as e:
        Config.from_dict({"evaluate": {"threshold": 0.5, "treshold": 0.4}})
    assert str(e.value) == (
        "unknown setting(s) ['treshold'] in evaluate; "
        "valid: ['champion_margin', 'max_metrics', 'metric', 'min_metrics', 'slice_columns', "
        "'slice_min_examples', 'slice_tolerance', 'threshold']"
    )


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"train": {"backend": "mpi"}}, "train.backend='mpi': use 'auto', 'gloo' or 'nccl'"),
        ({"warehouse": {"backend": "sqlite"}}, "warehouse.backend='sqlite': use 'duckdb' or"),
        ({"deploy": {"registry": "s3"}}, "deploy.registry='s3': use 'local' or 'vertex'"),
    ],
)
def test_a_bad_choice_lists_the_choices(raw, message):
    with pytest.raises(ConfigError) as e:
        Config.from_dict(raw)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("name", SECTIONS)
def test_each_section_rebuilds_itself_from_its_dict(name):
    cfg = Config.load(ROOT / "configs/vertex.example.yaml", resolve_paths=False)
    section = cfg.section(name)
    d = section.to_dict()
    assert json.loads(json.dumps(d)) == d  # JSON-safe: what a pipeline component receives
    assert type(section).from_dict(d) == section
    assert type(section).from_dict(None) == type(section)()
    assert getattr(Config.from_dict({name: d}), name) == section


def test_a_section_on_its_own_reports_errors_with_its_name():
    assert TrainConfig.from_dict({"epochs": 3}).epochs == 3
    with pytest.raises(ConfigError, match=r"^train\.epochs must be >= 1$"):
        TrainConfig.from_dict({"epochs": 0})
    with pytest.raises(ConfigError, match=r"^unknown setting\(s\) \['epoch'\] in train; valid"):
        TrainConfig.from_dict({"epoch": 3})


def test_sections_in_order_and_frozen():
    names = "warehouse data split preprocess train evaluate deploy vertex run batch tune"
    assert SECTIONS == tuple(names.split())
    cfg = Config()
    assert cfg.section("train") is cfg.train
    with pytest.raises(ConfigError, match="unknown section 'training'"):
        cfg.section("training")
    with pytest.raises(ValueError, match="frozen"):
        cfg.train.epochs = 3


def test_dates_written_bare_in_yaml_are_accepted(tmp_path):
    text = (
        "warehouse:\n  query_parameters:\n    start_date: 2013-02-01\n    end_date: 2013-12-30\n"
        "split:\n  validation_start: 2013-10-01\n  test_start: 2013-11-01\n"
    )
    raw = yaml.safe_load(text)
    assert type(raw["warehouse"]["query_parameters"]["start_date"]).__name__ == "date"
    assert type(raw["split"]["test_start"]).__name__ == "date"
    cfg = Config.load(write(tmp_path, text), resolve_paths=False)
    assert cfg.warehouse.query_parameters == {"start_date": "2013-02-01", "end_date": "2013-12-30"}
    assert (cfg.split.validation_start, cfg.split.test_start) == ("2013-10-01", "2013-11-01")
    assert json.loads(cfg.to_json())["warehouse"]["query_parameters"]["start_date"] == "2013-02-01"


def test_an_empty_section_takes_the_defaults(tmp_path):
    cfg = Config.load(write(tmp_path, "train:\nevaluate:\n  threshold: 0.4\n"))
    assert cfg.train == TrainConfig()
    assert cfg.evaluate.threshold == 0.4


def test_override_validates_again():
    base = Config()
    assert base.override({"train.epochs": 2}).train.epochs == 2
    assert base.train.epochs == 6  # a copy
    with pytest.raises(ConfigError, match=r"^train\.epochs must be >= 1$"):
        base.override({"train.epochs": 0})
    with pytest.raises(ConfigError, match="validation_start < test_start"):
        base.override({"split.test_start": "2013-09-01"})
    with pytest.raises(ConfigError, match="unknown setting 'train.epoch'"):
        base.override({"train.epoch": 2})
    with pytest.raises(ConfigError, match="unknown setting 'train'"):
        base.override({"train": {"epochs": 2}})


def test_several_errors_come_as_one_message():
    with pytest.raises(ConfigError) as e:
        Config.from_dict({"train": {"epochs": 0, "dropout": 2}, "bogus": 1})
    assert str(e.value) == (
        "unknown setting(s) ['bogus'] in config; valid: ['batch', 'data', 'deploy', 'evaluate', "
        "'preprocess', 'run', 'split', 'train', 'tune', 'vertex', 'warehouse']; "
        "train.epochs must be >= 1; train.dropout must be in [0, 1)"
    )


def test_json_schema_describes_every_setting():
    schema = Config.model_json_schema()
    lr = schema["$defs"]["TrainConfig"]["properties"]["learning_rate"]
    assert lr["description"] == "Peak AdamW learning rate (linear warmup, cosine decay)."
    assert lr["exclusiveMinimum"] == 0
    backend = schema["$defs"]["TrainConfig"]["properties"]["backend"]
    assert backend["enum"] == ["auto", "gloo", "nccl"]
    for model in [schema, *schema["$defs"].values()]:
        for name, prop in model["properties"].items():
            assert prop.get("description"), f"{model['title']}.{name} has no description"


def test_validate_for_vertex():
    cfg = Config.load(ROOT / "configs/vertex.example.yaml", resolve_paths=False)
    validate_for_vertex(cfg)  # the example is a complete Vertex AI config
    with pytest.raises(ConfigError, match="vertex.project is required to run on Vertex AI"):
        validate_for_vertex(cfg.override({"vertex.project": None}))
    with pytest.raises(ConfigError, match="warehouse.backend='duckdb' cannot run on Vertex AI"):
        validate_for_vertex(cfg.override({"warehouse.backend": "duckdb"}))
    reserved = {"vertex-ai-pipelines-run-billing-id": "x"}
    with pytest.raises(ConfigError, match="is reserved by Vertex AI"):
        validate_for_vertex(cfg.override({"vertex.labels": reserved}))
