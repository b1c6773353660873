"""The model: the built-in tabular MLP (categorical embeddings concatenated with numeric inputs,
then an MLP), or the user's own ``nn.Module`` from a factory named in the config.

Every model takes ``(x_num float32 [N, F], x_cat int64 [N, C])`` and returns logits: ``[N]``
when ``output_size`` is 1 (binary, regression) and ``[N, K]`` for K classes.
"""

from __future__ import annotations

import importlib
import itertools
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


FOLD_MAX_FLOATS = 1 << 22
""":class:`FoldedPrediction` is used only while its first-layer tables hold at most this many
numbers (16 MiB of float32): a categorical column with a large vocabulary, times ``k`` members
times the first hidden width, would make them larger than the network."""


class FoldedPrediction:
    """A trained :class:`TabularMLP`'s prediction with far fewer operator calls, for the
    predictor (on the default network one instance took about 0.09 ms instead of 0.21 ms, a
    batch of 4096 rows about a quarter less time). The same function to float rounding
    (``tests/test_ensemble.py`` checks it against the module in eval mode to 1e-5):

    - the first hidden layer is folded with the members' input scales and the categorical
      embeddings: member ``m``'s first layer on ``x * s_m`` is ``(W * s_m) x``, so each
      categorical value's embedding times its columns of ``W * s_m`` becomes one row of a
      table, and one ``embedding_bag`` sums a row's categorical contributions for every
      member at once (instead of an embedding call per column, a concatenation and a scale);
      the numeric inputs take one matrix product with the numeric columns of every ``W * s_m``;
    - the periodic embeddings take ``sin(2 pi c x + phase)`` with phases 0 and pi/2 (one
      ``sin`` instead of ``sin``, ``cos`` and a concatenation);
    - it returns what the predictor returns: the members' mean probability (binary: ``[N]``;
      multiclass: ``[N, K]``), or their mean value (regression, ``[N]``), skipping the
      logits of :func:`combine_members` that the predictor would turn back.

    Built once from fixed weights (:meth:`build`; the predictor never trains), on the CPU.
    """

    def __init__(self, model: TabularMLP):
        spec = model.spec
        k, task = model.ensemble_size, spec.task
        linears = [m for m in model.mlp if isinstance(m, nn.Linear)]
        first = linears[0]
        width = first.out_features
        scale = (
            model.member_scale
            if model.member_scale is not None
            else torch.ones(1, first.in_features)
        )
        w = first.weight.unsqueeze(0) * scale.unsqueeze(1)  # [k, width, in]: W * s_m
        numeric_width = spec.num_numeric
        self.periodic = isinstance(model.numeric, PeriodicEmbedding)
        if self.periodic:
            numeric_width = model.numeric.bias.numel()
            freq = 2 * math.pi * model.numeric.frequencies
            self.frequencies = torch.cat([freq, freq], dim=1).unsqueeze(0)  # [1, n, 2f]
            self.phases = torch.cat(
                [torch.zeros_like(freq), torch.full_like(freq, math.pi / 2)], dim=1
            ).unsqueeze(0)
            self.periodic_weight = model.numeric.weight
            self.periodic_bias = model.numeric.bias
        # [numeric inputs, k * width]: column block m is member m's first layer
        self.numeric_weight = (
            w[:, :, :numeric_width].permute(2, 0, 1).reshape(numeric_width, k * width)
        )
        tables, at = [], numeric_width
        for e in model.embeddings:
            cols = w[:, :, at : at + e.embedding_dim]  # [k, width, dim]
            tables.append(torch.einsum("mwd,cd->cmw", cols, e.weight).reshape(-1, k * width))
            at += e.embedding_dim
        self.categorical_table = torch.cat(tables) if tables else None
        offsets = [0, *itertools.accumulate(spec.cardinalities)][:-1]
        self.offsets = torch.tensor(offsets, dtype=torch.long)
        self.bias = first.bias.repeat(k)
        self.hidden = [(m.weight, m.bias) for m in linears[1 : len(spec.hidden_sizes)]]
        if k == 1:  # the output layer is the last Linear: [1, width, out]
            out = linears[-1]
            self.head_weight = out.weight.t().unsqueeze(0)
            self.head_bias = out.bias.unsqueeze(0)
        else:
            self.head_weight, self.head_bias = model.head_weight, model.head_bias
        self.head_bias = self.head_bias.unsqueeze(1)  # [k, 1, out]
        self.k, self.width, self.task = k, width, task
        for name, value in list(vars(self).items()):  # plain tensors, cut from autograd
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.detach().contiguous())
        self.hidden = [(a.detach(), b.detach()) for a, b in self.hidden]

    @classmethod
    def build(cls, model: nn.Module) -> FoldedPrediction | None:
        """The folded prediction of ``model``, or None where it does not apply (a module of
        the user's own, no hidden layer, or tables above :data:`FOLD_MAX_FLOATS`)."""
        if type(model) is not TabularMLP or not model.spec.hidden_sizes:
            return None
        spec, width = model.spec, model.spec.hidden_sizes[0]
        numeric = spec.num_numeric * (
            spec.numeric_embedding_dim if isinstance(model.numeric, PeriodicEmbedding) else 1
        )
        size = (numeric + sum(spec.cardinalities)) * model.ensemble_size * width
        if size > FOLD_MAX_FLOATS:
            return None
        with torch.no_grad():
            return cls(model)

    def __call__(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        z = self.bias
        if self.numeric_weight.shape[0]:
            num = x_num
            if self.periodic:  # [n, N, 2f] @ [n, 2f, dim] per input, as PeriodicEmbedding
                v = torch.sin(x_num.unsqueeze(-1) * self.frequencies + self.phases)
                h = torch.matmul(v.transpose(0, 1), self.periodic_weight).transpose(0, 1)
                num = torch.relu(h + self.periodic_bias).flatten(1)
            z = torch.addmm(z, num, self.numeric_weight)
        if self.categorical_table is not None:
            z = z + F.embedding_bag(x_cat + self.offsets, self.categorical_table, mode="sum")
        h = torch.relu(z.view(-1, self.k, self.width))  # [N, k, width]
        for weight, bias in self.hidden:
            h = torch.relu(F.linear(h, weight, bias))
        out = torch.baddbmm(self.head_bias, h.transpose(0, 1), self.head_weight)  # [k, N, out]
        if self.task == "multiclass":
            return torch.softmax(out, dim=2).mean(dim=0)
        out = out.squeeze(2)
        return (torch.sigmoid(out) if self.task == "binary" else out).mean(dim=0)
