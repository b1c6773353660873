"""TensorBoard scalars of a training run: one point per epoch, written by global rank 0 only,
with ``torch.utils.tensorboard``.

Tags (step = epochs completed, 1 for the first epoch):

- ``train/loss``, ``validation/loss``: the epoch's mean losses over all ranks;
- ``validation/<metric>``: the task's validation metric (binary ``roc_auc``, multi-class
  ``accuracy``, regression ``rmse`` in the label's units; see
  :data:`torchkfp.training.loop.VALIDATION_METRIC`);
- ``train/samples_per_s``: training throughput of the epoch, all ranks together;
- ``train/learning_rate``: the learning rate at the end of the epoch.

Where (:func:`~torchkfp.training.launcher.default_tensorboard_dir`): ``AIP_TENSORBOARD_LOG_DIR``
(Vertex AI sets it when the training job has a TensorBoard) read through the GCS FUSE mount,
else ``<model output>-tensorboard`` next to the model artifact.

A run that resumes from a checkpoint writes the epochs before its checkpoint too (from the
checkpoint's history) unless the folder already holds them (a restarted Vertex AI job writes
to the same folder): every epoch appears once. Logging is an aid: a folder that cannot be
written stops it with one warning, never the training.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

TAGS = {
    "train_loss": "train/loss",
    "val_loss": "validation/loss",
    "samples_per_s": "train/samples_per_s",
    "learning_rate": "train/learning_rate",
}
"""History key -> TensorBoard tag; ``val_<metric>`` keys go to ``validation/<metric>``."""
STEP_TAG = TAGS["train_loss"]
"""The tag whose last step says how many epochs a folder already holds."""
EVENT_FILE_PREFIX = "events.out.tfevents"


def tag_of(key: str) -> str | None:
    """The TensorBoard tag of a history key (None: not logged, e.g. ``epoch``)."""
    if key in TAGS:
        return TAGS[key]
    if key.startswith("val_"):
        return "validation/" + key[len("val_") :]
    return None


def logged_epochs(log_dir: str | Path) -> int:
    """Epochs already in the event files directly in ``log_dir`` (the last step of
    :data:`STEP_TAG`); 0 when there are none or they cannot be read."""
    d = Path(log_dir)
    try:
        if not any(p.name.startswith(EVENT_FILE_PREFIX) for p in d.iterdir()):
            return 0
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
        acc.Reload()
        if STEP_TAG not in acc.Tags().get("scalars", []):
            return 0
        return max((e.step for e in acc.Scalars(STEP_TAG)), default=0)
    except Exception:  # unreadable or foreign files: write every epoch
        return 0


class EpochScalars:
    """Writes a run's per-epoch history entries (see :class:`~torchkfp.training.loop.Trainer`)
    to TensorBoard event files in ``log_dir``."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self.writer: Any = None
        self.done = logged_epochs(self.log_dir)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=30)
        except Exception as e:
            self._stop(e)

    @property
    def active(self) -> bool:
        return self.writer is not None

    def log(self, entry: dict[str, Any]) -> None:
        """One epoch's entry (``epoch`` is 0-based; the step is ``epoch + 1``), once."""
        if self.writer is None:
            return
        step = int(entry["epoch"]) + 1
        if step <= self.done:
            return
        try:
            for key, value in entry.items():
                tag = tag_of(key)
                if tag is None or value is None:
                    continue
                value = float(value)
                if math.isfinite(value):
                    self.writer.add_scalar(tag, value, step)
            self.writer.flush()  # each epoch is visible at once (Vertex AI streams the files)
        except Exception as e:
            self._stop(e)
            return
        self.done = step

    def log_history(self, history: list[dict[str, Any]]) -> None:
        for entry in history:
            self.log(entry)

    def close(self) -> None:
        if self.writer is None:
            return
        try:
            self.writer.close()
        except Exception as e:
            self._stop(e)
        self.writer = None

    def _stop(self, e: BaseException) -> None:
        print(
            f"[train] warning: TensorBoard logging to {self.log_dir} stopped "
            f"({type(e).__name__}: {e}); training goes on",
            file=sys.stderr,
            flush=True,
        )
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
