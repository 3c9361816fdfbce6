"""MaskFormerSemanticDatasetMapper on a tiny generated scene: shapes, dtypes, masks that move with the
image under flip/crop/resize, padding, 16-bit labels, test-time mapping."""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from PIL import Image

from mask2former.data.dataset_mappers import (
    MaskFormerSemanticDatasetMapper,
)

from .records import H, W, _cfg, _sem_record, _semantic_mapper


# ---- semantic ------------------------------------------------------------------------------
def test_semantic_outputs_and_flip(scene):
    out = _semantic_mapper([T.RandomFlip(prob=1.0)])(_sem_record(scene))
    assert {"file_name", "image_id", "height", "width", "image", "sem_seg", "instances"} <= set(out)
    assert (out["height"], out["width"], out["image_id"]) == (H, W, 7)
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, H, W)
    assert out["sem_seg"].dtype == torch.int64
    flipped = scene["sem"][:, ::-1]
    assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), scene["image"][:, ::-1])
    assert np.array_equal(out["sem_seg"].numpy(), flipped)
    inst = out["instances"]
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [0, 1]
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (2, H, W)
    for k, c in enumerate([0, 1]):
        assert np.array_equal(inst.gt_masks[k].numpy(), flipped == c)
    assert inst.image_size == (H, W)


def test_semantic_resize_crop_and_padding(scene):
    augs = [T.ResizeShortestEdge(40, 1000), T.CropTransform(0, 4, 32, 16)]  # x0, y0, w, h
    out = _semantic_mapper(augs, size_divisibility=24)(_sem_record(scene))
    assert out["image"].shape == (3, 24, 48)  # 16x32 padded to multiples of 24
    big = np.kron(scene["sem"], np.ones((2, 2), np.uint8))  # 2x nearest resize
    assert np.array_equal(out["sem_seg"][:16, :32].numpy(), big[4:20, 0:32])
    assert (out["sem_seg"][16:] == 255).all() and (out["sem_seg"][:, 32:] == 255).all()
    assert (out["image"][:, 16:] == 128).all() and (out["image"][:, :, 32:] == 128).all()
    masks = out["instances"].gt_masks
    assert masks.shape == (2, 24, 48) and not masks[:, 16:].any() and not masks[:, :, 32:].any()
    assert out["instances"].image_size == (24, 48)


def test_semantic_16bit_labels(tmp_path, scene):
    """ADE20K-full style: 16-bit labels (class 800, ignore 65535) survive resizing exactly."""
    label = np.full((H, W), 65535, np.uint16)
    label[5:, :] = 800
    path = str(tmp_path / "label.tif")
    Image.fromarray(label).save(path)
    rec = {"file_name": scene["paths"]["image"], "sem_seg_file_name": path}
    out = _semantic_mapper([T.ResizeShortestEdge(40, 1000)], ignore=65535)(rec)
    assert set(out["sem_seg"].unique().tolist()) == {800, 65535}
    assert out["instances"].gt_classes.tolist() == [800]
    assert out["image_id"] == "image"  # a record without image_id gets the file stem


def test_semantic_requires_label(scene):
    with pytest.raises(ValueError, match="sem_seg_file_name"):
        _semantic_mapper([])({"file_name": scene["paths"]["image"]})


def test_test_time_mapping_resizes_without_crop_or_padding(scene):
    cfg = _cfg(
        **{
            "INPUT.MIN_SIZE_TEST": 40,
            "INPUT.MAX_SIZE_TEST": 100,
            "INPUT.SIZE_DIVISIBILITY": 512,
            "INPUT.CROP.ENABLED": True,
        }
    )
    mapper = MaskFormerSemanticDatasetMapper(cfg, is_train=False)
    out = mapper(_sem_record(scene))
    assert out["image"].shape == (3, 40, 60) and out["sem_seg"].shape == (40, 60)
    assert out["instances"].gt_classes.tolist() == [0, 1]
