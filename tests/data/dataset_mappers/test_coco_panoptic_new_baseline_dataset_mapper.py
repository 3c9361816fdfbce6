"""COCOPanopticNewBaselineDatasetMapper (large-scale jitter) on a tiny generated scene."""

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.structures import BitMasks
from PIL import Image

from mask2former import add_maskformer2_config
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


# ----------------------------------------------------------------------------------------------
# LSJ's scale distribution through the panoptic LSJ mapper built from a config
# (data/dataset_mappers/coco_panoptic_new_baseline_dataset_mapper.py).
#
# Large-scale jitter resizes an S x S image by a factor drawn uniformly from [MIN_SCALE, MAX_SCALE]
# (times IMAGE_SIZE / longest side), then crops/pads to IMAGE_SIZE. With MAX_SCALE <= 1 the whole
# resized image survives the crop, so the unpadded extent (`padding_mask`) measures the drawn scale.


SIZE = 64  # IMAGE_SIZE and the input image's side


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """A 64 x 64 image with two segments (left half: id 1, thing; right half: id 2, stuff)."""
    root = tmp_path_factory.mktemp("lsj")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "im.png")
    pan = np.zeros((SIZE, SIZE, 3), np.uint8)
    pan[:, : SIZE // 2, 0] = 1
    pan[:, SIZE // 2 :, 0] = 2
    Image.fromarray(pan).save(root / "pan.png")
    return {
        "file_name": str(root / "im.png"),
        "pan_seg_file_name": str(root / "pan.png"),
        "segments_info": [
            {"id": 1, "category_id": 0, "iscrowd": 0},
            {"id": 2, "category_id": 1, "iscrowd": 0},
        ],
        "height": SIZE,
        "width": SIZE,
        "image_id": 1,
    }


def _mapper(min_scale: float, max_scale: float, flip: str = "none"):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_list(
        ["INPUT.IMAGE_SIZE", SIZE, "INPUT.MIN_SCALE", min_scale, "INPUT.MAX_SCALE", max_scale]
    )
    cfg.merge_from_list(["INPUT.RANDOM_FLIP", flip, "INPUT.FORMAT", "RGB"])
    return COCOPanopticNewBaselineDatasetMapper(cfg, True)


def _observed_scales(mapper, record, n: int) -> np.ndarray:
    """The resized side / SIZE of n mapped samples, read from the padding mask."""
    scales = []
    for _ in range(n):
        out = mapper(record)
        valid = ~out["padding_mask"].numpy()
        assert out["image"].shape == (3, SIZE, SIZE)
        rows, cols = valid.any(1).sum(), valid.any(0).sum()
        assert rows == cols  # a square stays square
        scales.append(rows / SIZE)
    return np.asarray(scales)


def test_scales_cover_the_configured_range_uniformly(record):
    np.random.seed(0)  # detectron2's augmentations draw from numpy's global generator
    lo, hi = 0.25, 1.0
    scales = _observed_scales(_mapper(lo, hi), record, 200)
    step = 1 / SIZE  # the resized side is rounded to whole pixels
    assert scales.min() >= lo - step and scales.max() <= hi + step
    # Both ends are reached (P(no draw in a 10 % end band) = 0.9 ** 200 ~ 1e-9) ...
    assert scales.min() < lo + 0.1 * (hi - lo)
    assert scales.max() > hi - 0.1 * (hi - lo)
    # ... and the draw is uniform, not piled up at one end (mean 0.625, std of the mean ~0.015).
    assert abs(scales.mean() - (lo + hi) / 2) < 0.06
    quarter = (hi - lo) / 4
    counts = np.histogram(scales, bins=[lo - step] + [lo + quarter * i for i in (1, 2, 3)] + [2])[0]
    assert counts.min() > 30, counts  # ~50 per quarter


def test_a_narrow_range_gives_that_scale(record):
    np.random.seed(1)
    scales = _observed_scales(_mapper(0.5, 0.5), record, 5)
    assert np.allclose(scales, 0.5)


def test_scales_above_one_crop_without_padding(record):
    np.random.seed(2)
    mapper = _mapper(1.5, 2.0)
    for _ in range(5):
        out = mapper(record)
        assert not out["padding_mask"].any()
        assert out["image"].shape == (3, SIZE, SIZE)
        # The crop (at least 1.5x) shows at most 2/3 of the original's width: part of one half
        # or the boundary between the halves; every kept segment is non-empty.
        masks = out["instances"].gt_masks.tensor
        assert masks.shape[1:] == (SIZE, SIZE) and masks.flatten(1).any(1).all()
