"""NaN/Inf gradients or weights with finite losses stop training before anything is saved, and
`last_checkpoint` keeps naming the last checkpoint with finite weights."""

import math

import pytest
import torch
from detectron2.engine import hooks
from torch import nn

from mask2former.checkpoint import MaskFormerCheckpointer, load_checkpoint_file
from mask2former.engine.train_loop import MixedPrecisionTrainer
from mask2former.engine.weights_guard import NonFiniteWeightsError, WeightsGuard, all_finite


class Saturating(nn.Module):
    """loss = tanh(w * x): finite for any w, even w = -inf (the BASE_LR 30 failure in miniature)."""

    def __init__(self, nan_grad: bool = False):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.nan_grad = nan_grad

    def forward(self, batch):
        x = torch.tensor([float(d["x"]) for d in batch])
        loss = 1000 * torch.tanh(self.w * x).mean()
        if self.nan_grad and batch[0]["x"] == 1.0:
            loss = loss + torch.sqrt((self.w * 0).abs()).sum()  # value 0, gradient NaN
        return {"loss_a": loss}


def _run(tmp_path, model, lr, xs=(0.0, 0.0, 1.0, 1.0)):
    """Train on batches x = xs[i] with SGD(lr), a checkpoint after every iteration."""
    data = iter([[{"x": x, "file_name": f"img{i}.png"}] for i, x in enumerate(xs)])
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    trainer = MixedPrecisionTrainer(model, data, opt, precision=None, device_type="cpu")
    ckpt = MaskFormerCheckpointer(model, str(tmp_path))
    trainer.weights_guard = WeightsGuard(
        model, lambda: ckpt.get_checkpoint_file() if ckpt.has_checkpoint() else None
    )
    trainer.register_hooks([hooks.PeriodicCheckpointer(ckpt, 1, max_iter=len(xs))])
    return trainer, ckpt


def test_inf_weights_from_a_finite_loss_stop_before_the_checkpoint(tmp_path):
    model = Saturating()
    trainer, ckpt = _run(tmp_path, model, lr=1e37)  # x = 0: no gradient; x = 1: w -> -inf
    with pytest.raises(NonFiniteWeightsError) as e:
        trainer.train(0, 4)
    msg = str(e.value)
    assert "Non-finite weights at iteration 2 (written by the optimizer step, from finite " in msg
    assert "gradients: the step was too large)" in msg
    assert "although the loss terms were finite: w (1 of 1 values)" in msg
    assert f"The last good checkpoint is {tmp_path / 'model_0000001.pth'}" in msg
    assert "SOLVER.BASE_LR" in msg and "CLIP_GRADIENTS" in msg
    assert e.value.names == ["w"] and e.value.iteration == 2
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [
        "model_0000000.pth",
        "model_0000001.pth",
    ]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert torch.equal(
        load_checkpoint_file(tmp_path / "model_0000001.pth")["model"]["w"], torch.ones(1)
    )
    assert not all_finite(model.parameters())  # the bad step happened, but was never saved


def test_nan_gradient_stops_at_the_step_and_is_named_as_the_cause(tmp_path):
    model = Saturating(nan_grad=True)
    trainer, _ = _run(tmp_path, model, lr=0.1)
    with pytest.raises(NonFiniteWeightsError) as e:
        trainer.train(0, 4)
    msg = str(e.value)
    assert (
        "Non-finite weights at iteration 2 (written by the optimizer step, from non-finite " in msg
    )
    assert "gradients: w (1 of 1 values))" in msg
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    # before the step (for callers that must keep the weights): the gradient check
    model.w.data.fill_(1.0)
    model.zero_grad()
    model([{"x": 1.0}])["loss_a"].backward()
    with pytest.raises(NonFiniteWeightsError, match="Non-finite gradients at iteration 5"):
        WeightsGuard(model).check_gradients(5)


def test_finite_training_is_untouched(tmp_path):
    model = Saturating()
    trainer, _ = _run(tmp_path, model, lr=0.5)
    trainer.train(0, 4)
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert model.w.item() < 1.0  # it trained


def test_checkpointer_refuses_to_save_nonfinite_weights(tmp_path):
    model = nn.Linear(2, 2)
    ckpt = MaskFormerCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000000")
    with torch.no_grad():
        model.bias[1] = math.nan
    with pytest.raises(
        NonFiniteWeightsError, match=r"Refusing to save checkpoint .*model_0000001"
    ) as e:
        ckpt.save("model_0000001")
    assert "bias (1 of 2 values)" in str(e.value)
    assert "still names " + str(tmp_path / "model_0000000.pth") in str(e.value)
    assert not (tmp_path / "model_0000001.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"


def test_all_finite():
    assert all_finite([torch.ones(3), torch.full((2,), 3e38)])  # the 2-norm overflows: exact test
    assert not all_finite([torch.ones(3), torch.tensor([1.0, math.inf])])
    assert not all_finite([torch.tensor([math.nan])])
    assert all_finite([torch.zeros(0), torch.arange(3)])  # empty and integer tensors: ignored
