"""`coco_panoptic_lsj`: large-scale jitter for COCO panoptic segmentation.

Same LSJ pipeline as `coco_instance_lsj`; the panoptic PNG moves with the image (its padding is
id 0 = VOID). Segments emptied by the crop are dropped (upstream keeps them: issues #118/#215).
A semantic PNG, when the record has one, is returned as `sem_seg` with `ignore_label` on the
padding (v0.6's FixedSizeCrop would pad it with 0, a real class).
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import configurable
from panopticapi.utils import rgb2id

from ._common import (
    dataset_ignore_label,
    image_to_tensor,
    init_mapper,
    panoptic_segment_masks,
    read_checked_pan_seg,
    read_record,
    read_sem_seg,
)
from .coco_instance_new_baseline_dataset_mapper import (
    LSJ_LOG_WHAT,
    apply_lsj,
    lsj_mapper_config,
    masks_to_lsj_instances,
)

__all__ = ["COCOPanopticNewBaselineDatasetMapper"]


class COCOPanopticNewBaselineDatasetMapper:
    """Maps a COCO panoptic record (`pan_seg_file_name`, `segments_info` with contiguous
    `category_id`) to: `image` uint8 (3, S, S), `padding_mask` bool (S, S), `instances` with
    `gt_classes` int64 (N,), `gt_masks` BitMasks (N, S, S), `gt_boxes`; plus `sem_seg` int64
    (S, S) when the record has `sem_seg_file_name`."""

    @configurable
    def __init__(
        self, is_train: bool = True, *, tfm_gens: list, image_format: str, ignore_label: int = 255
    ):
        init_mapper(self, is_train, tfm_gens, image_format, what=LSJ_LOG_WHAT)
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {**lsj_mapper_config(cfg, is_train), "ignore_label": dataset_ignore_label(cfg)}

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict, image = read_record(dataset_dict, self.img_format)
        dataset_dict.pop("annotations", None)

        image, transforms, padding_mask = apply_lsj(self.tfm_gens, image)
        hw = image.shape[:2]
        dataset_dict["image"] = image_to_tensor(image)
        dataset_dict["padding_mask"] = torch.as_tensor(np.ascontiguousarray(padding_mask))

        if "sem_seg_file_name" in dataset_dict:
            sem = transforms.apply_segmentation(
                read_sem_seg(dataset_dict.pop("sem_seg_file_name"), dataset_dict)
            )
            sem = sem.astype(np.int64)
            sem[padding_mask] = self.ignore_label
            dataset_dict["sem_seg"] = torch.as_tensor(sem)

        pan_seg = read_checked_pan_seg(dataset_dict, "coco_panoptic_lsj")
        pan_ids = rgb2id(transforms.apply_segmentation(pan_seg))
        classes, masks = panoptic_segment_masks(pan_ids, dataset_dict["segments_info"])
        dataset_dict["instances"] = masks_to_lsj_instances(classes, masks, hw)
        return dataset_dict
