"""The model: the built-in tabular MLP (categorical embeddings concatenated with numeric inputs,
then an MLP), or the user's own ``nn.Module`` from a factory named in the config.

Every model takes ``(x_num float32 [N, F], x_cat int64 [N, C])`` and returns logits: ``[N]``
when ``output_size`` is 1 (binary, regression) and ``[N, K]`` for K classes.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
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
    numeric_embedding: str = "none"
    """Built-in MLP: ``periodic`` (:class:`PeriodicEmbedding` per numeric input) or ``none``
    (the numbers go in as they are). Artifacts written before this setting existed: none."""
    numeric_embedding_dim: int = 8
    periodic_frequencies: int = 8
    periodic_sigma: float = 0.1
    ensemble_size: int = 1
    """Built-in MLP: members of the TabM-mini ensemble (1: a plain MLP). Artifacts written
    before this setting existed: 1."""

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


def ensemble_size(model: nn.Module) -> int:
    """How many members a model trains: a model with ``ensemble_size = k > 1`` returns one
    output per member in training mode (``[N, k]``, or ``[N, k, K]`` for K classes) and
    their combined prediction in eval mode; the trainer then takes the mean of the members'
    losses, so each member learns on its own (Gorishniy et al. 2024, TabM)."""
    k = getattr(model, "ensemble_size", 1)
    return k if isinstance(k, int) and k > 1 else 1


def combine_members(out: torch.Tensor, task: str) -> torch.Tensor:
    """One prediction from the members' outputs ``[N, k]`` / ``[N, k, K]``: binary, the logit
    of the mean probability (``log mean p - log mean (1 - p)``, computed in log space so it
    stays finite); multiclass, the log of the mean class probabilities (valid logits: their
    softmax is the mean); regression, the mean."""
    if task == "binary":
        return torch.logsumexp(F.logsigmoid(out), dim=1) - torch.logsumexp(
            F.logsigmoid(-out), dim=1
        )
    if task == "multiclass":
        return torch.logsumexp(torch.log_softmax(out, dim=2), dim=1) - math.log(out.shape[1])
    return out.mean(dim=1)


def output_logits(model: nn.Module, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
    """Run ``model`` and normalize its output: ``[N]`` for one output, ``[N, K]`` otherwise."""
    out = model(x_num, x_cat)
    if out.dim() == 2 and out.shape[1] == 1:
        out = out.squeeze(1)
    return out


class PeriodicEmbedding(nn.Module):
    """Periodic embeddings of numeric inputs (Gorishniy, Rubachev, Babenko 2022, "On Embeddings
    for Numerical Features in Tabular Deep Learning", the PLR variant): each number ``x_j``
    becomes ``ReLU(W_j [sin(2 pi c_j x_j), cos(2 pi c_j x_j)] + b_j)``, a ``dim``-wide vector,
    with ``k`` learned frequencies ``c_j`` drawn from N(0, sigma^2) at initialization. It lets
    the MLP fit the sharp, non-monotone effects of single numbers (hour of day, visibility)
    that trees find easily and a plain MLP on standardized inputs does not."""

    def __init__(self, n: int, k: int, sigma: float, dim: int):
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n, k) * sigma)
        self.weight = nn.Parameter(torch.randn(n, 2 * k, dim) / math.sqrt(2 * k))
        self.bias = nn.Parameter(torch.zeros(n, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, n] -> [N, n * dim]
        z = 2 * math.pi * self.frequencies.unsqueeze(0) * x.unsqueeze(-1)
        v = torch.cat([torch.sin(z), torch.cos(z)], dim=-1)
        # [n, N, 2k] @ [n, 2k, dim]: one matrix per input (einsum "bnk,nkd->bnd", the same bmm
        # without einsum's per-call parsing, which a one-row prediction pays for)
        h = torch.matmul(v.transpose(0, 1), self.weight).transpose(0, 1)
        return torch.relu(h + self.bias).flatten(1)


class TabularMLP(nn.Module):
    """Categorical embeddings and the numeric inputs (as they are, or periodic embeddings)
    concatenated, then ReLU layers with dropout. With ``ensemble_size = k > 1`` it is TabM-mini
    (Gorishniy, Kotelnikov, Babenko 2024, "TabM: Advancing Tabular Deep Learning with
    Parameter-Efficient Ensembling"): k members share the embeddings and every hidden layer;
    each member scales the concatenated input by its own learned vector (initialized to
    random signs, so members start apart) and has its own output layer. Training takes the
    mean of the members' losses; the prediction is the members' mean (see
    :func:`combine_members`). It costs about k times the hidden layers' compute."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, embedding_dim(c, spec.max_embedding_dim)) for c in spec.cardinalities
        )
        if spec.numeric_embedding not in ("none", "periodic"):
            raise ValueError(
                f"numeric_embedding={spec.numeric_embedding!r}: use 'periodic' or 'none'"
            )
        if spec.ensemble_size < 1:
            raise ValueError(f"ensemble_size={spec.ensemble_size}: use 1 or more")
        self.numeric: nn.Module | None = None
        numeric_width = spec.num_numeric
        if spec.numeric_embedding == "periodic" and spec.num_numeric:
            self.numeric = PeriodicEmbedding(
                spec.num_numeric,
                spec.periodic_frequencies,
                spec.periodic_sigma,
                spec.numeric_embedding_dim,
            )
            numeric_width = spec.num_numeric * spec.numeric_embedding_dim
        width = numeric_width + sum(e.embedding_dim for e in self.embeddings)
        self.ensemble_size = k = spec.ensemble_size
        self.member_scale: nn.Parameter | None = None
        if k > 1:
            self.member_scale = nn.Parameter(torch.randint(0, 2, (k, width)).float() * 2 - 1)
        layers: list[nn.Module] = []
        for h in spec.hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(spec.dropout)]
            width = h
        if k == 1:
            layers.append(nn.Linear(width, spec.output_size))
        else:  # one output layer per member: [k, width, out]
            bound = 1 / math.sqrt(width)
            self.head_weight = nn.Parameter(
                torch.empty(k, width, spec.output_size).uniform_(-bound, bound)
            )
            self.head_bias = nn.Parameter(torch.empty(k, spec.output_size).uniform_(-bound, bound))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        num = self.numeric(x_num) if self.numeric is not None else x_num
        # F.embedding on each table: what nn.Embedding calls, without a module call per column
        parts = [num] + [F.embedding(x_cat[:, i], e.weight) for i, e in enumerate(self.embeddings)]
        x = torch.cat(parts, dim=1)
        if self.member_scale is None:
            out = self.mlp(x)
            return out.squeeze(1) if self.spec.output_size == 1 else out
        h = self.mlp(x.unsqueeze(1) * self.member_scale)  # [N, k, width]
        out = torch.matmul(h.transpose(0, 1), self.head_weight).transpose(0, 1) + self.head_bias
        if self.spec.output_size == 1:
            out = out.squeeze(2)  # [N, k]
        return out if self.training else combine_members(out, self.spec.task)
