"""Users' own models that ONNX export cannot carry (the tests put this folder on PYTHONPATH):
training must still succeed, the model artifact recording why there is no ONNX export."""

import torch
from torch import nn


class Branching(nn.Module):
    """Python control flow on the data: torch.export cannot trace it."""

    def __init__(self, num_numeric: int, cardinalities: list[int], out: int):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, 2) for c in cardinalities)
        self.body = nn.Linear(num_numeric + 2 * len(cardinalities), out)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [e(x_cat[:, i]) for i, e in enumerate(self.embeddings)]
        out = self.body(torch.cat(parts, dim=1))
        if out.sum() > 0:  # data-dependent: no single graph
            return out
        return -out


class ExportDiffers(nn.Module):
    """Exports, but the export computes something else than the module (as an exporter bug
    would): the parity check must catch it."""

    def __init__(self, num_numeric: int, cardinalities: list[int], out: int):
        super().__init__()
        self.body = nn.Linear(num_numeric + len(cardinalities), out)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        out = self.body(torch.cat([x_num, x_cat.float()], dim=1))
        if torch.compiler.is_exporting():
            out = out + 0.01
        return out


def branching(features) -> nn.Module:
    return Branching(features.num_numeric, features.cardinalities, features.output_size)


def export_differs(features) -> nn.Module:
    return ExportDiffers(features.num_numeric, features.cardinalities, features.output_size)
