"""COCO-format panoptic datasets: reading the JSON into detectron2 records, the metadata that the
model and the evaluators need, and semantic labels derived from panoptic PNGs."""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "panoptic_metadata",
    "load_panoptic_json",
    "read_panoptic_categories",
    "semantic_from_panoptic_record",
    "write_semantic_from_panoptic",
]


def read_panoptic_categories(json_file: str) -> list[dict]:
    """The `categories` list of a COCO panoptic (or instance) JSON."""
    with open(json_file) as f:
        cats = json.load(f)["categories"]
    if not cats:
        raise ValueError(f"'{json_file}' has an empty 'categories' list.")
    return cats


def panoptic_metadata(categories: Sequence[dict], all_in_thing_classes: bool = True) -> dict:
    """Metadata for categories `[{"id", "name", "isthing", "color"?}, ...]`, contiguous id =
    position in the list.

    `stuff_classes`/`stuff_colors` list every class, and `stuff_dataset_id_to_contiguous_id`
    covers every class (as upstream, so the semantic evaluator can use it);
    `thing_dataset_id_to_contiguous_id` covers the things (the model's "is thing" test).
    `thing_classes` lists every class when `all_in_thing_classes` (detectron2's Visualizer indexes
    it by contiguous id) and only the things otherwise (upstream's COCO/ADE20K registration).
    """
    colors = [list(c["color"]) if "color" in c else _color_for(i) for i, c in enumerate(categories)]
    names = [c["name"] for c in categories]
    things = [i for i, c in enumerate(categories) if c.get("isthing", 0)]
    meta = {
        "stuff_classes": names,
        "stuff_colors": colors,
        "thing_dataset_id_to_contiguous_id": {categories[i]["id"]: i for i in things},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }
    if all_in_thing_classes:
        meta["thing_classes"], meta["thing_colors"] = list(names), list(colors)
    else:
        meta["thing_classes"] = [names[i] for i in things]
        meta["thing_colors"] = [colors[i] for i in things]
    return meta


def _color_for(i: int) -> list[int]:
    """A fixed, well-spread colour for class i (used when a category has no colour)."""
    rng = np.random.RandomState(i * 7919 + 1)
    return [int(x) for x in rng.randint(0, 256, size=3)]


def load_panoptic_json(
    json_file: str,
    image_dir: str,
    gt_dir: str,
    meta: dict,
    semseg_dir: str | None = None,
) -> list[dict]:
    """Read a COCO panoptic JSON into detectron2 records.

    Each record: `file_name` (image, from the JSON's `images` list; `<png stem>.jpg` if absent),
    `image_id`, `height`/`width` (if the JSON gives them), `pan_seg_file_name`, `segments_info`
    (with contiguous `category_id` and `isthing`), and `sem_seg_file_name` if `semseg_dir`.
    """
    with open(json_file) as f:
        json_info = json.load(f)
    images = {img["id"]: img for img in json_info.get("images", [])}
    thing_map = meta["thing_dataset_id_to_contiguous_id"]
    stuff_map = meta["stuff_dataset_id_to_contiguous_id"]

    def convert(seg: dict) -> dict:
        seg = dict(seg)
        cat = seg["category_id"]
        if cat in thing_map:
            seg["category_id"], seg["isthing"] = thing_map[cat], True
        elif cat in stuff_map:
            seg["category_id"], seg["isthing"] = stuff_map[cat], False
        else:
            raise ValueError(
                f"'{json_file}': segment {seg.get('id')} has category_id {cat}, which is not in "
                "the JSON's categories."
            )
        return seg

    records = []
    for ann in json_info["annotations"]:
        image_id = ann["image_id"]
        img = images.get(image_id, {})
        image_name = img.get("file_name", os.path.splitext(ann["file_name"])[0] + ".jpg")
        record = {
            "file_name": os.path.join(image_dir, image_name),
            "image_id": image_id,
            "pan_seg_file_name": os.path.join(gt_dir, ann["file_name"]),
            "segments_info": [convert(s) for s in ann["segments_info"]],
        }
        if "height" in img and "width" in img:
            record["height"], record["width"] = img["height"], img["width"]
        if semseg_dir is not None:
            record["sem_seg_file_name"] = os.path.join(semseg_dir, ann["file_name"])
        records.append(record)
    if not records:
        raise ValueError(f"No annotations found in '{json_file}'.")
    for key in ("file_name", "pan_seg_file_name", "sem_seg_file_name"):
        if key in records[0] and not os.path.isfile(records[0][key]):
            raise FileNotFoundError(
                f"'{records[0][key]}' (listed in '{json_file}') does not exist; check the "
                "image/panoptic/semantic roots passed at registration."
            )
    return records


def semantic_from_panoptic_record(record: dict, ignore_label: int = 255) -> np.ndarray:
    """Semantic labels (H, W) int64 of a panoptic record: each segment's pixels get its
    contiguous `category_id` (crowd included), unlabeled pixels `ignore_label`.

    Use this where a panoptic dataset has no semantic PNGs (registered with `sem_seg_root=None`),
    e.g. to evaluate semantic segmentation against the panoptic ground truth.
    """
    from ..dataset_mappers._common import panoptic_to_semantic, rgb2id

    pan = np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB"))
    return panoptic_to_semantic(rgb2id(pan), record["segments_info"], ignore_label)


def write_semantic_from_panoptic(
    records: Sequence[dict], out_dir: str, ignore_label: int = 255
) -> list[dict]:
    """Write `semantic_from_panoptic_record` of every record as a PNG into `out_dir` (uint8 if
    all labels fit, else uint16) and return copies of the records with `sem_seg_file_name`."""
    os.makedirs(out_dir, exist_ok=True)
    out = []
    for r in records:
        sem = semantic_from_panoptic_record(r, ignore_label)
        path = os.path.join(out_dir, os.path.basename(r["pan_seg_file_name"]))
        dtype = np.uint8 if sem.max(initial=0) < 256 and sem.min(initial=0) >= 0 else np.uint16
        Image.fromarray(sem.astype(dtype)).save(path)
        out.append({**r, "sem_seg_file_name": path})
    return out
