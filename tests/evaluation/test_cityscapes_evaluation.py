"""The Cityscapes evaluators name prediction files by the image's Cityscapes basename (the
official scripts find them by it): two inputs with one basename would overwrite each other's
files, which is an error, raised before the scripts run."""

import pytest
import torch
from detectron2.data import MetadataCatalog

from mask2former.evaluation import CityscapesSemSegEvaluator

from . import crosscheck_data as X


def test_two_inputs_with_one_basename_is_an_error(tmp_path):
    name = X.fresh_name("_xcheck_cityscapes_basename")
    MetadataCatalog.get(name).set(gt_dir=str(tmp_path), thing_classes=["car"])
    ev = CityscapesSemSegEvaluator(name)
    ev.reset()
    out = {"sem_seg": torch.zeros(19, 4, 8)}
    stem = "aachen_000000_000019_leftImg8bit.png"
    for city in ("a", "b"):
        ev.process([{"file_name": str(tmp_path / city / stem), "image_id": city}], [out])
    with pytest.raises(ValueError, match="both map to prediction file"):
        ev.evaluate()
