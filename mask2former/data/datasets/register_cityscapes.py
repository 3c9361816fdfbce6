"""Cityscapes: detectron2's built-in `cityscapes_fine_{sem_seg,instance_seg,panoptic}_{train,val}`
with colours added (from cityscapesscripts' label table, trainId order) and missing-file errors
that name the cityscapesscripts preparation step.

Layout: cityscapes/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png,
cityscapes/gtFine/{train,val}/<city>/*_gtFine_{labelIds,labelTrainIds,instanceIds,polygons}...,
cityscapes/gtFine/cityscapes_panoptic_{train,val}/ + cityscapes_panoptic_{train,val}.json.
"""

from __future__ import annotations

import os

from detectron2.data import MetadataCatalog

from ._utils import dataset_root, wrap_with_path_check

_PREP = {
    "images": "Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
    "cityscapes-dataset.com and unzip them into $DETECTRON2_DATASETS/cityscapes.",
    "sem_seg": "Run `CITYSCAPES_DATASET=$DETECTRON2_DATASETS/cityscapes python -m "
    "cityscapesscripts.preparation.createTrainIdLabelImgs` (writes *_labelTrainIds.png).",
    "panoptic": "Run `CITYSCAPES_DATASET=$DETECTRON2_DATASETS/cityscapes python -m "
    "cityscapesscripts.preparation.createPanopticImgs`.",
}


def _colors():
    """(stuff_colors for the 19 trainIds, thing_colors for the 8 thing trainIds)."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError:  # optional dependency: no colours then
        return None, None
    train = sorted((lb for lb in labels if 0 <= lb.trainId < 255), key=lambda lb: lb.trainId)
    stuff = [list(lb.color) for lb in train]
    things = [list(lb.color) for lb in train if lb.hasInstances]
    return stuff, things


def register_all_cityscapes_checks(root: str) -> None:
    stuff_colors, thing_colors = _colors()
    for split in ("train", "val"):
        img = os.path.join(root, "cityscapes/leftImg8bit", split)
        gt = os.path.join(root, "cityscapes/gtFine", split)
        for task in ("sem_seg", "instance_seg"):
            name = f"cityscapes_fine_{task}_{split}"
            wrap_with_path_check(name, [(img, _PREP["images"]), (gt, _PREP["images"])])
            if name in MetadataCatalog.list() and stuff_colors is not None:
                meta = MetadataCatalog.get(name)
                if not hasattr(meta, "stuff_colors"):
                    meta.stuff_colors = stuff_colors
                if not hasattr(meta, "thing_colors"):
                    meta.thing_colors = thing_colors
        name = f"cityscapes_fine_panoptic_{split}"
        wrap_with_path_check(
            name,
            [
                (img, _PREP["images"]),
                (
                    os.path.join(root, f"cityscapes/gtFine/cityscapes_panoptic_{split}.json"),
                    _PREP["panoptic"],
                ),
                (
                    os.path.join(root, f"cityscapes/gtFine/cityscapes_panoptic_{split}"),
                    _PREP["panoptic"],
                ),
            ],
        )


register_all_cityscapes_checks(dataset_root())
