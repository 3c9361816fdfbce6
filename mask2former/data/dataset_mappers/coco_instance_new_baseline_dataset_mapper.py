"""`coco_instance_lsj`: large-scale jitter for COCO instance segmentation.

Pipeline (Sec. 4.1 of the paper, "large-scale jittering"): flip (INPUT.RANDOM_FLIP) ->
ResizeScale(MIN_SCALE..MAX_SCALE of IMAGE_SIZE) -> FixedSizeCrop(IMAGE_SIZE x IMAGE_SIZE), which
pads the bottom/right (image with 128). Unlike upstream (polygons only) any mask format works.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances

from ._common import (
    annotations_to_masks,
    build_flip,
    drop_empty_masks,
    image_to_tensor,
    init_mapper,
    masks_tensor,
    read_record,
)

__all__ = [
    "COCOInstanceNewBaselineDatasetMapper",
    "build_lsj_augmentations",
    "lsj_mapper_config",
    "apply_lsj",
]

# How the LSJ mappers name their transforms in the set-up log line (upstream's wording).
LSJ_LOG_WHAT = "Full TransformGens used in training"


def build_lsj_augmentations(cfg, is_train: bool) -> list:
    """Flip -> ResizeScale -> FixedSizeCrop (training); ResizeShortestEdge at test time."""
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
    size = cfg.INPUT.IMAGE_SIZE
    return build_flip(cfg.INPUT.RANDOM_FLIP) + [
        T.ResizeScale(
            min_scale=cfg.INPUT.MIN_SCALE,
            max_scale=cfg.INPUT.MAX_SCALE,
            target_height=size,
            target_width=size,
        ),
        # v0.6's FixedSizeCrop pads segmentation maps with 0 (no seg_pad_value argument);
        # the mappers fix the padded region themselves with `padding_mask`.
        T.FixedSizeCrop(crop_size=(size, size)),
    ]


def lsj_mapper_config(cfg, is_train: bool) -> dict:
    """The `from_config` arguments both LSJ mappers take (is_train, tfm_gens, image_format)."""
    return {
        "is_train": is_train,
        "tfm_gens": build_lsj_augmentations(cfg, is_train),
        "image_format": cfg.INPUT.FORMAT,
    }


def apply_lsj(tfm_gens: list, image: np.ndarray):
    """Apply the LSJ transforms to an (H0, W0, 3) image.

    Returns (image (S, S, 3), transforms, padding_mask bool (S, S) with True on padding).
    """
    orig_hw = image.shape[:2]
    image, transforms = T.apply_transform_gens(tfm_gens, image)
    valid = transforms.apply_segmentation(np.ones(orig_hw, dtype=np.uint8))
    return image, transforms, ~valid.astype(bool)


class COCOInstanceNewBaselineDatasetMapper:
    """Maps a COCO instance record to: `image` uint8 (3, S, S) (S = IMAGE_SIZE), `padding_mask`
    bool (S, S) (True on padding), and `instances` with `gt_classes` int64 (N,), `gt_masks`
    BitMasks (N, S, S) and `gt_boxes` (boxes of the masks); crowd and empty instances dropped."""

    @configurable
    def __init__(self, is_train: bool = True, *, tfm_gens: list, image_format: str):
        init_mapper(self, is_train, tfm_gens, image_format, what=LSJ_LOG_WHAT)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return lsj_mapper_config(cfg, is_train)

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict, image = read_record(dataset_dict, self.img_format)
        orig_hw = image.shape[:2]

        image, transforms, padding_mask = apply_lsj(self.tfm_gens, image)
        out_hw = image.shape[:2]
        dataset_dict["image"] = image_to_tensor(image)
        dataset_dict["padding_mask"] = torch.as_tensor(np.ascontiguousarray(padding_mask))

        classes, masks = annotations_to_masks(
            dataset_dict.pop("annotations", []), transforms, orig_hw, out_hw
        )
        dataset_dict["instances"] = masks_to_lsj_instances(classes, masks, out_hw)
        return dataset_dict


def masks_to_lsj_instances(classes, masks, hw) -> Instances:
    """(classes, uint8/bool masks) -> Instances with BitMasks, boxes from masks, empties dropped."""
    classes, masks = drop_empty_masks(classes, masks)
    instances = Instances(tuple(hw))
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    bitmasks = BitMasks(masks_tensor(masks, hw))
    instances.gt_masks = bitmasks
    instances.gt_boxes = bitmasks.get_bounding_boxes() if masks else Boxes(torch.zeros((0, 4)))
    return instances
