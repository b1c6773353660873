"""The model: the built-in tabular MLP (categorical embeddings concatenated with numeric inputs,
then an MLP), or the user's own ``nn.Module`` from a factory named in the config.

Every model takes ``(x_num float32 [N, F], x_cat int64 [N, C])`` and returns logits: ``[N]``
when ``output_size`` is 1 (binary, regression) and ``[N, K]`` for K classes.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from torchkfp.errors import ModelFactoryError


def embedding_dim(cardinality: int, max_dim: int) -> int:
    """fastai's rule of thumb, capped."""
    return max(1, min(max_dim, round(1.6 * cardinality**0.56)))


@dataclass(frozen=True)
class FeatureSpec:
    """What a model factory is given: the shape of the inputs and of the output."""

    num_numeric: int
    """Width of ``x_num`` (standardized numbers plus missing-value flags)."""
    cardinalities: list[int]
    """Embedding table size per column of ``x_cat`` (index 0 = unknown)."""
    task: str
    """``binary``, ``multiclass`` or ``regression``."""
    output_size: int
    """1 (binary: the positive class's logit; regression: the standardized value) or K."""


@dataclass
class ModelSpec:
    num_numeric: int
    cardinalities: list[int]
    hidden_sizes: list[int]
    dropout: float
    max_embedding_dim: int
    task: str = "binary"
    output_size: int = 1
    factory: str | None = None
    """``package.module:function`` of the user's model; None: :class:`TabularMLP`."""
    factory_args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def features(self) -> FeatureSpec:
        return FeatureSpec(self.num_numeric, list(self.cardinalities), self.task, self.output_size)


def build_model(spec: ModelSpec) -> nn.Module:
    """The network ``spec`` describes: the user's factory called with the feature spec and
    its arguments, or the built-in MLP."""
    if spec.factory is None:
        return TabularMLP(spec)
    module_name, _, attr = spec.factory.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ModelFactoryError(
            f"train.model_factory={spec.factory!r} cannot be imported ({type(e).__name__}: "
            f"{e}); the module must be importable where training and serving run (installed "
            "in the image, or on PYTHONPATH)"
        ) from None
    model = fn(spec.features, **spec.factory_args)
    if not isinstance(model, nn.Module):
        raise ModelFactoryError(
            f"train.model_factory={spec.factory!r} returned {type(model).__name__}, not a "
            "torch.nn.Module"
        )
    return model


def output_logits(model: nn.Module, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
    """Run ``model`` and normalize its output: ``[N]`` for one output, ``[N, K]`` otherwise."""
    out = model(x_num, x_cat)
    if out.dim() == 2 and out.shape[1] == 1:
        out = out.squeeze(1)
    return out


class TabularMLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, embedding_dim(c, spec.max_embedding_dim)) for c in spec.cardinalities
        )
        width = spec.num_numeric + sum(e.embedding_dim for e in self.embeddings)
        layers: list[nn.Module] = []
        for h in spec.hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(spec.dropout)]
            width = h
        layers.append(nn.Linear(width, spec.output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings)]
        out = self.mlp(torch.cat(parts, dim=1))
        return out.squeeze(1) if self.spec.output_size == 1 else out
