"""The Model artifact, self-contained: weights (``model.pt``, a plain state dict),
``model_spec.json`` (the architecture), ``transform.json`` (the fitted transform it was
trained with), ``feature_spec.json`` (what a caller sends) and ``metadata.json`` (training
history, world size, throughput, data fingerprint, code version), committed with ``_SUCCESS``.

Training writes it; evaluation, the registries and serving read it through :class:`ModelArtifact`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchkfp.artifacts import transform as transform_artifact
from torchkfp.artifacts.folder import begin, commit, require
from torchkfp.transform import FittedTransform

if TYPE_CHECKING:  # torch is imported where weights are read or written: the registry and
    import torch  # the deploy step only need KIND and the folder protocol, and stay light

    from torchkfp.model import ModelSpec

KIND = "model"
WEIGHTS_FILE = "model.pt"
SPEC_FILE = "model_spec.json"
FEATURE_SPEC_FILE = "feature_spec.json"
TRANSFORM_FILE = transform_artifact.FILE


def write(
    path: str | os.PathLike,
    state_dict: dict[str, torch.Tensor],
    spec: ModelSpec,
    tf: FittedTransform,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """Write a complete model artifact (marker last); returns the committed metadata."""
    import torch

    out = begin(path)
    torch.save(state_dict, out / WEIGHTS_FILE)
    (out / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=1))
    tf.save(out / TRANSFORM_FILE)
    (out / FEATURE_SPEC_FILE).write_text(json.dumps(tf.feature_spec(), indent=1))
    return commit(out, KIND, metadata)


@dataclass
class ModelArtifact:
    """A complete model artifact, read back: its spec, transform and metadata; ``module()``
    builds the network with its weights (weights-only load: nothing pickled is executed)."""

    path: Path
    spec: ModelSpec
    transform: FittedTransform
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelArtifact:
        from torchkfp.model import ModelSpec

        p = Path(path)
        meta = require(p, KIND)
        spec = ModelSpec(**json.loads((p / SPEC_FILE).read_text()))
        return cls(p, spec, FittedTransform.load(p / TRANSFORM_FILE), meta)

    def module(self) -> torch.nn.Module:
        """The network with its weights, in eval mode (a user's model factory is imported)."""
        import torch

        from torchkfp.model import build_model

        net = build_model(self.spec)
        net.load_state_dict(torch.load(self.path / WEIGHTS_FILE, weights_only=True))
        return net.eval()
