"""The ``tune`` section: the hyperparameter search of ``torchkfp tune`` (locally with Optuna,
or as a Vertex AI hyperparameter tuning job) over ``train`` settings.

The search space is :data:`DEFAULT_SPACE` with ``tune.space`` laid over it, one entry per
``train`` setting:

- ``{low: 1e-4, high: 1e-2, log: true}``: a number between ``low`` and ``high`` (an integer
  setting draws integers), log-uniform with ``log: true``;
- ``{choices: [[128, 64], [256, 128]]}``: one of the listed values;
- ``null``: take the setting out of the search (the ``train`` value is used).

Example (YAML)::

    tune:
      n_trials: 12
      parallel_trials: 2
      epochs: 4
      space:
        learning_rate: {low: 0.001, high: 0.01, log: true}
        hidden_sizes: {choices: [[256, 128], [512, 256]]}
        periodic_sigma: null
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from torchkfp.config.base import Float, Int, OptStr, _check, _Section
from torchkfp.config.sections import TrainConfig

if TYPE_CHECKING:
    from typing_extensions import Self

ChoiceValue = bool | int | float | str | list[int]


class ParamSpec(_Section):
    """How one ``train`` setting is searched: a range (``low``, ``high``, ``log``) or a list of
    ``choices``."""

    low: Float | None = None
    """Smallest value of a range."""
    high: Float | None = None
    """Largest value of a range."""
    log: bool = False
    """Draw from the range log-uniformly (``low`` must be > 0)."""
    choices: list[ChoiceValue] | None = None
    """The values to choose from (instead of a range)."""

    @model_validator(mode="after")
    def _range_or_choices(self) -> Self:
        ranged = self.low is not None or self.high is not None
        _check(
            ranged != (self.choices is not None),
            "a search-space entry needs either low and high (a range) or choices (a list), "
            "not both and not neither",
        )
        if self.choices is not None:
            _check(len(self.choices) >= 1, "a search-space entry's choices must not be empty")
        else:
            _check(
                self.low is not None and self.high is not None,
                "a search-space range needs both low and high",
            )
            assert self.low is not None and self.high is not None
            _check(
                self.low <= self.high,
                f"a search-space range needs low <= high "
                f"(got low={self.low:g}, high={self.high:g})",
            )
            _check(not self.log or self.low > 0, "a log-uniform range needs low > 0")
        return self


TUNABLE: tuple[str, ...] = (
    "learning_rate",
    "weight_decay",
    "dropout",
    "hidden_sizes",
    "batch_size",
    "epochs",
    "max_embedding_dim",
    "numeric_embedding",
    "numeric_embedding_dim",
    "periodic_frequencies",
    "periodic_sigma",
    "ensemble_size",
    "unknown_category_rate",
    "patience",
)
"""The ``train`` settings a search may vary (those that change what the model learns; process
counts, seeds and timeouts stay as configured)."""

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "learning_rate": {"low": 3e-4, "high": 1e-2, "log": True},
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "dropout": {"low": 0.0, "high": 0.3},
    "hidden_sizes": {"choices": [[128, 64], [256, 128], [256, 128, 64], [512, 256]]},
    "batch_size": {"choices": [512, 1024, 2048]},
    "numeric_embedding": {"choices": ["none", "periodic"]},
    "numeric_embedding_dim": {"choices": [4, 8, 16]},
    "periodic_sigma": {"low": 0.01, "high": 1.0, "log": True},
}
"""The search space when ``tune.space`` names nothing: the optimizer, regularization, the
network's widths and whether (and how) numeric inputs get periodic embeddings (the
embedding's width and sigma matter only in trials that draw ``periodic``)."""


class TuneConfig(_Section):
    section_name: ClassVar[str] = "tune"

    n_trials: Int = Field(20, ge=1)
    """Trials (training runs) in the search."""
    parallel_trials: Int = Field(1, ge=1)
    """Trials run at once. Locally each trial is one training process with one thread, and
    this is capped at the CPU cores available; on Vertex AI, the parallel trial count."""
    timeout_s: Int | None = Field(None, ge=1)
    """Local search: start no new trial after this many seconds (empty: no limit; the trials
    running finish)."""
    metric: OptStr = None
    """The validation-split metric to optimize (empty: ``evaluate.metric``, else the task's
    gate default: binary ``roc_auc``, multiclass ``log_loss``, regression ``rmse``), in its
    direction (higher roc_auc, lower rmse is better)."""
    epochs: Int | None = Field(None, ge=1)
    """Each trial's ``train.epochs`` (empty: ``train.epochs``), unless ``space`` searches
    ``epochs``, capped by it then."""
    seed: Int = 0
    """Seed of the TPE sampler (the same seed and settings propose the same trials)."""
    startup_trials: Int = Field(5, ge=1)
    """Trials drawn at random before TPE models the results."""
    space: dict[str, ParamSpec | None] = Field(default_factory=dict)
    """Search-space entries laid over the default space (see :mod:`torchkfp.config.tune`):
    ``{low, high, log}`` or ``{choices}`` per ``train`` setting; ``null`` removes a default
    entry."""

    @field_validator("space", mode="before")
    @classmethod
    def _known_settings(cls, v: Any) -> Any:
        if isinstance(v, dict):
            unknown = sorted(str(k) for k in v if k not in TUNABLE)
            _check(
                not unknown,
                f"tune.space: {unknown} not tunable train setting(s); tunable: {list(TUNABLE)}",
            )
            parsed: dict[str, ParamSpec | None] = {}
            for name, entry in v.items():
                if entry is None or isinstance(entry, ParamSpec):
                    parsed[name] = entry
                    continue
                try:
                    parsed[name] = ParamSpec.from_dict(entry) if isinstance(entry, dict) else None
                except ValueError as e:
                    _check(False, f"tune.space.{name}: {e}")
                _check(
                    isinstance(entry, dict),
                    f"tune.space.{name}={entry!r}: write {{low, high, log}}, {{choices: [...]}} "
                    "or null",
                )
            return parsed
        return v

    @model_validator(mode="after")
    def _valid_values(self) -> Self:
        search = self.search_space()
        _check(bool(search), "tune.space removes every entry: leave at least one to search")
        for name, spec in search.items():
            values: list[Any] = (
                list(spec.choices) if spec.choices is not None else [spec.low, spec.high]
            )
            if spec.choices is None and _is_int(name):
                values = [int(v) for v in values if float(v).is_integer()] or [None]
                _check(
                    len(values) == 2,
                    f"tune.space.{name}: train.{name} is an integer; give whole low and high",
                )
            for value in values:
                try:
                    TrainConfig.from_dict({name: value})
                except ValueError as e:
                    _check(False, f"tune.space.{name}: value {value!r} is not valid: {e}")
        return self

    def search_space(self) -> dict[str, ParamSpec]:
        """The effective space: the defaults with ``space`` laid over them."""
        merged: dict[str, ParamSpec | None] = {
            k: ParamSpec.from_dict(v) for k, v in DEFAULT_SPACE.items()
        }
        merged.update(self.space)
        return {k: v for k, v in merged.items() if v is not None}


def _is_int(name: str) -> bool:
    """A ``train`` setting that holds an integer (its default is one)."""
    default = TrainConfig.model_fields[name].default
    return isinstance(default, int) and not isinstance(default, bool)
