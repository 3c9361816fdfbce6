"""MaskFormerPanopticDatasetMapper on a tiny generated scene: targets, crops that empty instances, padding."""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T

from .records import _pan_record, _panoptic_mapper


@pytest.mark.parametrize("with_sem", [True, False])
def test_panoptic_targets(scene, with_sem):
    out = _panoptic_mapper([T.RandomFlip(prob=1.0)])(_pan_record(scene, with_sem))
    pan = scene["pan"][:, ::-1]
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [3, 1, 2]  # crowd skipped
    for k, sid in enumerate([11, 22, 33]):
        assert np.array_equal(inst.gt_masks[k].numpy(), pan == sid)
    assert inst.gt_masks.dtype == torch.bool
    if with_sem:
        assert np.array_equal(out["sem_seg"].numpy(), scene["sem"][:, ::-1])
    else:  # derived from the panoptic PNG: segment classes (crowd included)
        expected = np.select([pan == 11, pan == 22, pan == 33, pan == 44], [3, 1, 2, 1], 255)
        assert np.array_equal(out["sem_seg"].numpy(), expected)


def test_panoptic_crop_drops_empty_and_pads(scene):
    # crop the top-left 16x16: thing B (bottom-right corner) disappears
    out = _panoptic_mapper([T.CropTransform(0, 0, 16, 16)], size_divisibility=32)(
        _pan_record(scene)
    )
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [3, 1]
    assert inst.gt_masks.shape == (2, 32, 32) and not inst.gt_masks[:, 16:].any()
    assert np.array_equal(inst.gt_masks[1, :16, :16].numpy(), scene["pan"][:16, :16] == 22)
    assert (out["sem_seg"][16:] == 255).all() and (out["image"][:, 16:] == 128).all()


def test_panoptic_category_area_crop_without_semantic_png(scene):
    """SINGLE_CATEGORY_MAX_AREA < 1 needs labels: derived from the panoptic PNG."""
    crop = T.RandomCrop_CategoryAreaConstraint("absolute", (10, 10), 0.9, 255)
    out = _panoptic_mapper([crop])(_pan_record(scene, with_sem=False))
    assert out["image"].shape == (3, 10, 10)
    assert len(out["instances"]) >= 1
