"""The built-in MLP as a TabM-mini ensemble (``train.ensemble_size``): member outputs in
training, their combined prediction in eval mode, each member trained on its own loss, the
ONNX export and the predictor on the combined prediction."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torchkfp.model import (
    FoldedPrediction,
    ModelSpec,
    TabularMLP,
    build_model,
    combine_members,
    ensemble_size,
)


def _spec(task="binary", out=1, k=4, numeric="none") -> ModelSpec:
    return ModelSpec(
        num_numeric=3,
        cardinalities=[5, 3],
        hidden_sizes=[16, 8],
        dropout=0.0,
        max_embedding_dim=4,
        task=task,
        output_size=out,
        numeric_embedding=numeric,
        ensemble_size=k,
    )


def _inputs(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randint(0, 3, (n, 2), generator=g)


def test_binary_combination_is_the_logit_of_the_mean_probability():
    g = torch.Generator().manual_seed(1)
    members = torch.randn(50, 8, generator=g, dtype=torch.float64) * 4
    members[0] = torch.tensor([60.0, -60.0, 80.0, 30.0, -90.0, 70.0, 0.0, 55.0])  # extremes
    got = combine_members(members, "binary")
    p = torch.sigmoid(members).mean(dim=1)
    assert torch.isfinite(got).all()
    assert torch.allclose(torch.sigmoid(got), p, atol=1e-12)
    assert torch.allclose(got[1:], torch.log(p[1:]) - torch.log1p(-p[1:]), atol=1e-9)


def test_multiclass_combination_softmaxes_to_the_mean_class_probabilities():
    g = torch.Generator().manual_seed(2)
    members = torch.randn(40, 5, 3, generator=g, dtype=torch.float64) * 3
    got = combine_members(members, "multiclass")
    assert got.shape == (40, 3)
    want = torch.softmax(members, dim=2).mean(dim=1)
    assert torch.allclose(torch.softmax(got, dim=1), want, atol=1e-12)
    assert torch.allclose(got.exp().sum(dim=1), torch.ones(40, dtype=torch.float64))


def test_regression_combination_is_the_mean():
    members = torch.tensor([[1.0, 3.0], [-2.0, 4.0]])
    assert combine_members(members, "regression").tolist() == [2.0, 1.0]


@pytest.mark.parametrize(
    ("task", "out", "train_shape", "eval_shape"),
    [
        ("binary", 1, (64, 4), (64,)),
        ("regression", 1, (64, 4), (64,)),
        ("multiclass", 3, (64, 4, 3), (64, 3)),
    ],
)
def test_members_in_training_one_prediction_in_eval(task, out, train_shape, eval_shape):
    torch.manual_seed(0)
    model = build_model(_spec(task, out, numeric="periodic"))
    assert ensemble_size(model) == 4
    x_num, x_cat = _inputs()
    members = model.train()(x_num, x_cat)
    assert members.shape == train_shape
    # the members differ from the start (their input scales are random signs)
    assert not torch.allclose(members[:, 0], members[:, 1])
    combined = model.eval()(x_num, x_cat)
    assert combined.shape == eval_shape
    assert torch.allclose(combined, combine_members(members.detach(), task), atol=1e-6)


def test_one_member_is_the_plain_mlp():
    torch.manual_seed(0)
    model = build_model(_spec(k=1))
    assert ensemble_size(model) == 1
    assert not any("head" in n or "member" in n for n, _ in model.named_parameters())
    x_num, x_cat = _inputs()
    assert model.train()(x_num, x_cat).shape == (64,)
    with pytest.raises(ValueError, match="ensemble_size=0"):
        TabularMLP(_spec(k=0))


def _trainer_rank(rank: int, world: int, init: str, out: str, task: str) -> None:
    import torch.distributed as dist

    from torchkfp.config import TrainConfig
    from torchkfp.training.loop import Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        x_num, x_cat = _inputs(256, seed=3)
        g = torch.Generator().manual_seed(4)
        y = (
            torch.randint(0, 3, (256,), generator=g)
            if task == "multiclass"
            else (x_num[:, 0] > 0).float()
        )
        data = {"x_num": x_num, "x_cat": x_cat, "y": y}
        torch.manual_seed(0)
        model = build_model(_spec(task, 3 if task == "multiclass" else 1))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        tc = TrainConfig(epochs=1, batch_size=64, unknown_category_rate=0.0, seed=0)
        trainer = Trainer(tc, model, data, data, torch.device("cpu"), rank, world, None, task=task)
        # one step by hand, the same batch through the trainer: its loss is the members' mean
        model.train()
        xb, cb, yb = x_num[:64], x_cat[:64], y[:64]
        with torch.no_grad():
            m = model(xb, cb)
            if task == "multiclass":
                per_member = [float(F.cross_entropy(m[:, i], yb)) for i in range(m.shape[1])]
            else:
                per_member = [
                    float(F.binary_cross_entropy_with_logits(m[:, i], yb))
                    for i in range(m.shape[1])
                ]
        loss = float(trainer._run_batch(xb, cb, yb))
        heads_moved = (model.head_weight.detach() - before["head_weight"]).abs().sum(dim=(1, 2))
        trainer.train_loop()
        val_loss, _ = trainer._validate()
        torch.save(
            {
                "loss": loss,
                "per_member": per_member,
                "heads_moved": heads_moved,
                "val_loss": val_loss,
                "history": trainer.history,
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_trainer_takes_the_mean_of_the_members_losses_under_ddp(tmp_path, task):
    """Two gloo ranks: a training step's loss is the mean of the members' own losses, every
    member's output layer learns, and validation scores the combined prediction."""
    import torch.multiprocessing as mp

    mp.spawn(_trainer_rank, args=(2, str(tmp_path / "init"), str(tmp_path), task), nprocs=2)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["loss"] == pytest.approx(float(np.mean(r0["per_member"])), rel=1e-5)
    assert len(set(np.round(r0["per_member"], 6))) > 1  # the members are not one model
    assert (r0["heads_moved"] > 0).all()
    assert r0["val_loss"] == r1["val_loss"] and math.isfinite(r0["val_loss"])
    assert r0["history"] == r1["history"]


