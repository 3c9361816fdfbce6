"""Checking annotations without decoding anything: category ids, polygons, and every record of a
dataset up front (counts of what was dropped, logged once per dataset)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InvalidInputError, _where, require_file

logger = logging.getLogger(__name__)

__all__ = [
    "check_category_id",
    "check_instance_annotations",
    "clean_polygons",
    "validate_dataset_dicts",
]


def check_category_id(
    category_id: Any,
    valid_ids: Iterable[int] | int,
    file_name: str | None = None,
    *,
    image_file: str | None = None,
    what: str = "annotation",
    names: Sequence[str] | None = None,
) -> None:
    """`category_id` must be one of `valid_ids` (or in range(valid_ids) when an int)."""
    valid = set(range(valid_ids)) if isinstance(valid_ids, int) else {int(v) for v in valid_ids}
    try:
        ok = int(category_id) in valid
    except (TypeError, ValueError):
        ok = False
    if ok:
        return
    lo_hi = f"{min(valid)}..{max(valid)}" if valid else "none"
    named = ""
    if names is not None and valid == set(range(len(names))):
        shown = ", ".join(f"{i}={n}" for i, n in enumerate(names[:10]))
        named = f" ({shown}{' ...' if len(names) > 10 else ''})"
    raise InvalidInputError(
        f"{what} in {_where(file_name, image_file)} has category_id {category_id!r}, which is not "
        f"a category of the dataset's metadata (valid ids: {lo_hi}{named}). Fix: add the category "
        "to the dataset's categories (thing_classes / stuff_classes, or 'categories' in the JSON), "
        "or correct the id. COCO-style JSON ids are dataset ids, mapped to contiguous ids through "
        "thing_dataset_id_to_contiguous_id / stuff_dataset_id_to_contiguous_id."
    )


def _polygon_length(poly: Any) -> int:
    if isinstance(poly, (list, tuple)) and (not poly or not isinstance(poly[0], (list, tuple))):
        return len(poly)  # the usual flat list: no array conversion (fast on COCO-sized data)
    return int(np.asarray(poly, dtype=np.float64).size)


def clean_polygons(
    segmentation: Any, file_name: str | None = None, *, what: str = "annotation"
) -> tuple[Any, int]:
    """Drop polygons with < 3 points; return (cleaned segmentation, number dropped).

    RLE dicts are returned unchanged. A polygon with an odd number of coordinates raises.
    """
    if not isinstance(segmentation, list):
        return segmentation, 0
    kept, dropped = [], 0
    for poly in segmentation:
        n = _polygon_length(poly)
        if n % 2 == 1:
            raise InvalidInputError(
                f"{what} in {file_name}: a polygon has an odd number of coordinates "
                f"({n}); polygons are flat lists [x1, y1, x2, y2, ...]. Fix: correct the "
                "annotation converter that wrote it."
            )
        if n < 6:
            dropped += 1
            continue
        kept.append(poly)
    return kept, dropped


def check_instance_annotations(
    dataset_dict: Mapping[str, Any],
    num_classes: int | None = None,
    *,
    stats: Counter | None = None,
    names: Sequence[str] | None = None,
) -> list[dict]:
    """Check and clean ``dataset_dict["annotations"]``; return the annotations to use.

    Drops polygons with < 3 points (and instances left without any), counting them in `stats`
    (``polygons_dropped``, ``instances_dropped``); raises on category ids outside
    ``range(num_classes)``.
    """
    file_name = dataset_dict.get("file_name")
    out = []
    for i, anno in enumerate(dataset_dict.get("annotations", []) or []):
        if anno.get("iscrowd", 0) == 0 and num_classes is not None:
            check_category_id(
                anno.get("category_id"),
                num_classes,
                file_name,
                what=f"annotation #{i}",
                names=names,
            )
        seg = anno.get("segmentation")
        if isinstance(seg, list):
            seg, dropped = clean_polygons(seg, file_name, what=f"annotation #{i}")
            if dropped:
                if stats is not None:
                    stats["polygons_dropped"] += dropped
                if not seg:
                    if stats is not None:
                        stats["instances_dropped"] += 1
                    continue
                anno = {**anno, "segmentation": seg}
        out.append(anno)
    return out


def validate_dataset_dicts(
    dataset_dicts: list[dict],
    dataset_name: str = "",
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    check_files: bool = False,
) -> list[dict]:
    """Check every record up front (no decoding); return the records with bad polygons removed.

    Logs one warning per dataset with counts (images without annotations, polygons with < 3
    points dropped, instances left without a polygon); raises :class:`InvalidInputError` on the
    first category id that is not in the metadata and, with ``check_files``, on the first missing
    image / annotation file.
    """
    if class_names is not None and num_classes is None:
        num_classes = len(class_names)
    stats: Counter = Counter()
    out = []
    for d in dataset_dicts:
        if check_files:
            require_file(d.get("file_name", ""), "image")
            for key, what in (
                ("sem_seg_file_name", "semantic label file"),
                ("pan_seg_file_name", "panoptic annotation PNG"),
            ):
                if key in d:
                    require_file(d[key], what, image_file=d.get("file_name"))
        if "annotations" in d:
            annos = check_instance_annotations(d, num_classes, stats=stats, names=class_names)
            if not annos:
                stats["images_without_annotations"] += 1
            if len(annos) != len(d["annotations"]) or any(
                a is not b for a, b in zip(annos, d["annotations"])
            ):
                d = {**d, "annotations": annos}
        if "segments_info" in d:
            if not d["segments_info"]:
                stats["images_without_segments"] += 1
            if num_classes is not None:
                for s in d["segments_info"]:
                    check_category_id(
                        s.get("category_id"),
                        num_classes,
                        d.get("pan_seg_file_name"),
                        image_file=d.get("file_name"),
                        what=f"segment {s.get('id')}",
                        names=class_names,
                    )
        out.append(d)
    if stats:
        parts = []
        if stats["images_without_annotations"]:
            parts.append(
                f"{stats['images_without_annotations']} image(s) have an empty annotation "
                "list (kept: they train 'no object'; DATALOADER.FILTER_EMPTY_ANNOTATIONS "
                "drops them for instance datasets)"
            )
        if stats["images_without_segments"]:
            parts.append(f"{stats['images_without_segments']} image(s) have no panoptic segments")
        if stats["polygons_dropped"]:
            parts.append(
                f"{stats['polygons_dropped']} polygon(s) with fewer than 3 points were dropped"
            )
        if stats["instances_dropped"]:
            parts.append(
                f"{stats['instances_dropped']} instance(s) had no valid polygon left and "
                "were dropped"
            )
        logger.warning(
            "Dataset %s (%d images): %s.", dataset_name or "<unnamed>", len(out), "; ".join(parts)
        )
    return out
