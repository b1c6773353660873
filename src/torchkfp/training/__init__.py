"""Stage 3: distributed data-parallel training.

- :mod:`~torchkfp.training.launcher`: ``launch`` starts torchrun (the component's process);
- :mod:`~torchkfp.training.cluster`: this replica's place in the cluster, the backend;
- :mod:`~torchkfp.training.worker`: one DDP rank (``python -m torchkfp.training.worker``):
  process group, data shard, model, then the loop; rank 0 writes the model artifact;
- :mod:`~torchkfp.training.loop`: the ``Trainer`` (batches, epochs, validation, early
  stopping, checkpoints) and the pure helpers ``get_lr`` and ``shard_indices``.

Settings: the ``train`` section only.
"""

from torchkfp.training.cluster import is_chief
from torchkfp.training.launcher import TrainResult, default_checkpoint_dir, launch

__all__ = ["TrainResult", "default_checkpoint_dir", "is_chief", "launch"]
