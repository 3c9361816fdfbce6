"""COCO panoptic with semantic labels (`coco_2017_{train,val}_panoptic_with_sem_seg`).

Layout under $DETECTRON2_DATASETS:
    coco/{train,val}2017/*.jpg
    coco/panoptic_{train,val}2017/*.png, coco/annotations/panoptic_{train,val}2017.json
    coco/panoptic_semseg_{train,val}2017/*.png  (prepare_coco_semantic_annos_from_panoptic_annos.py)
    coco/annotations/instances_{train,val}2017.json  (for instance AP)

133 classes; contiguous id = position in detectron2's COCO_CATEGORIES (things first, 0..79).
As upstream, detectron2's own `coco_2017_{train,val}_panoptic` get `thing_classes`/`thing_colors`
restricted to the 80 things (so the COCO instance evaluator's 0..79 check holds).
"""

from __future__ import annotations

import os

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from ._utils import dataset_root, register_checked, wrap_with_path_check
from .panoptic import load_panoptic_json, panoptic_metadata

__all__ = ["coco_panoptic_metadata"]

COCO_PREP = {
    "images": "Download COCO 2017 images and panoptic annotations into $DETECTRON2_DATASETS/coco "
    "(see datasets/README.md).",
    "sem_seg": "Run `python datasets/prepare_coco_semantic_annos_from_panoptic_annos.py`.",
}

_SPLITS = {
    "coco_2017_train_panoptic": (
        "coco/train2017",
        "coco/panoptic_train2017",
        "coco/annotations/panoptic_train2017.json",
        "coco/panoptic_semseg_train2017",
        "coco/annotations/instances_train2017.json",
    ),
    "coco_2017_val_panoptic": (
        "coco/val2017",
        "coco/panoptic_val2017",
        "coco/annotations/panoptic_val2017.json",
        "coco/panoptic_semseg_val2017",
        "coco/annotations/instances_val2017.json",
    ),
}


def coco_panoptic_metadata() -> dict:
    """Upstream's metadata: 80 thing_classes, 133 stuff_classes, stuff map over all classes."""
    return panoptic_metadata(COCO_CATEGORIES)


def register_all_coco_panoptic_annos_sem_seg(root: str) -> None:
    meta = coco_panoptic_metadata()
    for panoptic_name, (img, pan, pan_json, sem, ins_json) in _SPLITS.items():
        img, pan, pan_json, sem, ins_json = (
            os.path.join(root, p) for p in (img, pan, pan_json, sem, ins_json)
        )

        # detectron2's built-in panoptic split: upstream's thing_classes override + path checks
        if panoptic_name in MetadataCatalog.list():
            d2_meta = MetadataCatalog.get(panoptic_name)
            for key in ("thing_classes", "thing_colors"):
                if hasattr(d2_meta, key):
                    delattr(d2_meta, key)
            d2_meta.set(thing_classes=meta["thing_classes"], thing_colors=meta["thing_colors"])
        wrap_with_path_check(
            panoptic_name,
            [
                (img, COCO_PREP["images"]),
                (pan_json, COCO_PREP["images"]),
                (pan, COCO_PREP["images"]),
            ],
        )

        name = panoptic_name + "_with_sem_seg"
        register_checked(
            name,
            lambda j=pan_json, i=img, p=pan, s=sem: load_panoptic_json(j, i, p, meta, semseg_dir=s),
            [
                (img, COCO_PREP["images"]),
                (pan_json, COCO_PREP["images"]),
                (pan, COCO_PREP["images"]),
                (sem, COCO_PREP["sem_seg"]),
            ],
        )
        MetadataCatalog.get(name).set(
            sem_seg_root=sem,
            panoptic_root=pan,
            image_root=img,
            panoptic_json=pan_json,
            json_file=ins_json,
            evaluator_type="coco_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
            **meta,
        )

    # COCO instance splits (detectron2 built-ins): clear missing-files errors
    for name, split in (("coco_2017_train", "train2017"), ("coco_2017_val", "val2017")):
        wrap_with_path_check(
            name,
            [
                (os.path.join(root, "coco", split), COCO_PREP["images"]),
                (
                    os.path.join(root, f"coco/annotations/instances_{split}.json"),
                    COCO_PREP["images"],
                ),
            ],
        )


register_all_coco_panoptic_annos_sem_seg(dataset_root())
