"""A tabular MLP: categorical embeddings concatenated with numeric inputs, then an MLP."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


def embedding_dim(cardinality: int, max_dim: int) -> int:
    """fastai's rule of thumb, capped."""
    return max(1, min(max_dim, round(1.6 * cardinality**0.56)))


@dataclass
class ModelSpec:
    num_numeric: int
    cardinalities: list[int]
    hidden_sizes: list[int]
    dropout: float
    max_embedding_dim: int

    def to_dict(self) -> dict:
        return asdict(self)


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
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)
