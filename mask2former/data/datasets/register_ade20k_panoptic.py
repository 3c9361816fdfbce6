"""ADE20K-150 panoptic (`ade20k_panoptic_{train,val}`), plus colours for detectron2's
`ade20k_sem_seg_{train,val}`.

Layout under $DETECTRON2_DATASETS/ADEChallengeData2016 (see datasets/README.md):
    images/{training,validation}/*.jpg
    annotations_detectron2/{training,validation}/*.png        (prepare_ade20k_sem_seg.py)
    ade20k_panoptic_{train,val}/*.png, ade20k_panoptic_{train,val}.json  (prepare_ade20k_pan_seg.py)
    ade20k_instance_{train,val}.json                          (prepare_ade20k_ins_seg.py)

150 classes; contiguous id = ADE150 label (0..149) = panoptic category id. Stuff maps cover all
150 classes (for the semantic evaluator); the 100 thing classes are read from the prepared files.
"""

from __future__ import annotations

import json
import os
from functools import partial

from detectron2.data import MetadataCatalog

from ._utils import dataset_root, register_checked, set_lazy_metadata, wrap_with_path_check
from .ade20k_categories import ADE20K_150_CLASSES, ADE20K_150_COLORS, read_catid_mapping
from .custom import load_registered_panoptic

__all__ = ["ade20k_thing_ids", "ADE20K_PREP"]

ADE20K_PREP = {
    "images": "Download ADEChallengeData2016 (the MIT SceneParsing benchmark) and unzip it under "
    "$DETECTRON2_DATASETS.",
    "sem_seg": "Run `python datasets/prepare_ade20k_sem_seg.py`.",
    "panoptic": "Run `python datasets/prepare_ade20k_pan_seg.py` (needs the ADE20K instance "
    "annotations; see datasets/README.md).",
    "instance": "Run `python datasets/prepare_ade20k_ins_seg.py` (needs the ADE20K instance "
    "annotations; see datasets/README.md).",
}
_SPLITS = {"train": "training", "val": "validation"}


def ade20k_thing_ids(ade_root: str, split: str) -> list[int]:
    """The ADE150 labels (0-based) of the 100 thing classes, from the first file found: the
    category-mapping table, the panoptic JSON, or the instance JSON."""
    # the table sits next to ADEChallengeData2016/, where the preparation scripts look for it
    mapping_file = os.path.join(os.path.dirname(ade_root), "ade20k_instance_catid_mapping.txt")
    if os.path.isfile(mapping_file):
        return sorted(set(read_catid_mapping(mapping_file).values()))
    pan_json = os.path.join(ade_root, f"ade20k_panoptic_{split}.json")
    if os.path.isfile(pan_json):
        with open(pan_json) as f:
            return sorted(c["id"] for c in json.load(f)["categories"] if c.get("isthing", 0))
    ins_json = os.path.join(ade_root, f"ade20k_instance_{split}.json")
    if os.path.isfile(ins_json):
        with open(ins_json) as f:
            return sorted(c["id"] for c in json.load(f)["categories"])
    raise FileNotFoundError(
        f"the ADE20K thing classes come from '{mapping_file}', '{pan_json}' or '{ins_json}', and "
        f"none exists. {ADE20K_PREP['panoptic']}"
    )


def _thing_meta(ade_root: str, split: str) -> dict:
    things = ade20k_thing_ids(ade_root, split)
    return {  # as upstream: thing_classes lists the things only
        "thing_classes": [ADE20K_150_CLASSES[i] for i in things],
        "thing_colors": [ADE20K_150_COLORS[i] for i in things],
        "thing_dataset_id_to_contiguous_id": {i: i for i in things},
    }


def register_all_ade20k_panoptic(root: str) -> None:
    ade_root = os.path.join(root, "ADEChallengeData2016")
    for split, dirname in _SPLITS.items():
        name = f"ade20k_panoptic_{split}"
        image_root = os.path.join(ade_root, "images", dirname)
        panoptic_root = os.path.join(ade_root, f"ade20k_panoptic_{split}")
        panoptic_json = os.path.join(ade_root, f"ade20k_panoptic_{split}.json")
        sem_seg_root = os.path.join(ade_root, "annotations_detectron2", dirname)
        instance_json = os.path.join(ade_root, f"ade20k_instance_{split}.json")
        register_checked(
            name,
            partial(
                load_registered_panoptic,
                name,
                panoptic_json,
                image_root,
                panoptic_root,
                sem_seg_root,
            ),
            [
                (image_root, ADE20K_PREP["images"]),
                (sem_seg_root, ADE20K_PREP["sem_seg"]),
                (panoptic_json, ADE20K_PREP["panoptic"]),
                (panoptic_root, ADE20K_PREP["panoptic"]),
            ],
        )
        set_lazy_metadata(
            name,
            lambda a=ade_root, s=split: _thing_meta(a, s),
            stuff_classes=list(ADE20K_150_CLASSES),
            stuff_colors=[list(c) for c in ADE20K_150_COLORS],
            # all 150 classes, "to use the sem_seg evaluator" (upstream)
            stuff_dataset_id_to_contiguous_id={i: i for i in range(150)},
            panoptic_root=panoptic_root,
            image_root=image_root,
            panoptic_json=panoptic_json,
            sem_seg_root=sem_seg_root,
            json_file=instance_json,
            evaluator_type="ade20k_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
        )

        # detectron2's built-in semantic split: add colours and a clear missing-files error.
        sem_name = f"ade20k_sem_seg_{split}"
        if sem_name in MetadataCatalog.list():
            meta = MetadataCatalog.get(sem_name)
            if not hasattr(meta, "stuff_colors"):
                meta.stuff_colors = [list(c) for c in ADE20K_150_COLORS]
        wrap_with_path_check(
            sem_name, [(image_root, ADE20K_PREP["images"]), (sem_seg_root, ADE20K_PREP["sem_seg"])]
        )


register_all_ade20k_panoptic(dataset_root())
