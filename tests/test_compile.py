"""Compiling the pipelines: both targets, compile.py, the Vertex custom job, and cache keys that
follow each stage's own settings and the data."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kfp.components import load_component_from_file
from torchkfp.pipelines.compiler import compile_pipeline, compile_pipelines

from torchkfp.config import Config
from torchkfp.stage_settings import (
    PIPELINE_SECTIONS,
    STAGE_SECTIONS,
    parameter_name,
    section_parameter,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vertex_cfg() -> Config:
    return Config.load(ROOT / "configs/vertex.example.yaml", resolve_paths=False)


def compiled(target: str, cfg: Config, path: Path) -> dict:
    return yaml.safe_load(Path(compile_pipeline(target, cfg, path)).read_text())


def resolved_tasks(spec: dict) -> dict[str, dict]:
    """Every task of the compiled pipeline (condition branches included) with what its cache
    key is made of: the component and executor it runs, and its input parameters resolved to
    the values a run with the pipeline's defaults gives them."""
    out: dict[str, dict] = {}

    def walk(component: dict, scope: dict) -> None:
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            values = {}
            for key, v in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in v:
                    values[key] = scope[v["componentInputParameter"]]
                elif "runtimeValue" in v:
                    values[key] = v["runtimeValue"].get("constant")
                else:
                    values[key] = v  # another task's output: same reference in both
            comp = spec["components"][task["componentRef"]["name"]]
            if "dag" in comp:  # a condition branch: its tasks see these values
                walk(comp, values)
                continue
            exe = spec["deploymentSpec"]["executors"][comp["executorLabel"]]
            out[name] = {
                "parameters": values,
                "artifacts": task.get("inputs", {}).get("artifacts", {}),
                "component": {k: v for k, v in comp.items() if k != "executorLabel"},
                "executor": exe,
                "caching": task.get("cachingOptions", {}),
            }

    root_defaults = {
        n: d.get("defaultValue") for n, d in spec["root"]["inputDefinitions"]["parameters"].items()
    }
    walk(spec["root"], root_defaults)
    return out


def test_each_stage_gets_only_its_own_sections(tmp_path, vertex_cfg):
    tasks = resolved_tasks(compiled("local", vertex_cfg, tmp_path / "l.yaml"))
    for stage, sections in STAGE_SECTIONS.items():
        got = {p for p in tasks[stage]["parameters"] if p.endswith("_config")}
        assert got == {parameter_name(s) for s in sections}, stage
        for s in sections:
            value = tasks[stage]["parameters"][parameter_name(s)]
            assert value == section_parameter(vertex_cfg.section(s))
            section = type(vertex_cfg.section(s))
            assert section.from_dict(value) == vertex_cfg.section(s)  # what the stage rebuilds


def test_gate_and_deploy_settings_change_only_evaluate_and_deploy(tmp_path, vertex_cfg):
    """The compile-twice proof: on Vertex a task's cache key is its component plus its resolved
    inputs; different gate/deploy settings leave every task before evaluation identical."""
    other = vertex_cfg.override(
        {
            "evaluate.champion_margin": 0.01,
            "evaluate.min_metrics": {"roc_auc": 0.65},
            "vertex.traffic_percentage": 10,
            "vertex.serving_machine_type": "n1-standard-4",
            "deploy.alias": "prod",
        }
    )
    a = resolved_tasks(compiled("vertex", vertex_cfg, tmp_path / "a.yaml"))
    b = resolved_tasks(compiled("vertex", other, tmp_path / "b.yaml"))
    assert (
        set(a) == set(b) == {"fingerprint", "ingest", "preprocess", "train", "evaluate", "deploy"}
    )
    for name in ("fingerprint", "ingest", "preprocess", "train"):
        assert a[name] == b[name], name
    assert a["evaluate"]["parameters"] != b["evaluate"]["parameters"]
    assert a["deploy"]["parameters"] != b["deploy"]["parameters"]
    # and a training setting changes training, not ingestion or preprocessing
    c = resolved_tasks(
        compiled("vertex", vertex_cfg.override({"train.epochs": 3}), tmp_path / "c.yaml")
    )
    assert a["ingest"] == c["ingest"] and a["preprocess"] == c["preprocess"]
    assert a["train"] != c["train"]


