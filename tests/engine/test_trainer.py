"""The project's Trainer (tools/train_net.py's) with the reliability pieces wired in: a NaN loss
stops training and keeps the last good checkpoint; checkpoints are atomic and can be safetensors."""

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the driver
import reliability_driver as drv  # noqa: E402

from mask2former.checkpoint import MaskFormerCheckpointer, load_checkpoint_file  # noqa: E402
from mask2former.engine.nonfinite import NonFiniteLossError  # noqa: E402


@pytest.fixture(autouse=True)
def _msda_backend(monkeypatch):
    monkeypatch.setenv("MASK2FORMER_MSDA_BACKEND", "pytorch")  # no C++ build in this test


def _trainer(tmp_path, **overrides):
    drv.register(tmp_path / "data")
    train_net = drv.load_train_net()
    opts = drv.opts_list(
        tmp_path / "out",
        **{
            "SOLVER.IMS_PER_BATCH": 2,
            "DATASETS.TEST": (),
            "SOLVER.CHECKPOINT_PERIOD": 2,
            **overrides,
        },
    )
    args = train_net.default_argument_parser().parse_args(["--config-file", drv.CONFIG, *opts])
    cfg = train_net.setup(args)
    return train_net.Trainer(cfg)


class _NaNAt(nn.Module):
    """The model, except that `loss_mask` is NaN from the `bad`-th call on."""

    def __init__(self, model, bad):
        super().__init__()
        self.inner, self.bad, self.calls = model, bad, 0

    def forward(self, batch):
        losses = self.inner(batch)
        if self.calls >= self.bad:
            losses["loss_mask"] = losses["loss_mask"] * float("nan")
        self.calls += 1
        return losses


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, **{"SOLVER.MAX_ITER": 10})
    assert isinstance(trainer.checkpointer, MaskFormerCheckpointer)
    trainer.resume_or_load(resume=False)
    trainer._trainer.model = _NaNAt(trainer._trainer.model, bad=3)
    with pytest.raises(NonFiniteLossError) as e:
        trainer.train()
    msg = str(e.value)
    out = tmp_path / "out"
    assert "Non-finite loss at iteration 3: loss_mask=nan (11 other loss terms were finite)" in msg
    assert f"The last good checkpoint is {out / 'model_0000001.pth'}" in msg and "BASE_LR" in msg
    assert sorted(p.name for p in out.glob("*.pth")) == ["model_0000001.pth"]
    ckpt = load_checkpoint_file(out / "model_0000001.pth")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in trainer._trainer.model.parameters())


def test_safetensors_checkpoints_and_resume(tmp_path):
    trainer = _trainer(
        tmp_path, **{"SOLVER.MAX_ITER": 2, "SOLVER.CHECKPOINT_FORMAT": "safetensors"}
    )
    trainer.resume_or_load(resume=False)
    trainer.train()
    out = tmp_path / "out"
    names = sorted(os.listdir(out))
    assert "model_final.safetensors" in names and "model_final.state.pth" in names
    assert not [n for n in names if n.endswith(".pth") and not n.endswith(".state.pth")]
    assert (out / "last_checkpoint").read_text() == "model_final.safetensors"
    resumed = _trainer(
        tmp_path, **{"SOLVER.MAX_ITER": 4, "SOLVER.CHECKPOINT_FORMAT": "safetensors"}
    )
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    for (k, a), b in zip(trainer.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
