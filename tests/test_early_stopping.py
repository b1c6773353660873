"""``train.early_stopping``: which validation number picks the shipped epoch and stops training
(the metric, the loss, or off: every epoch, the last shipped). A real Trainer on one gloo rank;
each epoch's validation numbers are scripted, and each epoch writes its number into the
weights, so the kept weights show which epoch was kept."""

import pytest
import torch
import torch.distributed as dist
from pydantic import ValidationError

from torchkfp.config import TrainConfig
from torchkfp.model import ModelSpec, build_model
from torchkfp.training.loop import Trainer
from torchkfp.training.worker import final_state

# (validation loss, validation ROC AUC) per epoch: the loss is best at epoch 1, the AUC at 2
SCRIPT = [(0.50, 0.60), (0.45, 0.62), (0.47, 0.66), (0.48, 0.65), (0.49, 0.64), (0.46, 0.63)]


@pytest.fixture()
def one_rank(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _trainer(mode: str, script, patience: int = 2, task: str = "binary") -> Trainer:
    g = torch.Generator().manual_seed(0)
    data = {
        "x_num": torch.randn(64, 2, generator=g),
        "x_cat": torch.randint(0, 3, (64, 1), generator=g),
        "y": (torch.rand(64, generator=g) < 0.5).float(),
    }
    spec = ModelSpec(2, [3], [4], 0.0, 2, task=task, ensemble_size=1)
    tc = TrainConfig(epochs=len(script), patience=patience, early_stopping=mode)
    trainer = Trainer(tc, build_model(spec), data, data, torch.device("cpu"), 0, 1, None, task=task)
    marker = next(trainer.model.parameters())

    def run_epoch(epoch):
        with torch.no_grad():
            marker.fill_(float(epoch))
        return 0.3, True

    trainer._run_epoch = run_epoch
    trainer._validate = lambda: script[trainer.epoch]
    return trainer


def _kept_epoch(trainer: Trainer) -> float:
    return float(next(iter(final_state(trainer).values())).flatten()[0])


def test_metric_keeps_the_best_auc_epoch_and_stops_after_patience(one_rank):
    t = _trainer("metric", SCRIPT)
    t.train_loop()
    assert t.best_epoch == 2 and _kept_epoch(t) == 2.0
    assert t.epoch == 5  # epochs 3 and 4 did not beat 0.66: stopped before the sixth
    assert t.best_score == pytest.approx(-0.66) and t.best_loss == pytest.approx(0.47)


def test_loss_keeps_the_best_loss_epoch(one_rank):
    t = _trainer("loss", SCRIPT)
    t.train_loop()
    assert t.best_epoch == 1 and _kept_epoch(t) == 1.0
    assert t.epoch == 4 and t.best_loss == pytest.approx(0.45)


def test_off_runs_every_epoch_and_ships_the_last(one_rank):
    t = _trainer("off", SCRIPT, patience=1)
    t.train_loop()
    assert t.epoch == 6 and t.best_epoch == 5 and t.best_state is None
    assert _kept_epoch(t) == 5.0


def test_an_undefined_metric_falls_back_to_the_loss(one_rank):
    t = _trainer("metric", [(loss, None) for loss, _ in SCRIPT])
    t.train_loop()
    assert t.best_epoch == 1 and _kept_epoch(t) == 1.0


def test_lower_is_better_for_rmse(one_rank):
    script = [(1.0, 3.0), (0.9, 2.0), (0.8, 2.5), (0.7, 2.6), (0.6, 2.7)]
    t = _trainer("metric", script, task="regression")
    t.train_loop()
    assert t.best_epoch == 1 and t.best_score == pytest.approx(2.0)
    assert t.epoch == 4


def test_a_new_best_needs_a_real_improvement(one_rank):
    script = [(0.5, 0.70), (0.5, 0.70 + 1e-7), (0.5, 0.70 - 1e-7)]
    t = _trainer("metric", script, patience=5)
    t.train_loop()
    assert t.best_epoch == 0 and t.bad_epochs == 2 and t.best_score == pytest.approx(-0.70)


def test_the_setting_is_checked():
    with pytest.raises(ValidationError, match="early_stopping"):
        TrainConfig(early_stopping="sometimes")
