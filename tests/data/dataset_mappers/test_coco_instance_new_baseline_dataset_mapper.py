"""COCOInstanceNewBaselineDatasetMapper (large-scale jitter) on a tiny generated scene."""

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes

from mask2former.data.dataset_mappers import (
    COCOInstanceNewBaselineDatasetMapper,
)

from .records import H, W, _annotations, _cfg, _inst_record


# ---- LSJ -----------------------------------------------------------------------------------
def test_lsj_instance(scene):
    a, _, _ = _annotations()
    # resize x2 (40x60), then a 32x32 crop at (x0=0, y0=8) padded to 48x48 like FixedSizeCrop
    tfms = [
        T.ResizeTransform(H, W, 40, 60),
        T.CropTransform(0, 8, 32, 32),
        T.PadTransform(0, 0, 16, 16, 32, 32, 128.0),
    ]
    mapper = COCOInstanceNewBaselineDatasetMapper(True, tfm_gens=tfms, image_format="RGB")
    out = mapper(_inst_record(scene))
    assert out["image"].shape == (3, 48, 48) and out["image"].dtype == torch.uint8
    assert (out["image"][:, 32:] == 128).all()
    assert out["padding_mask"][32:].all() and not out["padding_mask"][:32, :32].any()
    inst = out["instances"]
    assert isinstance(inst.gt_masks, BitMasks) and isinstance(inst.gt_boxes, Boxes)
    assert inst.gt_classes.tolist() == [0, 1, 2, 3]  # crowd skipped, corner object cropped away
    big = np.kron(a, np.ones((2, 2), np.uint8))[8:40, 0:32].astype(bool)
    assert np.array_equal(inst.gt_masks.tensor[1, :32, :32].numpy(), big)
    ys, xs = np.nonzero(big)
    assert inst.gt_boxes.tensor[1].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_lsj_from_config_end_to_end(scene):
    """The real LSJ chain (random scale, crop, pad) keeps masks, image and padding consistent."""
    cfg = _cfg(**{"INPUT.IMAGE_SIZE": 32, "INPUT.MIN_SCALE": 0.5, "INPUT.MAX_SCALE": 2.0})
    mapper = COCOInstanceNewBaselineDatasetMapper(cfg, True)
    for _ in range(5):
        out = mapper(_inst_record(scene))
        assert out["image"].shape == (3, 32, 32)
        masks = out["instances"].gt_masks.tensor
        assert masks.shape[1:] == (32, 32) and masks.flatten(1).any(1).all()  # no empty mask
        assert not masks[:, out["padding_mask"]].any()
        assert (out["image"][:, out["padding_mask"]] == 128).all()