def test_a_trained_ensemble_exports_to_onnx_and_serves_alike(tmp_path, stage_outputs):
    """A real 2-rank training of a 4-member periodic ensemble: the ONNX export passes its
    parity check on the test split, and the predictor on either runtime answers alike."""
    from torchkfp import artifacts
    from torchkfp.artifacts import dataset as dataset_artifact
    from torchkfp.artifacts import model as model_artifact
    from torchkfp.config import TrainConfig
    from torchkfp.predictor import Predictor
    from torchkfp.training import launch

    tc = TrainConfig(
        epochs=1,
        batch_size=512,
        nproc_per_node=2,
        ensemble_size=4,
        numeric_embedding="periodic",
    )
    out = tmp_path / "model"
    launch(tc, stage_outputs["features"], stage_outputs["transform"], out)
    meta = artifacts.require(out, model_artifact.KIND)
    assert meta["training"]["config"]["ensemble_size"] == 4
    parity = meta[model_artifact.ONNX_KEY]["parity"]
    assert parity["passed"] is True and 0 <= parity["max_abs_diff"] <= 1e-5
    test = dataset_artifact.read_split(stage_outputs["dataset"], "test").to_pandas().head(300)
    on_torch = Predictor(out).predict_proba(test)
    on_onnx = Predictor(out, "onnx").predict_proba(test)
    assert on_torch.shape == (300,) and ((on_torch > 0) & (on_torch < 1)).all()
    assert float(abs(on_torch - on_onnx).max()) <= 1e-5
    spec = json.loads((out / "model_spec.json").read_text())
    assert spec["ensemble_size"] == 4 and spec["numeric_embedding"] == "periodic"


class _ThreeHeads(torch.nn.Module):
    """A module of a user's own that is an ensemble: ``ensemble_size`` and member outputs."""

    ensemble_size = 3

    def __init__(self):
        super().__init__()
        self.heads = torch.nn.Linear(3, 3)

    def forward(self, x_num, x_cat):
        out = self.heads(x_num)  # [N, 3]: one logit per member
        return out if self.training else combine_members(out, "binary")


def test_a_module_of_your_own_with_ensemble_size_trains_each_member_on_its_own(tmp_path):
    import torch.distributed as dist

    from torchkfp.config import TrainConfig
    from torchkfp.training.loop import Trainer

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        x_num, x_cat = _inputs(128, seed=5)
        y = (x_num[:, 1] > 0).float()
        data = {"x_num": x_num, "x_cat": x_cat, "y": y}
        torch.manual_seed(0)
        model = _ThreeHeads()
        tc = TrainConfig(epochs=2, batch_size=32, unknown_category_rate=0.0)
        trainer = Trainer(tc, model, data, data, torch.device("cpu"), 0, 1, None)
        assert trainer.members == 3
        model.train()
        with torch.no_grad():
            m = model(x_num[:32], x_cat[:32])
        per_member = [F.binary_cross_entropy_with_logits(m[:, i], y[:32]) for i in range(3)]
        loss = trainer._run_batch(x_num[:32], x_cat[:32], y[:32])
        assert float(loss) == pytest.approx(float(torch.stack(per_member).mean()), rel=1e-6)
        trainer.train_loop()
        val_loss, val_auc = trainer._validate()  # eval mode: the combined prediction, [N]
        assert math.isfinite(val_loss) and val_auc > 0.8
    finally:
        dist.destroy_process_group()


