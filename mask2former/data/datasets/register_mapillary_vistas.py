"""Mapillary Vistas v1.2 semantic segmentation (`mapillary_vistas_sem_seg_{train,val}`).

Layout: mapillary_vistas/{training,validation}/images/*.jpg and .../labels/*.png (the official
label PNGs: values 0..64 = the 65 evaluated classes, 65 = unlabeled = ignore). No preparation.
"""

from __future__ import annotations

import os

from detectron2.data import MetadataCatalog

from ._utils import dataset_root, register_checked
from .checked import load_sem_seg_pairs
from .mapillary_vistas_categories import MAPILLARY_VISTAS_CLASSES, MAPILLARY_VISTAS_COLORS

MAPILLARY_PREP = (
    "Download Mapillary Vistas (v1.2 annotations) and unzip it into "
    "$DETECTRON2_DATASETS/mapillary_vistas (see datasets/README.md)."
)
_SPLITS = {"train": "training", "val": "validation"}
NUM_CLASSES = 65  # the 66th label, 'Unlabeled' (65), is ignored


def mapillary_vistas_metadata() -> dict:
    return {
        "stuff_classes": list(MAPILLARY_VISTAS_CLASSES[:NUM_CLASSES]),
        "stuff_colors": [list(c) for c in MAPILLARY_VISTAS_COLORS[:NUM_CLASSES]],
    }


def register_all_mapillary_vistas(root: str) -> None:
    for split, dirname in _SPLITS.items():
        name = f"mapillary_vistas_sem_seg_{split}"
        image_dir = os.path.join(root, "mapillary_vistas", dirname, "images")
        gt_dir = os.path.join(root, "mapillary_vistas", dirname, "labels")
        register_checked(
            name,
            lambda x=image_dir, y=gt_dir: load_sem_seg_pairs(y, x, ".png", ".jpg"),
            [(image_dir, MAPILLARY_PREP), (gt_dir, MAPILLARY_PREP)],
        )
        MetadataCatalog.get(name).set(
            image_root=image_dir,
            sem_seg_root=gt_dir,
            evaluator_type="sem_seg",
            ignore_label=NUM_CLASSES,
            **mapillary_vistas_metadata(),
        )


register_all_mapillary_vistas(dataset_root())
