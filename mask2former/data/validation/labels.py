"""Reading semantic label PNGs and COCO panoptic PNGs, and checking their values against the
classes / the record's segments."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .annotations import check_category_id
from .errors import InvalidInputError, _where
from .images import _open_image

__all__ = ["check_panoptic_segments", "check_sem_seg", "read_panoptic_png", "read_sem_seg"]


# ------------------------------------------------------------------------------------------------
# Semantic labels
# ------------------------------------------------------------------------------------------------
def read_sem_seg(
    file_name: str,
    num_classes: int | None = None,
    ignore_label: int = 255,
    *,
    image_file: str | None = None,
) -> np.ndarray:
    """Read a semantic label PNG as an (H, W) integer array and check its values.

    8-bit (L), palette (P: the indices) and 16-bit PNGs keep their values (an EXIF orientation, if
    any, is applied as for images, like Detectron2's ``read_image``). An RGB file whose three
    channels are equal is read as its first channel; any other RGB file is a colour-coded mask and
    raises.
    """
    from detectron2.data.detection_utils import _apply_exif_orientation

    img = _apply_exif_orientation(_open_image(file_name, "semantic label file", image_file))
    if img.mode in ("RGB", "RGBA"):
        arr = np.asarray(img)
        if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
            img = img.getchannel(0)  # class indices saved as gray RGB: unambiguous
    if img.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        raise InvalidInputError(
            f"semantic label file {_where(file_name, image_file)} has {len(img.getbands())} "
            f"channels (mode {img.mode}); labels must be single-channel class indices (mode L, P "
            "or 16-bit). Fix: convert colour-coded masks to class indices (e.g. map each colour to "
            "its class id) and save as an 8-bit grayscale or palette PNG."
        )
    if img.mode in ("LA", "PA"):
        img = img.getchannel(0)
    label = np.asarray(img)
    if label.dtype.kind == "f":
        raise InvalidInputError(
            f"semantic label file {_where(file_name, image_file)} stores floating-point values; "
            "labels must be integer class indices. Fix: save the label map as an 8- or 16-bit PNG."
        )
    if num_classes is not None:
        check_sem_seg(label, num_classes, ignore_label, file_name, image_file=image_file)
    return label


def check_sem_seg(
    label: np.ndarray,
    num_classes: int,
    ignore_label: int = 255,
    file_name: str | None = None,
    *,
    image_file: str | None = None,
) -> None:
    """Every value must be in [0, num_classes) or equal `ignore_label`."""
    label = np.asarray(label)
    if label.dtype in (np.uint8, np.uint16):  # the usual case: a histogram is ~10x faster
        hist = np.bincount(label.ravel())
        values = np.flatnonzero(hist)
        counts = hist[values]
    else:
        values, counts = np.unique(label, return_counts=True)
    bad = [
        (int(v), int(c))
        for v, c in zip(values, counts)
        if not (0 <= v < num_classes) and int(v) != int(ignore_label)
    ]
    if not bad:
        return
    shown = ", ".join(f"{v} ({c} px)" for v, c in bad[:8]) + (" ..." if len(bad) > 8 else "")
    raise InvalidInputError(
        f"semantic label file {_where(file_name, image_file)} contains label value(s) {shown} "
        f"outside the class range [0, {num_classes}) that are not the ignore_label "
        f"{ignore_label}. Fix: set MODEL.SEM_SEG_HEAD.NUM_CLASSES to the number of classes "
        f"(> {max(v for v, _ in bad)} if these are real classes), map these values to "
        f"{ignore_label} in the label files, or set the dataset's ignore_label metadata to the "
        "value you use for 'unlabeled'. Colour-coded masks must be converted to class indices."
    )


# ------------------------------------------------------------------------------------------------
# Panoptic
# ------------------------------------------------------------------------------------------------
def read_panoptic_png(file_name: str, *, image_file: str | None = None) -> np.ndarray:
    """Read a COCO panoptic PNG (segment id = R + 256 G + 256^2 B) as uint8 RGB (H, W, 3), after
    EXIF orientation; ``rgb2id`` of the result is the id map. A grayscale PNG is refused (its
    values are not that encoding); palette and RGBA PNGs are converted to their RGB colours."""
    from detectron2.data.detection_utils import _apply_exif_orientation

    img = _apply_exif_orientation(_open_image(file_name, "panoptic annotation PNG", image_file))
    if img.mode in ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        raise InvalidInputError(
            f"panoptic annotation PNG {_where(file_name, image_file)} has mode {img.mode}; COCO "
            "panoptic PNGs are RGB with segment id = R + 256*G + 256^2*B. Fix: convert the "
            "annotations with panopticapi (e.g. converters/2channels2panoptic_coco_format.py) "
            "or save ids in that RGB encoding."
        )
    return np.asarray(img.convert("RGB"))


def check_panoptic_segments(
    pan_ids: np.ndarray,
    segments_info: Sequence[Mapping[str, Any]],
    file_name: str | None = None,
    *,
    image_file: str | None = None,
    valid_category_ids: Iterable[int] | None = None,
) -> None:
    """Every non-zero id in the PNG must be listed in `segments_info` (0 = unlabeled/void)."""
    listed = {int(s["id"]) for s in segments_info}
    pan_ids = np.asarray(pan_ids)
    allowed = np.array(sorted(listed | {0}), dtype=np.int64)
    known = np.isin(pan_ids, allowed, kind="table" if pan_ids.dtype.kind in "iu" else None)
    if known.all():  # the usual case, O(pixels)
        missing = []
    else:
        values, counts = np.unique(pan_ids[~known], return_counts=True)
        missing = [(int(v), int(c)) for v, c in zip(values, counts)]
    if missing:
        shown = ", ".join(f"{v} ({c} px)" for v, c in missing[:8]) + (
            " ..." if len(missing) > 8 else ""
        )
        raise InvalidInputError(
            f"panoptic annotation PNG {_where(file_name, image_file)} contains segment id(s) {shown} "
            f"that are not in its segments_info (listed ids: {sorted(listed)[:12]}"
            f"{' ...' if len(listed) > 12 else ''}). Such pixels would silently become 'no "
            "object'. Fix: regenerate the PNG and the JSON together, make sure the JSON entry "
            "belongs to this PNG ('file_name' in 'annotations'), and decode ids as R + 256*G + "
            "256^2*B; paint truly unlabeled pixels with id 0 (black)."
        )
    if valid_category_ids is not None:
        valid = set(int(c) for c in valid_category_ids)
        for s in segments_info:
            check_category_id(
                s.get("category_id"),
                valid,
                file_name,
                image_file=image_file,
                what=f"segment {s.get('id')}",
            )
