"""Checks of the config against the datasets it names, run before the data loaders are built:

* :func:`check_num_classes`: ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` must equal the dataset's number of
  classes. Larger trains classes that never occur (and a model whose outputs the evaluators
  cannot map); smaller cannot represent the dataset's ids. Both are errors naming the key.
* :func:`explain_empty_dataset`: detectron2's bare "Dataset 'x' is empty!" / "No valid data found"
  assertions become errors that say why (no records, or every image lost its annotations).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)

__all__ = ["EmptyDatasetError", "check_num_classes", "dataset_class_names", "explain_empty_dataset"]

# Train mappers whose model predicts only the dataset's thing classes.
INSTANCE_MAPPERS = ("mask_former_instance", "coco_instance_lsj")


class EmptyDatasetError(ValueError):
    """A training dataset that gives no usable image; the message says why."""


def dataset_class_names(name: str, instance_only: bool) -> tuple[str, list[str]] | None:
    """("stuff_classes" | "thing_classes", names) of dataset `name`'s metadata, or None when the
    metadata has no class list (or it cannot be read yet)."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(name)
    keys = ("thing_classes",) if instance_only else ("stuff_classes", "thing_classes")
    for key in keys:
        try:
            names = meta.get(key, None)
        except AttributeError:  # lazy metadata whose files are missing: reported elsewhere
            return None
        if names is not None:
            return key, list(names)
    return None


def check_num_classes(cfg, dataset_names: Sequence[str], what: str = "DATASETS.TRAIN") -> None:
    """Raise ValueError when MODEL.SEM_SEG_HEAD.NUM_CLASSES differs from a dataset's class count."""
    num_classes = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    instance_only = cfg.INPUT.DATASET_MAPPER_NAME in INSTANCE_MAPPERS
    for name in dataset_names:
        found = dataset_class_names(name, instance_only)
        if found is None:
            continue
        key, names = found
        if len(names) == num_classes:
            continue
        shown = ", ".join(names[:6]) + (" ..." if len(names) > 6 else "")
        if num_classes > len(names):
            effect = (
                f"the model would learn {num_classes - len(names)} classes that never occur, "
                "and its outputs could not be mapped to the dataset's classes at evaluation"
            )
        else:
            effect = f"class ids {num_classes}..{len(names) - 1} of the dataset cannot be predicted"
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} but dataset '{name}' ({what}) has "
            f"{len(names)} classes (metadata {key}: {shown}): {effect}. Fix: set "
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {len(names)}"
            + (
                " (instance models count thing classes only)"
                if key == "thing_classes" and instance_only
                else ""
            )
            + ", or register the dataset with the class list the model is meant for."
        )


def explain_empty_dataset(cfg, err: AssertionError) -> Exception:
    """An error saying why the training datasets gave no usable record (for detectron2's asserts)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    msg = str(err)
    if "is empty" not in msg and "No valid data found" not in msg:
        return err
    parts = []
    for name in cfg.DATASETS.TRAIN:
        records = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name).as_dict()  # no lazy loading here
        source = ", ".join(
            f"{k} {meta[k]}"
            for k in ("json_file", "panoptic_json", "image_root", "sem_seg_root")
            if meta.get(k)
        )
        source = f" (from {source})" if source else ""
        if not records:
            parts.append(
                f"'{name}' gave no records at all{source}: the annotation file lists no images, "
                "or the image folder holds no file with the registered extension"
            )
            continue
        with_annos = [r for r in records if r.get("annotations")]
        if "annotations" in records[0] and not with_annos:
            parts.append(
                f"'{name}' has {len(records)} images, but none has a usable annotation{source} "
                "(instances without a valid polygon are dropped when loading: see the warning "
                "above), and DATALOADER.FILTER_EMPTY_ANNOTATIONS True removes such images"
            )
        else:
            parts.append(f"'{name}' has {len(records)} records{source}")
    return EmptyDatasetError(
        f"No training image is left ({msg.strip()}): " + "; ".join(parts) + ". Fix: check the "
        "annotation file and the image folder / extension passed at registration."
    )
