"""MaskFormerInstanceDatasetMapper on a tiny generated scene: every mask format, flip, crops, padding."""

import numpy as np
import torch
from detectron2.data import transforms as T

from mask2former.data.dataset_mappers import (
    MaskFormerInstanceDatasetMapper,
)

from .records import H, W, _annotations, _inst_record


def test_instance_all_mask_formats_and_flip(scene):
    a, tiny, _ = _annotations()
    mapper = MaskFormerInstanceDatasetMapper(
        True, augmentations=[T.RandomFlip(prob=1.0)], image_format="RGB", size_divisibility=-1
    )
    out = mapper(_inst_record(scene))
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 1, 2, 3, 5]  # crowd (4) skipped
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (5, H, W)
    # RLE/bitmask: exact; polygon rasterisation may differ by a boundary pixel
    for k in (1, 2, 3):
        assert np.array_equal(inst.gt_masks[k].numpy(), a[:, ::-1].astype(bool))
    inter = (inst.gt_masks[0].numpy() & a[:, ::-1].astype(bool)).sum()
    assert inter >= 0.8 * a.sum() and inst.gt_masks[0].sum() <= 1.3 * a.sum()
    assert np.array_equal(inst.gt_masks[4].numpy(), tiny[:, ::-1].astype(bool))


def test_instance_crop_drops_empty_and_pads(scene):
    mapper = MaskFormerInstanceDatasetMapper(
        True,
        augmentations=[T.CropTransform(0, 0, 16, 16)],
        image_format="RGB",
        size_divisibility=32,
    )
    out = mapper(_inst_record(scene))
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 1, 2, 3]  # the corner object is gone
    assert out["image"].shape == (3, 32, 32) and (out["image"][:, 16:] == 128).all()
    assert inst.gt_masks.shape == (4, 32, 32) and not inst.gt_masks[:, 16:].any()
