"""ADE20K-full semantic segmentation with 847 classes (`ade20k_full_sem_seg_{train,val}`).

Layout: ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg and
ADE20K_2021_17_01/annotations_detectron2/{training,validation}/*.tif (16-bit labels 0..846,
65535 = unlabeled), as written by the MaskFormer project's `prepare_ade20k_full_sem_seg.py`.

The 847 class names are not shipped here (no copy was available to this project; we do not
invent them). They are read on first use from ADE20K_2021_17_01/ade20k_full_classes.txt: one
name per line, line i = label i. Write it from the 847-entry ADE20K_SEM_SEG_FULL_CATEGORIES list of
that preparation script (the names in order). Training and evaluation work without it (only the
class-name metadata is missing).
"""

from __future__ import annotations

import os

from ._utils import dataset_root, register_checked, set_lazy_metadata
from .checked import load_sem_seg_pairs

NUM_CLASSES = 847
_SPLITS = {"train": "training", "val": "validation"}
_PREP = (
    "Download ADE20K_2021_17_01 and convert it with MaskFormer's "
    "`datasets/prepare_ade20k_full_sem_seg.py` (see datasets/README.md)."
)


def read_class_names(path: str) -> dict:
    with open(path) as f:
        names = [line.rstrip("\n") for line in f if line.strip()]
    if len(names) != NUM_CLASSES:
        raise ValueError(f"'{path}' lists {len(names)} class names; expected {NUM_CLASSES}.")
    return {"stuff_classes": names}


def register_all_ade20k_full(root: str) -> None:
    ade_root = os.path.join(root, "ADE20K_2021_17_01")
    names_file = os.path.join(ade_root, "ade20k_full_classes.txt")
    for split, dirname in _SPLITS.items():
        name = f"ade20k_full_sem_seg_{split}"
        image_dir = os.path.join(ade_root, "images_detectron2", dirname)
        gt_dir = os.path.join(ade_root, "annotations_detectron2", dirname)
        register_checked(
            name,
            lambda x=image_dir, y=gt_dir: load_sem_seg_pairs(y, x, ".tif", ".jpg"),
            [(image_dir, _PREP), (gt_dir, _PREP)],
        )
        set_lazy_metadata(
            name,
            lambda p=names_file: read_class_names(p),
            image_root=image_dir,
            sem_seg_root=gt_dir,
            evaluator_type="sem_seg",
            ignore_label=65535,  # NUM_CLASSES is 847
        )


register_all_ade20k_full(dataset_root())