def test_pipeline_parameters_are_the_sections(tmp_path, vertex_cfg):
    spec = compiled("vertex", vertex_cfg, tmp_path / "v.yaml")
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {parameter_name(s) for s in PIPELINE_SECTIONS}
    assert params["train_config"]["defaultValue"] == section_parameter(vertex_cfg.train)
    assert params["vertex_config"]["defaultValue"]["project"] == vertex_cfg.vertex.project
    assert params["train_config"]["parameterType"] == "STRUCT"


def task_graph(spec: dict) -> tuple[dict[str, bool], list[tuple[str, str, str]]]:
    """(caching enabled per executor task, artifact edges (consumer, input, producer)) of a
    compiled pipeline, condition branches included: an artifact reaching a task inside a
    branch through the branch's inputs is traced back to the task that produced it."""
    caching: dict[str, bool] = {}
    edges: list[tuple[str, str, str]] = []

    def walk(component: dict, scope: dict[str, str]) -> None:
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            producers = {}
            for key, a in task.get("inputs", {}).get("artifacts", {}).items():
                if "taskOutputArtifact" in a:
                    producers[key] = a["taskOutputArtifact"]["producerTask"]
                elif "componentInputArtifact" in a:
                    producers[key] = scope[a["componentInputArtifact"]]
            comp = spec["components"][task["componentRef"]["name"]]
            if "dag" in comp:  # a condition branch: its tasks see these artifacts
                walk(comp, producers)
                continue
            caching[name] = bool(task.get("cachingOptions", {}).get("enableCache"))
            edges.extend((name, key, producer) for key, producer in producers.items())

    walk(spec["root"], {})
    return caching, edges


def cached_consumers_of_uncached_artifacts(spec: dict) -> list[tuple[str, str, str]]:
    """On Vertex AI a task's cache key holds its input artifacts' ids; an uncached producer
    makes a new artifact every run, so a cached consumer of it could never hit."""
    caching, edges = task_graph(spec)
    return [(c, k, p) for c, k, p in edges if caching[c] and not caching[p]]


def test_vertex_caching_follows_the_source_fingerprint(tmp_path, vertex_cfg):
    spec = compiled("vertex", vertex_cfg, tmp_path / "v.yaml")
    caching, edges = task_graph(spec)
    assert caching == {
        "fingerprint": False,  # cheap, and how a run notices that the data changed
        "ingest": True,
        "preprocess": True,
        "train": True,
        "evaluate": False,  # the champion may have moved
        "deploy": False,
    }
    assert ("deploy", "model", "train") in edges  # traced through the promote branch
    assert ("evaluate", "dataset", "ingest") in edges
    assert cached_consumers_of_uncached_artifacts(spec) == []
    # the fingerprint reaches ingest as a parameter (its value is in ingest's cache key) ...
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["fingerprint"]["inputs"].get("artifacts") is None
    fp = tasks["ingest"]["inputs"]["parameters"]["source_fingerprint"]
    assert fp == {
        "taskOutputParameter": {"outputParameterKey": "fingerprint", "producerTask": "fingerprint"}
    }
    # ... and ingest's fingerprint of the rows it wrote reaches preprocess and train
    for name in ("preprocess", "train"):
        fp = tasks[name]["inputs"]["parameters"]["data_fingerprint"]["taskOutputParameter"]
        assert fp == {"outputParameterKey": "fingerprint", "producerTask": "ingest"}

    # vertex.enable_caching=false compiles every step uncached
    off = compiled(
        "vertex", vertex_cfg.override({"vertex.enable_caching": False}), tmp_path / "o.yaml"
    )
    assert not any(task_graph(off)[0].values())


