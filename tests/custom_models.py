"""A user's own model, defined outside the torchkfp package (the tests put this folder on
PYTHONPATH): a factory that receives the feature spec and returns an ``nn.Module``."""

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_numeric: int, cardinalities: list[int], out: int, width: int):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, 4) for c in cardinalities)
        self.body = nn.Sequential(
            nn.Linear(num_numeric + 4 * len(cardinalities), width), nn.ReLU(), nn.Linear(width, out)
        )

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [e(x_cat[:, i]) for i, e in enumerate(self.embeddings)]
        return self.body(torch.cat(parts, dim=1))


def build(features, width: int = 16) -> nn.Module:
    return TinyNet(features.num_numeric, features.cardinalities, features.output_size, width)
