"""--resume says which checkpoint it takes and what is wrong when it cannot; inference refuses a
checkpoint that left most of the model random."""

import logging
import math

import pytest
import torch
from torch import nn

from mask2former.checkpoint import MaskFormerCheckpointer
from mask2former.checkpoint.checks import (
    CheckpointMismatchError,
    ResumeError,
    list_checkpoints,
    require_loaded_weights,
)
from mask2former.engine.weights_guard import NonFiniteWeightsError
from mask2former.utils.atomic_file import atomic_torch_save


def _model(width=4):
    return nn.Sequential(nn.Linear(3, width), nn.Linear(width, 2))


def _ckpt(model, out):
    return MaskFormerCheckpointer(model, str(out))


def _saved(tmp_path, *names):
    out = tmp_path / "out"
    ckpt = _ckpt(_model(), out)
    for n in names:
        ckpt.save(n)
    return out


def test_resume_says_which_checkpoint_it_takes(tmp_path, caplog):
    out = _saved(tmp_path, "model_0000009", "model_0000019")
    model = _model()
    with caplog.at_level(logging.INFO):
        _ckpt(model, out).resume_or_load("", resume=True)
    assert f"Resuming from {out / 'model_0000019.pth'} (named by {out / 'last_checkpoint'})" in (
        caplog.text
    )


@pytest.mark.parametrize("content", ["", "model_0000099.pth"])
def test_resume_with_a_bad_last_checkpoint_lists_the_checkpoints(tmp_path, content):
    out = _saved(tmp_path, "model_0000009", "model_final")
    (out / "last_checkpoint").write_text(content)
    with pytest.raises(ResumeError) as e:
        _ckpt(_model(), out).resume_or_load("", resume=True)
    msg = str(e.value)
    assert ("is empty" in msg) if not content else ("names model_0000099.pth, which does not exist")
    assert f"Checkpoints in {out}: model_0000009.pth (" in msg and "model_final.pth (" in msg
    assert "Fix: write the name of the checkpoint to resume from into" in msg


def test_resume_names_an_empty_file(tmp_path):
    out = _saved(tmp_path, "model_0000009")
    (out / "model_0000019.pth").write_bytes(b"")
    (out / "last_checkpoint").write_text("model_0000019.pth")
    with pytest.raises(ResumeError, match=r"names model_0000019.pth, which is empty \(0 bytes\)"):
        _ckpt(_model(), out).resume_or_load("", resume=True)


def test_resume_after_a_change_of_model_shape_says_what_changed(tmp_path):
    out = _saved(tmp_path, "model_0000009")
    with pytest.raises(CheckpointMismatchError) as e:
        _ckpt(_model(width=5), out).resume_or_load("", resume=True)
    msg = str(e.value)
    assert "3 parameters of another shape: 0.weight: checkpoint (4, 3), model (5, 3)" in msg
    assert "Checkpoints in" in msg and "model_0000009.pth" in msg and "OUTPUT_DIR" in msg


def test_resume_refuses_nonfinite_weights(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    state = {k: v.clone() for k, v in _model().state_dict().items()}
    state["1.bias"][0] = math.nan
    atomic_torch_save({"model": state, "iteration": 4}, out / "model_0000004.pth")
    (out / "last_checkpoint").write_text("model_0000004.pth")
    with pytest.raises(NonFiniteWeightsError, match=r"holds non-finite weights \(1.bias\)"):
        _ckpt(_model(), out).resume_or_load("", resume=True)


def test_list_checkpoints_orders_by_iteration(tmp_path):
    for n in ("model_final.pth", "model_0000100.pth", "model_0000020.pth", "x.pth", "a.state.pth"):
        (tmp_path / n).write_bytes(b"x")
    assert list_checkpoints(str(tmp_path)) == [
        "model_0000020.pth",
        "model_0000100.pth",
        "model_final.pth",
    ]


def test_require_loaded_weights(tmp_path, caplog):
    out = _saved(tmp_path, "model_final")
    model = nn.Sequential(nn.Linear(3, 64), nn.Linear(64, 2))  # "another size": 0.* mismatched
    ckpt = _ckpt(model, tmp_path / "eval")
    ckpt.load(str(out / "model_final.pth"))
    assert ckpt.loaded_keys == ["1.bias"]  # 1.weight is (2, 64) vs (2, 4)
    with pytest.raises(CheckpointMismatchError) as e:
        require_loaded_weights(model.state_dict(), ckpt.loaded_keys, ckpt.loaded_from)
    msg = str(e.value)
    assert "filled only 0.5% of the model's values (2 of 386)" in msg
    assert str(out / "model_final.pth") in msg and "--allow-partial-weights" in msg
    with caplog.at_level(logging.WARNING):
        frac = require_loaded_weights(model.state_dict(), ckpt.loaded_keys, "x.pth", allow=True)
    assert frac == pytest.approx(2 / 386) and "allowed by --allow-partial-weights" in caplog.text
    with pytest.raises(CheckpointMismatchError, match="no checkpoint .MODEL.WEIGHTS is empty."):
        require_loaded_weights(model.state_dict(), None, "")
    full = _model()
    ckpt = _ckpt(full, tmp_path / "eval2")
    ckpt.load(str(out / "model_final.pth"))
    assert require_loaded_weights(full.state_dict(), ckpt.loaded_keys, ckpt.loaded_from) == 1.0
    assert torch.equal(full[0].weight, torch.load(out / "model_final.pth")["model"]["0.weight"])


def test_a_checkpoint_right_before_a_nonfinite_forward_is_not_resumed_from(tmp_path):
    from mask2former.checkpoint.checks import retag_after_nonfinite_forward

    out = _saved(tmp_path, "model_0000001", "model_0000003")  # last_checkpoint: model_0000003
    assert retag_after_nonfinite_forward(str(out), 6) is None  # failure 3 iterations later
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"
    note = retag_after_nonfinite_forward(str(out), 4)  # the first forward after model_0000003
    assert "model_0000003.pth was written right after the optimizer step of iteration 3" in note
    assert "'last_checkpoint' now names model_0000001.pth (model_0000003.pth is kept)" in note
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (out / "model_0000003.pth").exists()
    out2 = _saved(tmp_path / "b", "model_0000000")
    assert "there is no earlier checkpoint" in retag_after_nonfinite_forward(str(out2), 1)
    assert (out2 / "last_checkpoint").read_text() == "model_0000000.pth"
