"""Checks of annotation files before they are turned into records, for what detectron2's loaders
would otherwise get silently wrong:

* :func:`read_json`: a file that is not JSON (or is truncated) names the file, line and column;
* :func:`check_coco_instance_json`: duplicate image ids (one image would train with the other's
  masks), malformed polygons (odd number of coordinates: error; fewer than 3 points: dropped and
  counted), polygons lying wholly outside their image (counted; all of them: error);
* :func:`check_panoptic_json`: an annotation carrying another image's id or listed twice, images
  without an annotation entry (warning), a segment id listed twice;
* :func:`load_sem_seg_pairs`: image / label pairing that names the missing label file instead of
  silently dropping the image, and says why a folder gave no images.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..validation import InvalidInputError, MissingFileError

logger = logging.getLogger(__name__)

__all__ = [
    "check_coco_instance_json",
    "check_panoptic_json",
    "load_coco_instances",
    "load_sem_seg_pairs",
    "read_json",
]


def read_json(path: str, what: str = "annotation file") -> Any:
    """`json.load` with an error naming the file (and where it stops) when it is not valid JSON."""
    if not os.path.isfile(path):
        raise MissingFileError(f"{what} {path} does not exist. Fix: check the path you registered.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        size = os.path.getsize(path)
        cut = " The file ends there: it is probably truncated." if e.pos >= size - 2 else ""
        raise InvalidInputError(
            f"{what} {path} ({size} bytes) is not valid JSON: {e.msg} at line {e.lineno} column "
            f"{e.colno}.{cut} Fix: re-download or re-export it (an interrupted copy often leaves "
            "a truncated file)."
        ) from None
    except UnicodeDecodeError as e:
        raise InvalidInputError(
            f"{what} {path} is not a UTF-8 text file ({e.reason} at byte {e.start}); is it a JSON "
            "file at all? Fix: pass the annotation JSON."
        ) from None


def _duplicates(values) -> list:
    return [v for v, n in Counter(values).items() if n > 1]


def _outside(poly: Sequence[float], width: float, height: float) -> bool:
    xs, ys = poly[0::2], poly[1::2]
    return max(xs) < 0 or min(xs) > width or max(ys) < 0 or min(ys) > height


def _check_unique_image_ids(images: list[dict], json_file: str) -> None:
    """Two entries of 'images' with one id: each would train with the other's annotations."""
    dup = _duplicates(img.get("id") for img in images)
    if dup:
        names = [img.get("file_name") for img in images if img.get("id") == dup[0]]
        raise InvalidInputError(
            f"{json_file}: {len(dup)} image id(s) are used by more than one image, e.g. id "
            f"{dup[0]!r} by {names}. Each image would train with the other's annotations. Fix: "
            "give every entry of 'images' its own 'id' (and point each annotation's 'image_id' "
            "at its image)."
        )


def check_coco_instance_json(data: dict, json_file: str) -> Counter:
    """Check a parsed COCO instance JSON; raise on what would train wrong, return the counts
    (``polygons_dropped``, ``instances_dropped``, ``instances_outside``) and log one warning."""
    images = data.get("images") or []
    _check_unique_image_ids(images, json_file)
    sizes = {
        img.get("id"): (img.get("width"), img.get("height"), img.get("file_name")) for img in images
    }
    stats: Counter = Counter()
    outside_examples = []
    for anno in data.get("annotations") or []:
        seg = anno.get("segmentation")
        if not isinstance(seg, list) or not seg or anno.get("iscrowd", 0):
            continue
        width, height, file_name = sizes.get(anno.get("image_id"), (None, None, None))
        valid, outside = 0, 0
        for poly in seg:
            n = len(poly) if isinstance(poly, (list, tuple)) else -1
            if n % 2 == 1 or n < 0:
                raise InvalidInputError(
                    f"{json_file}: annotation id {anno.get('id')} (image {file_name}) has a "
                    f"polygon with {'an odd number of' if n > 0 else 'no list of'} coordinates "
                    f"({n}); polygons are flat lists [x1, y1, x2, y2, ...]. Fix: correct the "
                    "converter that wrote it."
                )
            if n < 6:
                stats["polygons_dropped"] += 1
                continue
            valid += 1
            if width and height and _outside(poly, width, height):
                outside += 1
        if not valid:
            stats["instances_dropped"] += 1
        elif outside == valid:
            stats["instances_outside"] += 1
            if len(outside_examples) < 3:
                outside_examples.append(f"annotation {anno.get('id')} of {file_name}")
        stats["instances_with_polygons"] += bool(valid)
    if (
        stats["instances_outside"]
        and stats["instances_outside"] == stats["instances_with_polygons"]
    ):
        raise InvalidInputError(
            f"{json_file}: every polygon lies wholly outside its image (e.g. "
            f"{', '.join(outside_examples)}); every instance would vanish (loss_mask 0). Fix: "
            "polygons are in pixels of the image ([x1, y1, ...], 0 <= x <= width), check the "
            "images' 'width'/'height' and the converter (normalised or swapped coordinates?)."
        )
    parts = []
    if stats["polygons_dropped"]:
        parts.append(f"{stats['polygons_dropped']} polygon(s) with fewer than 3 points dropped")
    if stats["instances_dropped"]:
        parts.append(f"{stats['instances_dropped']} instance(s) left without a polygon dropped")
    if stats["instances_outside"]:
        parts.append(
            f"{stats['instances_outside']} instance(s) lie wholly outside their image and train "
            f"as empty masks (e.g. {', '.join(outside_examples)})"
        )
    if parts:
        logger.warning("%s: %s.", json_file, "; ".join(parts))
    return stats


