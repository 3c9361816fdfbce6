"""`coco_panoptic_lsj`: large-scale jitter for COCO panoptic segmentation.

Same LSJ pipeline as `coco_instance_lsj`; the panoptic PNG moves with the image (its padding is
id 0 = VOID). Segments emptied by the crop are dropped (upstream keeps them: issues #118/#215).
A semantic PNG, when the record has one, is returned as `sem_seg` with `ignore_label` on the
padding (v0.6's FixedSizeCrop would pad it with 0, a real class).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils

from .. import validation  # clear errors for bad inputs (docs/reliability.md)
from ._common import image_to_tensor, read_pan_seg, read_sem_seg, rgb2id, set_record_defaults
from .coco_instance_new_baseline_dataset_mapper import (
    apply_lsj,
    build_lsj_augmentations,
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
        self.is_train = is_train
        self.tfm_gens = tfm_gens
        self.img_format = image_format
        self.ignore_label = ignore_label
        logging.getLogger(__name__).info(
            f"[{self.__class__.__name__}] Full TransformGens used in training: {tfm_gens}"
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        if len(cfg.DATASETS.TRAIN):
            ignore = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("ignore_label", ignore)
        return {
            "is_train": is_train,
            "tfm_gens": build_lsj_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = validation.read_image(dataset_dict["file_name"], format=self.img_format)
        validation.check_image_size(dataset_dict, image)
        set_record_defaults(dataset_dict, image)
        dataset_dict.pop("annotations", None)

        image, transforms, padding_mask = apply_lsj(self.tfm_gens, image)
        hw = image.shape[:2]
        dataset_dict["image"] = image_to_tensor(image)
        dataset_dict["padding_mask"] = torch.as_tensor(np.ascontiguousarray(padding_mask))

        if "sem_seg_file_name" in dataset_dict:
            sem = transforms.apply_segmentation(read_sem_seg(dataset_dict.pop("sem_seg_file_name")))
            sem = sem.astype(np.int64)
            sem[padding_mask] = self.ignore_label
            dataset_dict["sem_seg"] = torch.as_tensor(sem)

        if "pan_seg_file_name" not in dataset_dict:
            raise ValueError(
                f"Record for {dataset_dict['file_name']} has no 'pan_seg_file_name'; the "
                "'coco_panoptic_lsj' mapper needs COCO-format panoptic annotations."
            )
        pan_seg_file = dataset_dict.pop("pan_seg_file_name")
        pan_seg = read_pan_seg(pan_seg_file)
        validation.check_panoptic_segments(rgb2id(pan_seg), dataset_dict["segments_info"],
                                           pan_seg_file, image_file=dataset_dict["file_name"])
        pan_ids = rgb2id(transforms.apply_segmentation(pan_seg))
        classes, masks = [], []
        for seg in dataset_dict["segments_info"]:
            if seg.get("iscrowd", 0):
                continue
            classes.append(int(seg["category_id"]))
            masks.append(pan_ids == seg["id"])
        dataset_dict["instances"] = masks_to_lsj_instances(classes, masks, hw)
        return dataset_dict
