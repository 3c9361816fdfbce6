"""The training mapper must be one the trainer knows: an unknown name is an error, not a silent
fall-back to detectron2's box-only DatasetMapper."""

import pytest

from mask2former.config import load_config
from mask2former.engine.trainer import Trainer


def test_unknown_mapper_name_is_an_error():
    cfg = load_config("", ["INPUT.DATASET_MAPPER_NAME", "mask_former_instanse"])
    with pytest.raises(ValueError) as e:
        Trainer.build_train_loader(cfg)
    msg = str(e.value)
    assert "INPUT.DATASET_MAPPER_NAME 'mask_former_instanse' is not a training mapper" in msg
    assert "mask_former_instance" in msg and "'detectron2' for detectron2's DatasetMapper" in msg


def test_nonfinite_forward_right_after_a_checkpoint_moves_last_checkpoint_back(tmp_path):
    from types import SimpleNamespace

    from mask2former.engine.nonfinite import NonFiniteLossError
    from mask2former.engine.trainer import _after_nonfinite_forward
    from mask2former.engine.weights_guard import NonFiniteWeightsError

    for n in ("model_0000004.pth", "model_0000009.pth"):
        (tmp_path / n).write_bytes(b"x")
    trainer = SimpleNamespace(checkpointer=SimpleNamespace(save_dir=str(tmp_path)), iter=10)

    def tag(name="model_0000009.pth"):
        (tmp_path / "last_checkpoint").write_text(name)

    tag()
    weights = NonFiniteWeightsError("Non-finite weights at iteration 10", 10, ["w"])
    _after_nonfinite_forward(trainer, weights)  # the step broke the weights: model_9 is fine
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    _after_nonfinite_forward(trainer, ValueError("category_id 4 ..."))  # not a non-finite error
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"

    loss = NonFiniteLossError("Non-finite loss at iteration 10: loss_mask=nan.", 10, {})
    _after_nonfinite_forward(trainer, loss)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert str(loss).startswith("Non-finite loss at iteration 10: loss_mask=nan. Note: ")
    assert "'last_checkpoint' now names model_0000004.pth" in str(loss)

    tag()
    matcher = ValueError(
        "HungarianMatcher: the cost matrix has NaN/inf entries; the predictions are not finite"
    )
    _after_nonfinite_forward(trainer, matcher)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
