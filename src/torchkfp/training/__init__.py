"""Stage 3: distributed data-parallel training.

- :mod:`~torchkfp.training.launcher`: ``launch`` starts torchrun (the component's process);
  where a run checkpoints (``default_checkpoint_dir``, ``checkpoint_key``);
- :mod:`~torchkfp.training.cluster`: this replica's place in the cluster, the backend;
- :mod:`~torchkfp.training.worker`: one DDP rank (``python -m torchkfp.training.worker``):
  process group, data shard, model, then the loop; rank 0 writes the model artifact;
- :mod:`~torchkfp.training.loop`: the ``Trainer`` (batches, epochs, validation, early
  stopping, divergence, exact-resume checkpoints) and the pure helpers ``get_lr``,
  ``shard_indices`` and ``epoch_seed``.

Settings: the ``train`` section only.
"""

from torchkfp.training.cluster import is_chief
from torchkfp.training.launcher import (
    CHECKPOINT_ROOT_ENV,
    TrainResult,
    checkpoint_key,
    default_checkpoint_dir,
    launch,
)

__all__ = [
    "CHECKPOINT_ROOT_ENV",
    "TrainResult",
    "checkpoint_key",
    "default_checkpoint_dir",
    "is_chief",
    "launch",
]