def test_the_caching_check_finds_a_cached_consumer_of_an_uncached_artifact(tmp_path):
    """The check above can fail: the shape this project had before (ingest uncached,
    preprocess cached) is caught."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11")
    def make(out: dsl.Output[dsl.Dataset]):
        pass

    @dsl.component(base_image="python:3.11")
    def use(inp: dsl.Input[dsl.Dataset]):
        pass

    @dsl.pipeline(name="shape")
    def shape(go: bool = True):
        made = make().set_caching_options(False)
        with dsl.If(go == True):  # noqa: E712 (an artifact passed into a branch)
            use(inp=made.outputs["out"]).set_caching_options(True)

    path = tmp_path / "shape.yaml"
    compiler.Compiler().compile(shape, str(path))
    spec = yaml.safe_load(path.read_text())
    assert cached_consumers_of_uncached_artifacts(spec) == [("use", "inp", "make")]


def test_compile_both_targets_and_load_back(tmp_path, small_config, vertex_cfg):
    paths = compile_pipelines(small_config, vertex_cfg, tmp_path)
    for path in paths.values():
        comp = load_component_from_file(path)
        assert comp.name == "torchkfp-flights-delay"
        assert "train_config" in comp.component_spec.inputs
    spec = yaml.safe_load(Path(paths["vertex"]).read_text())
    text = Path(paths["vertex"]).read_text()
    # training runs as a Vertex custom job with chief + workers on GPUs, in our image
    train_exe = resolved_tasks(spec)["train"]["executor"]["container"]
    assert "custom_job" in " ".join(train_exe.get("command", []) + train_exe.get("args", []))
    assert "NVIDIA_TESLA_T4" in text and "n1-standard-8" in text
    assert vertex_cfg.vertex.training_image in text
    local = Path(paths["local"]).read_text()
    assert "custom_job" not in local
    assert "condition" in text  # the promotion gate wraps deployment


def test_compile_py_writes_both_yamls(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "compile.py"), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
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
    cfg = small_config.override(
        {
            "vertex.replica_count": 3,
            "vertex.training_image": "example.com/img:1",
            "vertex.machine_type": "a2-highgpu-1g",
            "vertex.accelerator_type": "NVIDIA_TESLA_A100",
        }
    )
    pools = _worker_pools(compiled("vertex", cfg, tmp_path / "v.yaml"))
    assert [p["replica_count"] for p in pools] == [1, 2]  # chief + 2 workers
    for p in pools:
        assert p["machine_spec"] == {
            "machine_type": "a2-highgpu-1g",
            "accelerator_type": "NVIDIA_TESLA_A100",
            "accelerator_count": 1,
        }
        assert p["container_spec"]["image_uri"] == "example.com/img:1"
    assert _worker_pools(compiled("local", cfg, tmp_path / "l.yaml")) is None


def test_unset_settings_survive_the_trip_through_pipeline_parameters():
    """Struct parameters hold no null and every number as a double: each section is rebuilt
    inside its component exactly as configured."""
    from torchkfp.stage_settings import pipeline_parameters

    cfg = Config().override(
        {
            "warehouse.duckdb_path": None,
            "warehouse.query_file": None,
            "warehouse.table": "mine",
            "warehouse.tables": {"mine": "/data/mine.parquet"},
            "split.strategy": "hash",
            "split.column": None,
            "split.validation_start": None,
            "split.test_start": None,
            "train.model_args": {"width": 8, "scale": 0.5},
        }
    )
    params = pipeline_parameters(cfg)
    assert None not in params["warehouse_config"].values()
    struct = yaml.safe_load(yaml.safe_dump(params).replace(": 8\n", ": 8.0\n"))  # as a double
    assert struct["train_config"]["model_args"]["width"] == 8.0
    for name in PIPELINE_SECTIONS:
        section = cfg.section(name)
        assert type(section).from_dict(struct[parameter_name(name)]) == section, name