def test_the_forward_pass_is_the_papers_formula():
    """The periodic embeddings and the members' heads, written with einsum as in the papers:
    the model's batched matrix products give the same numbers, in training and eval mode."""
    torch.manual_seed(0)
    model = build_model(_spec(k=4, numeric="periodic"))
    x_num, x_cat = _inputs()
    pe = model.numeric
    z = 2 * math.pi * pe.frequencies.unsqueeze(0) * x_num.unsqueeze(-1)
    v = torch.cat([torch.sin(z), torch.cos(z)], dim=-1)
    num = torch.relu(torch.einsum("bnk,nkd->bnd", v, pe.weight) + pe.bias).flatten(1)
    torch.testing.assert_close(pe(x_num), num, rtol=0, atol=1e-6)
    parts = [num] + [emb(x_cat[:, i]) for i, emb in enumerate(model.embeddings)]
    h = model.mlp(torch.cat(parts, dim=1).unsqueeze(1) * model.member_scale)
    members = torch.einsum("nkw,kwo->nko", h, model.head_weight) + model.head_bias
    with torch.no_grad():
        torch.testing.assert_close(
            model.train()(x_num, x_cat), members.squeeze(2), atol=1e-6, rtol=0
        )
        combined = combine_members(members.squeeze(2), "binary")
        torch.testing.assert_close(model.eval()(x_num, x_cat), combined, atol=1e-6, rtol=0)


def _eval_prediction(model: torch.nn.Module, x_num, x_cat, task: str) -> torch.Tensor:
    """What the predictor made of the module's eval output before the folded path."""
    out = model.eval()(x_num, x_cat)
    if task == "binary":
        return torch.sigmoid(out)
    return torch.softmax(out, dim=1) if task == "multiclass" else out


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("numeric", ["none", "periodic"])
@pytest.mark.parametrize(
    ("task", "out", "hidden"),
    [("binary", 1, [16, 8]), ("multiclass", 3, [16]), ("regression", 1, [16, 8, 8])],
)
def test_the_folded_prediction_equals_the_modules(task, out, hidden, numeric, k):
    """FoldedPrediction (the predictor's path for the built-in network) answers what the
    module in eval mode answers, for every task kind, member count, input embedding and depth,
    with weights trained away from their initial values (the member scales and the biases
    differ from their starting signs and zeros)."""
    torch.manual_seed(0)
    spec = _spec(task, out, k, numeric)
    spec.hidden_sizes = hidden
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    folded = FoldedPrediction.build(model)
    assert folded is not None
    x_num, x_cat = _inputs(n=257)
    with torch.inference_mode():
        want = _eval_prediction(model, x_num, x_cat, task)
        got = folded(x_num, x_cat)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # one row alone, as the server predicts it, is the same row of the batch
        torch.testing.assert_close(folded(x_num[:1], x_cat[:1]), got[:1], atol=1e-6, rtol=0)


def test_no_folded_prediction_where_it_does_not_apply(monkeypatch):
    """A module of the user's own, a network without hidden layers and tables above
    FOLD_MAX_FLOATS keep the module's own forward pass (FoldedPrediction.build gives None)."""
    from torchkfp import model as model_module

    assert FoldedPrediction.build(torch.nn.Linear(3, 1)) is None
    spec = _spec()
    spec.hidden_sizes = []
    assert FoldedPrediction.build(build_model(spec)) is None
    net = build_model(_spec())
    assert FoldedPrediction.build(net) is not None
    # (3 numeric + 8 categorical values) * 4 members * 16 wide = 704 numbers
    monkeypatch.setattr(model_module, "FOLD_MAX_FLOATS", 703)
    assert FoldedPrediction.build(net) is None


@pytest.mark.parametrize(("num_numeric", "cardinalities"), [(0, [5, 3]), (3, [])])
def test_the_folded_prediction_without_numeric_or_categorical_inputs(num_numeric, cardinalities):
    """A table with only categorical or only numeric features folds too."""
    torch.manual_seed(0)
    spec = _spec(k=4, numeric="periodic")
    spec.num_numeric, spec.cardinalities = num_numeric, cardinalities
    model = build_model(spec).eval()
    folded = FoldedPrediction.build(model)
    assert folded is not None
    g = torch.Generator().manual_seed(1)
    x_num = torch.randn(32, num_numeric, generator=g)
    x_cat = torch.randint(0, 3, (32, len(cardinalities)), generator=g)
    with torch.inference_mode():
        want = torch.sigmoid(model(x_num, x_cat))
        torch.testing.assert_close(folded(x_num, x_cat), want, atol=1e-5, rtol=1e-5)
