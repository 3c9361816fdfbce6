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
