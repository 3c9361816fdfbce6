"""`mask_former_panoptic`: a COCO-format panoptic PNG -> one binary mask per non-crowd segment.

Same augmentations as `mask_former_semantic`. The panoptic PNG moves with the image; segments
that the crop removed entirely are dropped (upstream keeps them as empty targets, a reported
bug: Mask2Former issues #118/#215). Without a semantic PNG, `sem_seg` is derived from the panoptic
PNG so the category-area crop and the semantic output still work.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.structures import Instances
from panopticapi.utils import rgb2id

from ._common import (
    image_to_tensor,
    label_array,
    masks_tensor,
    pad_to_divisibility,
    panoptic_segment_masks,
    panoptic_to_semantic,
    read_checked_pan_seg,
    read_record,
    read_sem_seg,
)
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper

__all__ = ["MaskFormerPanopticDatasetMapper"]


class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """Maps a panoptic record (`file_name`, `pan_seg_file_name`, `segments_info` with contiguous
    `category_id`, optional `sem_seg_file_name`) to the model input.

    Output: `image` uint8 (3, H, W); `sem_seg` int64 (H, W); `instances` with `gt_classes` int64
    (N,) and `gt_masks` bool (N, H, W), one per non-crowd segment still visible after cropping.
    """

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict, image = read_record(dataset_dict, self.img_format)
        dataset_dict.pop("annotations", None)

        pan_seg_gt = read_checked_pan_seg(dataset_dict, "mask_former_panoptic")
        segments_info = dataset_dict["segments_info"]
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = read_sem_seg(dataset_dict.pop("sem_seg_file_name"), dataset_dict)
        else:
            sem = panoptic_to_semantic(rgb2id(pan_seg_gt), segments_info, self.ignore_label)
            sem_seg_gt = label_array(sem)

        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        aug_input, transforms = T.apply_transform_gens(self.tfm_gens, aug_input)
        pan_ids = rgb2id(transforms.apply_segmentation(pan_seg_gt))

        image_t = image_to_tensor(aug_input.image)
        sem_seg_t = torch.as_tensor(aug_input.sem_seg.astype("long"))
        pan_t = torch.as_tensor(pan_ids)
        image_t, sem_seg_t, pan_t = pad_to_divisibility(
            self.size_divisibility, image_t, sem_seg_t, pan_t, ignore_label=self.ignore_label
        )
        dataset_dict["image"] = image_t
        dataset_dict["sem_seg"] = sem_seg_t
        dataset_dict["instances"] = segments_to_instances(pan_t.numpy(), segments_info)
        return dataset_dict


def segments_to_instances(pan_ids: np.ndarray, segments_info) -> Instances:
    """Non-crowd, non-empty segments of an (H, W) id map -> Instances(gt_classes, gt_masks)."""
    hw = tuple(pan_ids.shape)
    classes, masks = panoptic_segment_masks(pan_ids, segments_info)
    instances = Instances(hw)
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    instances.gt_masks = masks_tensor(masks, hw)
    return instances
