"""`mask_former_semantic`: per-pixel labels -> one binary mask per class present.

Training pipeline (Sec. 4 / Appendix of the paper; upstream `MaskFormerSemanticDatasetMapper`):
ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, sampling) -> RandomCrop with the
single-category area limit -> SSD colour jitter (optional) -> flip -> pad to SIZE_DIVISIBILITY.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from detectron2.structures import Instances

from .. import validation  # clear errors for bad inputs (docs/reliability.md)
from ._common import (
    build_flip,
    dataset_ignore_label,
    image_to_tensor,
    init_mapper,
    masks_tensor,
    pad_to_divisibility,
    read_record,
    read_sem_seg,
)

__all__ = [
    "MaskFormerSemanticDatasetMapper",
    "build_maskformer_augmentations",
    "maskformer_mapper_config",
]


def build_maskformer_augmentations(cfg, is_train: bool, category_area_crop: bool = True):
    """The multi-scale + crop + colour + flip list of the `mask_former_*` mappers.

    `category_area_crop=False` gives a plain RandomCrop (the instance mapper). At test time
    (`is_train=False`) only ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST) is used.
    """
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
    augs = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        if category_area_crop:
            augs.append(
                T.RandomCrop_CategoryAreaConstraint(
                    cfg.INPUT.CROP.TYPE,
                    cfg.INPUT.CROP.SIZE,
                    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                )
            )
        else:
            augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    augs.extend(build_flip(cfg.INPUT.RANDOM_FLIP))
    return augs


def maskformer_mapper_config(cfg, is_train: bool, category_area_crop: bool = True) -> dict:
    """The `from_config` arguments all `mask_former_*` mappers take: is_train, augmentations
    (`build_maskformer_augmentations`), image_format and size_divisibility (-1 at test time)."""
    return {
        "is_train": is_train,
        "augmentations": build_maskformer_augmentations(cfg, is_train, category_area_crop),
        "image_format": cfg.INPUT.FORMAT,
        "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY if is_train else -1,
    }


class MaskFormerSemanticDatasetMapper:
    """Maps a semantic-segmentation record (`file_name`, `sem_seg_file_name`) to the model input.

    Output: `image` uint8 (3, H, W); `sem_seg` int64 (H, W) with `ignore_label` in padding;
    `instances` with `gt_classes` int64 (N,) = the classes present (ignore excluded, sorted) and
    `gt_masks` bool (N, H, W).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        ignore_label: int,
        size_divisibility: int,
        num_classes: int | None = None,
    ):
        init_mapper(self, is_train, augmentations, image_format)
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility
        self.num_classes = num_classes  # None: label values are not checked

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            **maskformer_mapper_config(cfg, is_train),
            "ignore_label": dataset_ignore_label(cfg),
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict, image = read_record(dataset_dict, self.img_format)  # a copy
        dataset_dict.pop("annotations", None)  # semantic targets come from the label map only

        if "sem_seg_file_name" not in dataset_dict:
            raise ValueError(
                f"Record for {dataset_dict['file_name']} has no 'sem_seg_file_name'; the "
                "'mask_former_semantic' mapper needs a semantic label map per image."
            )
        sem_seg_file = dataset_dict.pop("sem_seg_file_name")
        validation.require_file(
            sem_seg_file, "semantic label file", image_file=dataset_dict["file_name"]
        )
        sem_seg_gt = read_sem_seg(sem_seg_file, dataset_dict)  # checks its size
        if self.num_classes is not None:
            validation.check_sem_seg(
                sem_seg_gt,
                self.num_classes,
                self.ignore_label,
                sem_seg_file,
                image_file=dataset_dict["file_name"],
            )

        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        aug_input, _ = T.apply_transform_gens(self.tfm_gens, aug_input)
        image_t = image_to_tensor(aug_input.image)
        sem_seg_t = torch.as_tensor(aug_input.sem_seg.astype("long"))
        image_t, sem_seg_t, _ = pad_to_divisibility(
            self.size_divisibility, image_t, sem_seg_t, ignore_label=self.ignore_label
        )
        dataset_dict["image"] = image_t
        dataset_dict["sem_seg"] = sem_seg_t
        dataset_dict["instances"] = self.semantic_to_instances(sem_seg_t, self.ignore_label)
        return dataset_dict

    @staticmethod
    def semantic_to_instances(sem_seg: torch.Tensor, ignore_label: int) -> Instances:
        """One target per class present in an (H, W) label map (ignore excluded)."""
        hw = tuple(sem_seg.shape[-2:])
        sem = sem_seg.numpy()
        classes = np.unique(sem)
        classes = classes[classes != ignore_label]
        instances = Instances(hw)
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        instances.gt_masks = masks_tensor([sem == c for c in classes], hw)
        return instances
