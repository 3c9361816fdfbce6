"""A non-finite loss stops training, names the iteration and the terms, keeps the last checkpoint
(the loss check of mask2former/engine/nonfinite.py, in MixedPrecisionTrainer.run_step)."""

import math
import os

import pytest
import torch
from detectron2.engine import hooks
from torch import nn

from mask2former.checkpoint import MaskFormerCheckpointer as Ckpt
from mask2former.checkpoint import load_checkpoint_file
from mask2former.engine.nonfinite import (
    NonFiniteLossError,
    check_losses_finite,
    nonfinite_terms,
)
from mask2former.engine.train_loop import MixedPrecisionTrainer


def _last_checkpoint(ck):
    return ck.get_checkpoint_file() if ck.has_checkpoint() else None


def test_nonfinite_terms():
    d = {
        "loss_ce": torch.tensor(1.0),
        "loss_mask": torch.tensor(float("nan")),
        "loss_dice": torch.tensor(float("inf")),
        "n": 3,
    }
    assert set(nonfinite_terms(d)) == {"loss_mask", "loss_dice"}
    check_losses_finite({"a": torch.tensor(0.5)}, 3)
    with pytest.raises(NonFiniteLossError) as e:
        check_losses_finite(d, 17, last_checkpoint="out/model_0000009.pth")
    msg = str(e.value)
    assert "iteration 17" in msg and "loss_mask=nan" in msg and "loss_dice=inf" in msg
    assert (
        "2 other loss terms were finite" in msg
        and "out/model_0000009.pth" in msg
        and "BASE_LR" in msg
    )
    assert e.value.iteration == 17 and set(e.value.terms) == {"loss_mask", "loss_dice"}
    assert isinstance(e.value, FloatingPointError)
    with pytest.raises(NonFiniteLossError, match="Non-finite loss at iteration 2: loss=nan."):
        check_losses_finite({"loss": torch.tensor(float("nan"))}, 2, batch=torch.zeros(8, 4))


class _ToyModel(nn.Module):
    """Returns a dict of losses; from iteration `bad_iter` on, `loss_b` is NaN."""

    def __init__(self, bad_iter):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.bad_iter = bad_iter
        self.calls = 0

    def forward(self, batch):
        x = torch.stack([d["x"] for d in batch])
        out = self.lin(x).mean()
        loss_b = out * 0.5
        if self.calls >= self.bad_iter:
            loss_b = loss_b * float("nan")
        self.calls += 1
        return {"loss_a": out**2, "loss_b": loss_b}


def _loader():
    i = 0
    while True:
        yield [{"x": torch.randn(3), "file_name": f"/data/img_{i:03d}.jpg"}]
        i += 1


def test_training_stops_and_last_good_checkpoint_is_intact(tmp_path):
    model = _ToyModel(bad_iter=7)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = MixedPrecisionTrainer(
        model, _loader(), opt, None, "cpu", last_checkpoint=lambda: _last_checkpoint(ck)
    )
    ck = Ckpt(model, str(tmp_path), optimizer=opt, trainer=trainer)
    trainer.register_hooks([hooks.IterationTimer(), hooks.PeriodicCheckpointer(ck, period=3)])
    with pytest.raises(NonFiniteLossError) as e:
        trainer.train(0, 20)
    msg = str(e.value)
    assert "Non-finite loss at iteration 7: loss_b=nan" in msg
    assert "model_0000005.pth" in msg and "img_007.jpg" in msg
    # checkpoints at iterations 2 and 5 only (period 3); nothing written after the bad step
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == [
        "model_0000002.pth",
        "model_0000005.pth",
    ]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000005.pth"
    ckpt = load_checkpoint_file(tmp_path / "model_0000005.pth")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert ckpt["trainer"]["iteration"] == 5
    # the weights in memory were not updated with NaN either (stopped before optimizer.step)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_finite_losses_train_and_never_ask_for_the_checkpoint():
    model = _ToyModel(bad_iter=10**9)
    before = model.lin.weight.detach().clone()
    asked = []  # the last checkpoint is looked up only for the message of a non-finite loss
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = MixedPrecisionTrainer(
        model, _loader(), opt, None, "cpu", last_checkpoint=lambda: asked.append(1)
    )
    trainer.train(0, 2)
    assert asked == []
    assert not torch.equal(before, model.lin.weight.detach())
    assert math.isfinite(float(model.lin.weight.detach().sum()))


def _rank_worker(rank, port, queue):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        loss = torch.tensor(float("nan") if rank == 1 else 1.0)
        try:
            check_losses_finite({"loss_ce": torch.tensor(0.5), "loss_mask": loss}, 12)
            queue.put((rank, "no error"))
        except NonFiniteLossError as e:
            queue.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_all_ranks_stop_together():
    """A NaN on rank 1 only: both ranks raise (Detectron2's check would stop rank 0 only, and
    rank 1 would hang in the next all-reduce)."""
    import multiprocessing as mp
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    for r in (0, 1):
        assert "Non-finite loss at iteration 12: loss_mask=nan (rank 1)" in results[r], results[r]
