"""COCOPanopticNewBaselineDatasetMapper (large-scale jitter) on a tiny generated scene."""

import numpy as np
from detectron2.data import transforms as T
from detectron2.structures import BitMasks

from mask2former.data.dataset_mappers import (
    COCOPanopticNewBaselineDatasetMapper,
)

from .records import H, W, _pan_record


def test_lsj_panoptic_pads_semantic_with_ignore(scene):
    tfms = [T.RandomFlip(prob=1.0), T.PadTransform(0, 0, 2, 4, W, H, 128.0)]
    mapper = COCOPanopticNewBaselineDatasetMapper(True, tfm_gens=tfms, image_format="RGB")
    out = mapper(_pan_record(scene))
    inst = out["instances"]
    assert isinstance(inst.gt_masks, BitMasks) and inst.gt_masks.tensor.shape == (3, H + 4, W + 2)
    assert inst.gt_classes.tolist() == [3, 1, 2]
    assert (out["sem_seg"][H:] == 255).all() and (out["sem_seg"][:, W:] == 255).all()
    assert np.array_equal(out["sem_seg"][:H, :W].numpy(), scene["sem"][:, ::-1])
    # a crop that removes thing B drops it
    mapper = COCOPanopticNewBaselineDatasetMapper(
        True, tfm_gens=[T.CropTransform(0, 0, 16, 16)], image_format="RGB"
    )
    assert mapper(_pan_record(scene))["instances"].gt_classes.tolist() == [3, 1]
