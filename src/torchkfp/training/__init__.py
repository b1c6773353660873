"""Stage 3: distributed data-parallel training.

- :mod:`~torchkfp.training.launcher`: ``launch`` starts torchrun (the component's process);
  where a run checkpoints and logs (``default_checkpoint_dir``, ``default_tensorboard_dir``,
  ``checkpoint_key``);
- :mod:`~torchkfp.training.cluster`: this replica's place in the cluster, the backend;
- :mod:`~torchkfp.training.worker`: one DDP rank (``python -m torchkfp.training.worker``):
  process group, data shard, model, then the loop; rank 0 writes the model artifact;
- :mod:`~torchkfp.training.data`: one rank's share of the training rows (block-strided over
  the memory-mapped features), held in memory within ``train.memory_budget_mb`` or streamed
  through a shuffle buffer, and its validation rows;
- :mod:`~torchkfp.training.loop`: the ``Trainer`` (batches, epochs, validation, early
  stopping, divergence, exact-resume checkpoints, the per-epoch history) and the pure helpers
  ``get_lr``, ``shard_indices`` and ``epoch_seed``;
- :mod:`~torchkfp.training.tensorboard`: the per-epoch TensorBoard scalars (rank 0).

Settings: the ``train`` section only.
"""

from torchkfp.training.cluster import is_chief
from torchkfp.training.launcher import (
    CHECKPOINT_ROOT_ENV,
    VERTEX_CHECKPOINT_ENV,
    VERTEX_TENSORBOARD_ENV,
    TrainResult,
    checkpoint_key,
    default_checkpoint_dir,
    default_tensorboard_dir,
    launch,
)

__all__ = [
    "CHECKPOINT_ROOT_ENV",
    "VERTEX_CHECKPOINT_ENV",
    "VERTEX_TENSORBOARD_ENV",
    "TrainResult",
    "checkpoint_key",
    "default_checkpoint_dir",
    "default_tensorboard_dir",
    "is_chief",
    "launch",
]