def load_coco_instances(json_file: str, image_root: str, name: str) -> list[dict]:
    """detectron2's `load_coco_json`, after :func:`check_coco_instance_json` on the file."""
    from detectron2.data.datasets import load_coco_json

    check_coco_instance_json(read_json(json_file, "COCO instance JSON"), json_file)
    return load_coco_json(json_file, image_root, name)


def check_panoptic_json(data: dict, json_file: str) -> None:
    """Check a parsed COCO panoptic JSON: one annotation per image, naming its own image, each
    segment id once; images without an annotation entry are logged (they are not trained)."""
    images = data.get("images") or []
    _check_unique_image_ids(images, json_file)
    by_id = {img.get("id"): img for img in images}
    annotations = data.get("annotations") or []
    dup = _duplicates(a.get("image_id") for a in annotations)
    if dup:
        files = [a.get("file_name") for a in annotations if a.get("image_id") == dup[0]]
        raise InvalidInputError(
            f"{json_file}: {len(dup)} image id(s) have more than one annotation, e.g. image_id "
            f"{dup[0]!r}: {files}. An annotation probably carries another image's 'image_id'. "
            "Fix: one annotation per image, its 'image_id' that of its image."
        )
    for ann in annotations:
        img = by_id.get(ann.get("image_id"))
        png = os.path.splitext(os.path.basename(str(ann.get("file_name"))))[0]
        if img is None and images:
            raise InvalidInputError(
                f"{json_file}: the annotation {ann.get('file_name')} has image_id "
                f"{ann.get('image_id')!r}, which no entry of 'images' has. Fix: correct its "
                "'image_id', or add the image to 'images'."
            )
        if img is not None and "file_name" in img:
            stem = os.path.splitext(os.path.basename(str(img["file_name"])))[0]
            if stem != png:
                raise InvalidInputError(
                    f"{json_file}: the annotation {ann.get('file_name')} has image_id "
                    f"{ann.get('image_id')!r}, which is the id of image {img['file_name']}: "
                    "the annotation carries another image's id (COCO panoptic PNGs are named "
                    "after their image). Fix: correct its 'image_id' (or its 'file_name')."
                )
        seen: dict = {}
        for s in ann.get("segments_info") or []:
            sid = s.get("id")
            if sid in seen:
                raise InvalidInputError(
                    f"{json_file}: annotation {ann.get('file_name')} lists segment id {sid} twice "
                    f"(category_id {seen[sid]} and {s.get('category_id')}); its pixels would "
                    "train as both. Fix: one segments_info entry per segment id."
                )
            seen[sid] = s.get("category_id")
    if images and annotations:
        annotated = {a.get("image_id") for a in annotations}
        missing = [img.get("file_name") for img in images if img.get("id") not in annotated]
        if missing:
            logger.warning(
                "%s: %d of %d images have no annotation entry and are not used (e.g. %s). "
                "If they should train as images without objects, add an annotation with an "
                "empty segments_info and an all-black PNG.",
                json_file,
                len(missing),
                len(images),
                ", ".join(map(str, missing[:3])),
            )


def _files(root: str, ext: str) -> dict[str, str]:
    """name without extension -> path, of the files in `root` ending in `ext` (not recursive,
    as detectron2's `load_sem_seg`)."""
    return {n[: -len(ext)]: os.path.join(root, n) for n in os.listdir(root) if n.endswith(ext)}


def _extensions(root: str) -> str:
    exts = Counter(os.path.splitext(n)[1] or "(none)" for n in os.listdir(root))
    return ", ".join(f"{n} x {e}" for e, n in exts.most_common(5)) or "no files at all"


def load_sem_seg_pairs(
    gt_root: str, image_root: str, gt_ext: str = ".png", image_ext: str = ".jpg"
) -> list[dict]:
    """Records pairing `image_root/<stem><image_ext>` with `gt_root/<stem><gt_ext>`.

    An image without its label file raises MissingFileError naming both (detectron2's
    `load_sem_seg` silently drops it); labels without an image are logged; no image at all
    raises, saying which extensions the folder holds.
    """
    gt_ext, image_ext = "." + gt_ext.lstrip("."), "." + image_ext.lstrip(".")
    images, labels = _files(image_root, image_ext), _files(gt_root, gt_ext)
    if not images:
        raise InvalidInputError(
            f"semantic dataset: no '*{image_ext}' image under {image_root} (it holds: "
            f"{_extensions(image_root)}). Fix: pass the image extension as image_ext when "
            "registering (e.g. image_ext='.png'), or the right image_root."
        )
    missing = sorted(k for k in images if k not in labels)
    if missing:
        raise MissingFileError(
            f"semantic label file {os.path.join(gt_root, missing[0] + gt_ext)} (annotation of "
            f"image {images[missing[0]]}) does not exist ({len(missing)} of {len(images)} images "
            "have no label file). Fix: add the label PNGs, remove those images, or pass the "
            "right sem_seg_root / label_ext."
        )
    extra = [k for k in labels if k not in images]
    if extra:
        logger.warning(
            "semantic dataset %s: %d label file(s) have no image (e.g. %s); they are not used.",
            gt_root,
            len(extra),
            labels[extra[0]],
        )
    return [{"file_name": images[k], "sem_seg_file_name": labels[k]} for k in sorted(images)]
