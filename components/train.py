from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Model, Output
from torchkfp.components._base import component


@component
def train(
    train_config: dict,
    data_fingerprint: str,
    features: Input[Dataset],
    transform: Input[Artifact],
    model: Output[Model],
) -> NamedTuple("TrainOutputs", world_size=int, samples_per_s=float, seconds=float):
    """DDP training with torchrun; on Vertex every replica runs this, only the chief reports.

    train_config: the config's ``train`` section (the only settings the workers receive).
    data_fingerprint: ingest's output (the cache key follows the data).

    Checkpoints: AIP_CHECKPOINT_DIR on Vertex; with TORCHKFP_CHECKPOINT_ROOT set (``torchkfp
    run --resume``) a folder under it named by the features and the train settings, shared by
    reruns; else next to the model output. ``torchkfp run`` reuses a cached model trained on
    the same inputs with the same settings (:mod:`torchkfp.stage_cache`).
    """
    import time

    t0 = time.perf_counter()
    from torchkfp import stage_cache
    from torchkfp.config import TrainConfig
    from torchkfp.training import is_chief

    run = stage_cache.train(
        TrainConfig.from_dict(train_config),
        features.path,
        transform.path,
        model.path,
        data_fingerprint,
        stage_cache.input_key(features.metadata),
        stage_cache.input_key(transform.metadata),
    )
    if not is_chief():
        # Every replica of a Vertex custom job runs this body with the same executor input:
        # only the chief may write KFP outputs. Exiting here (status 0) writes none.
        raise SystemExit(0)
    r = run.result
    model.metadata.update(
        {
            "framework": "pytorch",
            "world_size": r.world_size,
            "best_val_loss": r.best_val_loss,
            "epochs_run": r.epochs_run,
            **run.cache.metadata(),
        }
    )
    if run.checkpoint_dir is not None:  # absent: reused from the stage cache (no training)
        model.metadata["checkpoint_dir"] = run.checkpoint_dir
    if r.resumed_from_epoch is not None:  # absent: trained from scratch
        model.metadata["resumed_from_epoch"] = r.resumed_from_epoch
    return (r.world_size, r.samples_per_s, time.perf_counter() - t0)
