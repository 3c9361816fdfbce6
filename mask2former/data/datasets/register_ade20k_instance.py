"""ADE20K instance segmentation (`ade20k_instance_{train,val}`): a COCO-format JSON written by
`datasets/prepare_ade20k_ins_seg.py` (RLE masks; category id = ADE150 label, 0-based; 100 thing
classes, contiguous 0..99 in increasing id order)."""

from __future__ import annotations

import os

from ._utils import dataset_root, register_checked, set_lazy_metadata
from .checked import load_coco_instances
from .custom import _instance_metadata
from .register_ade20k_panoptic import ADE20K_PREP

_SPLITS = {"train": "training", "val": "validation"}


def register_all_ade20k_instance(root: str) -> None:
    ade_root = os.path.join(root, "ADEChallengeData2016")
    for split, dirname in _SPLITS.items():
        name = f"ade20k_instance_{split}"
        image_root = os.path.join(ade_root, "images", dirname)
        json_file = os.path.join(ade_root, f"ade20k_instance_{split}.json")
        register_checked(
            name,
            lambda j=json_file, i=image_root, n=name: load_coco_instances(j, i, n),
            [(image_root, ADE20K_PREP["images"]), (json_file, ADE20K_PREP["instance"])],
        )
        set_lazy_metadata(
            name,
            lambda j=json_file: _instance_metadata(j),
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
        )


register_all_ade20k_instance(dataset_root())
