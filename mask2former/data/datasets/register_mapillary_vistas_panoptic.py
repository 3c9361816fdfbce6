"""Mapillary Vistas v1.2 panoptic segmentation (`mapillary_vistas_panoptic_{train,val}`).

Layout: mapillary_vistas/{training,validation}/{images/*.jpg, labels/*.png,
panoptic/*.png, panoptic/panoptic_2018.json} (official files, no preparation). 65 classes,
contiguous id = position in the JSON's categories (= the semantic label value); which classes
are things (37) is read from the JSON's `isthing` on first use. ignore 65, label_divisor 1000.
"""

from __future__ import annotations

import os
from functools import partial

from ._utils import dataset_root, register_checked, set_lazy_metadata
from .custom import load_registered_panoptic
from .panoptic import read_panoptic_categories
from .register_mapillary_vistas import MAPILLARY_PREP, NUM_CLASSES, mapillary_vistas_metadata

_SPLITS = {"train": "training", "val": "validation"}


def _category_meta(panoptic_json: str) -> dict:
    cats = read_panoptic_categories(panoptic_json)
    if len(cats) != NUM_CLASSES:
        raise ValueError(
            f"'{panoptic_json}' has {len(cats)} categories; Mapillary Vistas v1.2 has "
            f"{NUM_CLASSES} (v2.0 is not supported by this registration: use "
            "register_panoptic_dataset for it)."
        )
    names = mapillary_vistas_metadata()
    things = [i for i, c in enumerate(cats) if c.get("isthing", 0)]
    return {  # as upstream: names indexed by contiguous id in both lists
        "thing_classes": names["stuff_classes"],
        "thing_colors": names["stuff_colors"],
        "thing_dataset_id_to_contiguous_id": {cats[i]["id"]: i for i in things},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


def register_all_mapillary_vistas_panoptic(root: str) -> None:
    for split, dirname in _SPLITS.items():
        name = f"mapillary_vistas_panoptic_{split}"
        base = os.path.join(root, "mapillary_vistas", dirname)
        image_root = os.path.join(base, "images")
        panoptic_root = os.path.join(base, "panoptic")
        panoptic_json = os.path.join(base, "panoptic", "panoptic_2018.json")
        sem_seg_root = os.path.join(base, "labels")
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
                (image_root, MAPILLARY_PREP),
                (panoptic_json, MAPILLARY_PREP),
                (sem_seg_root, MAPILLARY_PREP),
            ],
        )
        set_lazy_metadata(
            name,
            lambda j=panoptic_json: _category_meta(j),
            stuff_classes=mapillary_vistas_metadata()["stuff_classes"],
            stuff_colors=mapillary_vistas_metadata()["stuff_colors"],
            panoptic_root=panoptic_root,
            image_root=image_root,
            panoptic_json=panoptic_json,
            sem_seg_root=sem_seg_root,
            evaluator_type="mapillary_vistas_panoptic_seg",
            ignore_label=NUM_CLASSES,
            label_divisor=1000,
        )


register_all_mapillary_vistas_panoptic(dataset_root())
