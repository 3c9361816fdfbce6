"""Register your own data in one call (see docs/datasets.md for a complete example).

* `register_instance_dataset`: COCO instance JSON + image folder.
* `register_panoptic_dataset`: COCO panoptic JSON + panoptic PNGs (+ optional semantic PNGs).
* `register_semantic_dataset`: image folder + label-PNG folder + a class list.

Each sets the metadata that the mappers, the model's post-processing and the evaluators read.
Class lists that come from a JSON are read when first needed, so registering is instant.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial

from detectron2.data import DatasetCatalog, MetadataCatalog

from ._utils import register_checked, set_lazy_metadata
from .checked import load_coco_instances, load_sem_seg_pairs, read_json
from .panoptic import (
    load_panoptic_json,
    panoptic_metadata,
    read_panoptic_categories,
)

__all__ = [
    "register_instance_dataset",
    "register_panoptic_dataset",
    "register_semantic_dataset",
    "load_registered_panoptic",
]


def _check_new(name: str) -> None:
    if name in DatasetCatalog.list():
        raise ValueError(
            f"Dataset '{name}' is already registered; pick another name or call "
            f"DatasetCatalog.remove('{name}') and MetadataCatalog.remove('{name}') first."
        )


def _instance_metadata(json_file: str) -> dict:
    """Thing classes of a COCO instance JSON, exactly as detectron2's `load_coco_json` sets them
    (categories sorted by id, contiguous id = rank)."""
    cats = sorted(read_json(json_file, "COCO instance JSON")["categories"], key=lambda c: c["id"])
    meta = {
        "thing_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }
    if all("color" in c for c in cats):
        meta["thing_colors"] = [list(c["color"]) for c in cats]
    return meta


def register_instance_dataset(
    name: str, json_file: str, image_root: str, evaluator_type: str = "coco"
) -> None:
    """Register a COCO instance-segmentation dataset.

    Args:
        name: the name to use in `DATASETS.TRAIN`/`DATASETS.TEST`.
        json_file: COCO instance JSON (`images`, `annotations` with `segmentation` as polygons
            or RLE, `categories`). Category ids may be any integers; the model sees them as
            0..K-1 in increasing id order (`thing_dataset_id_to_contiguous_id`).
        image_root: folder that the JSON's `images[].file_name` are relative to.
        evaluator_type: "coco" (COCO mask AP).

    Train with `INPUT.DATASET_MAPPER_NAME mask_former_instance` (or `coco_instance_lsj`),
    `MODEL.SEM_SEG_HEAD.NUM_CLASSES K`, `MODEL.MASK_FORMER.TEST.INSTANCE_ON True`.
    """
    _check_new(name)
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    register_checked(
        name,
        lambda: load_coco_instances(json_file, image_root, name),  # checked first (checked.py)
        [
            (json_file, "Pass the path of a COCO instance JSON."),
            (image_root, "Pass the folder holding the images."),
        ],
    )
    set_lazy_metadata(
        name,
        lambda: _instance_metadata(json_file),
        json_file=json_file,
        image_root=image_root,
        evaluator_type=evaluator_type,
    )


def load_registered_panoptic(
    name: str,
    panoptic_json: str,
    image_root: str,
    panoptic_root: str,
    sem_seg_root: str | None = None,
) -> list[dict]:
    """The records of the registered panoptic dataset `name` (`load_panoptic_json`), with the
    thing/stuff dataset-id -> contiguous-id maps taken from its metadata (which may read them
    from the panoptic JSON on first use)."""
    meta = MetadataCatalog.get(name)
    return load_panoptic_json(
        panoptic_json,
        image_root,
        panoptic_root,
        {
            "thing_dataset_id_to_contiguous_id": meta.thing_dataset_id_to_contiguous_id,
            "stuff_dataset_id_to_contiguous_id": meta.stuff_dataset_id_to_contiguous_id,
        },
        semseg_dir=sem_seg_root,
    )


def register_panoptic_dataset(
    name: str,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str | None = None,
    instances_json: str | None = None,
    label_divisor: int = 1000,
    ignore_label: int = 255,
) -> None:
    """Register a COCO panoptic-segmentation dataset.

    Args:
        name: the name to use in `DATASETS.TRAIN`/`DATASETS.TEST`.
        image_root: folder of the images (names from the JSON's `images[].file_name`).
        panoptic_root: folder of the panoptic PNGs (id = R + 256 G + 256^2 B).
        panoptic_json: COCO panoptic JSON; its `categories` (`id`, `name`, `isthing`, optional
            `color`) define the classes: contiguous id = position in that list.
        sem_seg_root: optional folder of semantic PNGs (same file names as the panoptic PNGs,
            pixel value = contiguous id, `ignore_label` elsewhere). Without it the panoptic
            mapper derives semantic labels from the panoptic PNG (see
            `panoptic.semantic_from_panoptic_record`).
        instances_json: optional COCO instance JSON of the same images, for instance AP (same
            category ids). Without it, the instance evaluator writes one from the panoptic PNGs
            (`instances_json_from_panoptic`); reading the metadata writes nothing.
        label_divisor: panoptic id = category * label_divisor + instance, in model outputs.
        ignore_label: semantic label of unlabeled pixels.

    Train with `INPUT.DATASET_MAPPER_NAME mask_former_panoptic` (or `coco_panoptic_lsj`),
    `MODEL.SEM_SEG_HEAD.NUM_CLASSES` = number of categories, `TEST.PANOPTIC_ON True`.
    """
    _check_new(name)
    image_root, panoptic_root = os.fspath(image_root), os.fspath(panoptic_root)
    panoptic_json = os.fspath(panoptic_json)
    sem_seg_root = os.fspath(sem_seg_root) if sem_seg_root is not None else None

    def categories_meta() -> dict:
        return panoptic_metadata(read_panoptic_categories(panoptic_json))

    load = partial(
        load_registered_panoptic, name, panoptic_json, image_root, panoptic_root, sem_seg_root
    )
    paths = [
        (panoptic_json, "Pass the path of a COCO panoptic JSON."),
        (image_root, "Pass the folder holding the images."),
        (panoptic_root, "Pass the folder holding the panoptic PNGs."),
    ]
    if sem_seg_root is not None:
        paths.append((sem_seg_root, "Pass the folder of semantic PNGs, or sem_seg_root=None."))
    register_checked(name, load, paths)
    static = dict(
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root,
        evaluator_type="coco_panoptic_seg",
        ignore_label=ignore_label,
        label_divisor=label_divisor,
    )
    if instances_json is not None:
        static["json_file"] = os.fspath(instances_json)
    set_lazy_metadata(name, categories_meta, **static)


def register_semantic_dataset(
    name: str,
    image_root: str,
    sem_seg_root: str,
    stuff_classes: Sequence[str],
    ignore_label: int = 255,
    image_ext: str = ".jpg",
    label_ext: str = ".png",
    stuff_colors: Sequence[Sequence[int]] | None = None,
) -> None:
    """Register a semantic-segmentation dataset: `image_root/<stem><image_ext>` pairs with
    `sem_seg_root/<stem><label_ext>` (same stem), one label PNG per image (a missing one
    raises) with pixel value = class index into `stuff_classes` and `ignore_label` for unlabeled
    pixels.

    Train with `INPUT.DATASET_MAPPER_NAME mask_former_semantic`,
    `MODEL.SEM_SEG_HEAD.NUM_CLASSES len(stuff_classes)`, `MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    ignore_label`.
    """
    _check_new(name)
    image_root, sem_seg_root = os.fspath(image_root), os.fspath(sem_seg_root)
    stuff_classes = list(stuff_classes)
    if stuff_colors is not None and len(stuff_colors) != len(stuff_classes):
        raise ValueError(
            f"stuff_colors has {len(stuff_colors)} entries but stuff_classes has "
            f"{len(stuff_classes)}; give one [R, G, B] per class or None."
        )
    if 0 <= ignore_label < len(stuff_classes):
        raise ValueError(
            f"ignore_label {ignore_label} is a class index (there are {len(stuff_classes)} "
            "classes); use a value outside 0..K-1, e.g. 255."
        )

    register_checked(
        name,
        lambda: load_sem_seg_pairs(sem_seg_root, image_root, label_ext, image_ext),
        [
            (image_root, "Pass the folder holding the images."),
            (sem_seg_root, "Pass the folder holding the label PNGs."),
        ],
    )
    colors = [list(c) for c in stuff_colors] if stuff_colors is not None else None
    meta = dict(
        stuff_classes=stuff_classes,
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        evaluator_type="sem_seg",
        ignore_label=ignore_label,
    )
    if colors is not None:
        meta["stuff_colors"] = colors
    MetadataCatalog.get(name).set(**meta)
