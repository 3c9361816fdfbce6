"""COCO-format panoptic datasets: reading the JSON into detectron2 records, the metadata that the
model and the evaluators need, and semantic labels derived from panoptic PNGs."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .checked import check_panoptic_json, read_json

__all__ = [
    "panoptic_metadata",
    "load_panoptic_json",
    "read_panoptic_categories",
    "semantic_from_panoptic_record",
    "write_semantic_from_panoptic",
    "instances_json_from_panoptic",
]


def read_panoptic_categories(json_file: str) -> list[dict]:
    """The `categories` list of a COCO panoptic (or instance) JSON."""
    cats = read_json(json_file, "panoptic JSON").get("categories")
    if not cats:
        raise ValueError(f"'{json_file}' has an empty 'categories' list.")
    return cats


def panoptic_metadata(categories: Sequence[dict], all_in_thing_classes: bool = False) -> dict:
    """Metadata for categories `[{"id", "name", "isthing", "color"?}, ...]`, contiguous id =
    position in the list.

    `stuff_classes`/`stuff_colors` list every class, and `stuff_dataset_id_to_contiguous_id`
    covers every class (as upstream, so the semantic evaluator can use it);
    `thing_dataset_id_to_contiguous_id` covers the things (the model's "is thing" test).
    `thing_classes`/`thing_colors` list the things only, in contiguous-id order (as upstream's
    COCO/ADE20K registration; the COCO-style instance evaluator needs one name per thing
    category); `all_in_thing_classes=True` lists every class instead (detectron2's "standard"
    panoptic metadata). Name a contiguous id with `stuff_classes[id]`.
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
    json_info = read_json(json_file, "panoptic JSON")
    check_panoptic_json(json_info, json_file)  # ids that would pair images with wrong segments
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
    from panopticapi.utils import rgb2id

    from ..dataset_mappers._common import panoptic_to_semantic

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


def _cache_dir() -> str:
    return os.path.expanduser(
        os.getenv("MASK2FORMER_CACHE", os.path.join("~", ".cache", "mask2former"))
    )


def instances_json_from_panoptic(
    panoptic_json: str, panoptic_root: str, out_file: str | None = None
) -> str:
    """Write a COCO instance JSON (RLE masks) of the thing segments of a COCO panoptic dataset
    and return its path; category ids are the panoptic ones (things only), crowd kept as crowd.

    This is the ground truth of the instance evaluator for a panoptic dataset registered without
    `instances_json`. Default `out_file`: a file in $MASK2FORMER_CACHE (default
    ~/.cache/mask2former) keyed by the panoptic JSON's path, size and modification time, so it is
    written once.
    """
    import pycocotools.mask as mask_util
    from panopticapi.utils import rgb2id

    if out_file is None:
        st = os.stat(panoptic_json)
        key = f"{os.path.abspath(panoptic_json)}|{os.path.abspath(panoptic_root)}|"
        key += f"{st.st_size}|{st.st_mtime_ns}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        stem = os.path.splitext(os.path.basename(panoptic_json))[0]
        out_file = os.path.join(_cache_dir(), f"{stem}_instances_{digest}.json")
        if os.path.isfile(out_file):
            return out_file
    with open(panoptic_json) as f:
        data = json.load(f)
    things = [c for c in data["categories"] if c.get("isthing", 0)]
    thing_ids = {c["id"] for c in things}
    annotations = []
    for ann in data["annotations"]:
        segs = [s for s in ann["segments_info"] if s["category_id"] in thing_ids]
        if not segs:
            continue
        png = os.path.join(panoptic_root, ann["file_name"])
        pan = rgb2id(np.asarray(Image.open(png).convert("RGB")))
        for seg in segs:
            mask = pan == seg["id"]
            if not mask.any():
                continue
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            ys, xs = np.nonzero(mask)
            x, y = int(xs.min()), int(ys.min())
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": ann["image_id"],
                    "category_id": seg["category_id"],
                    "segmentation": rle,
                    "area": int(mask.sum()),
                    "bbox": [x, y, int(xs.max()) - x + 1, int(ys.max()) - y + 1],
                    "iscrowd": int(seg.get("iscrowd", 0)),
                }
            )
    images = data.get("images") or [{"id": a["image_id"]} for a in data["annotations"]]
    out = {"images": images, "annotations": annotations, "categories": things}
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    # write-then-rename: several evaluation processes may do this at once
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out_file)), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(out, f)
    os.replace(tmp, out_file)
    return out_file
