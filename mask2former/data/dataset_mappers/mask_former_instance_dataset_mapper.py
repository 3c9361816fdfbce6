"""`mask_former_instance`: COCO-style instance annotations -> binary masks (ADE20K/Cityscapes).

Pipeline: ResizeShortestEdge -> plain RandomCrop -> SSD colour jitter (optional) -> flip -> pad to
SIZE_DIVISIBILITY. Polygons, RLE (compressed or not) and bitmasks are all accepted; crowd
annotations are skipped and instances left empty by the crop are dropped.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import Instances

from ._common import (
    annotations_to_masks,
    drop_empty_masks,
    image_to_tensor,
    init_mapper,
    masks_tensor,
    pad_to_divisibility,
    read_record,
)
from .mask_former_semantic_dataset_mapper import maskformer_mapper_config

__all__ = ["MaskFormerInstanceDatasetMapper"]


class MaskFormerInstanceDatasetMapper:
    """Maps an instance record (`file_name`, `annotations` with contiguous `category_id` and
    `segmentation`) to: `image` uint8 (3, H, W) and `instances` with `gt_classes` int64 (N,) and
    `gt_masks` bool (N, H, W)."""

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        size_divisibility: int,
    ):
        init_mapper(self, is_train, augmentations, image_format)
        self.size_divisibility = size_divisibility

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return maskformer_mapper_config(cfg, is_train, category_area_crop=False)

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict, image = read_record(dataset_dict, self.img_format)
        orig_hw = image.shape[:2]

        aug_input = T.AugInput(image)
        aug_input, transforms = T.apply_transform_gens(self.tfm_gens, aug_input)
        image = aug_input.image
        out_hw = image.shape[:2]
        classes, masks = annotations_to_masks(
            dataset_dict.pop("annotations", []), transforms, orig_hw, out_hw
        )
        classes, masks = drop_empty_masks(classes, masks)  # drop instances cropped away

        image_t = image_to_tensor(image)
        image_t, _, _ = pad_to_divisibility(self.size_divisibility, image_t)
        hw = tuple(image_t.shape[-2:])
        gt_masks = masks_tensor(masks, out_hw)
        if gt_masks.shape[-2:] != hw:  # pad masks with 0 like the image
            padded = torch.zeros((gt_masks.shape[0], *hw), dtype=torch.bool)
            padded[:, : out_hw[0], : out_hw[1]] = gt_masks
            gt_masks = padded

        instances = Instances(hw)
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        instances.gt_masks = gt_masks
        dataset_dict["image"] = image_t
        dataset_dict["instances"] = instances
        return dataset_dict
