"""Input checks with errors that name the file, the problem and the fix.

The dataset mappers and loaders call these instead of failing deep inside a data-loader worker (or,
worse, silently training on a wrong target). Two levels:

* **per sample** (in the mappers, on the pixels): :func:`read_image`, :func:`read_sem_seg`,
  :func:`read_panoptic_ids`, :func:`check_image_size`, :func:`check_sem_seg`,
  :func:`check_panoptic_segments`, :func:`check_instance_annotations`;
* **per dataset** (when the list of dicts is built, no decoding): :func:`validate_dataset_dicts`
  checks category ids and polygons of every record up front and reports counts, so a bad record is
  reported before training starts instead of at iteration 50k.

Decisions (see docs/reliability.md):

* **Images**: EXIF orientation is applied (as Detectron2 does); grayscale is replicated to 3
  channels; RGBA / LA / palette-with-transparency lose their alpha channel (no compositing);
  16-bit (``I;16``), 32-bit integer (``I``) and float (``F``) grayscale images are scaled to 8 bit
  (Detectron2's ``read_image`` clips them to 255, which turns most 16-bit images white); a float
  image with NaN/Inf pixels raises (they would train as black). Missing,
  unreadable and truncated files raise :class:`InvalidInputError` (:class:`MissingFileError` for
  missing ones) naming the file.
* **Polygons with fewer than 3 points** (< 6 coordinates) are dropped with a warning and a count
  (COCO itself contains some, and Detectron2's COCO loader drops them the same way); an instance
  left with no polygon is dropped too. A polygon with an odd number of coordinates is malformed
  and raises.
* **Empty annotation lists** are valid (an image without objects: all queries learn "no object");
  they are counted and logged once per dataset. Instance datasets drop them at load time when
  ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` is True (Detectron2's default).
* Category ids not in the metadata, panoptic PNG segment ids missing from ``segments_info``, and
  semantic label values outside ``[0, num_classes)`` that are not ``ignore_label`` raise.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

__all__ = [
    "InvalidInputError",
    "MissingFileError",
    "check_category_id",
    "check_image_size",
    "check_instance_annotations",
    "check_panoptic_segments",
    "check_sem_seg",
    "clean_polygons",
    "read_image",
    "read_panoptic_ids",
    "read_sem_seg",
    "require_file",
    "validate_dataset_dicts",
]


class InvalidInputError(ValueError):
    """A dataset file or record that cannot be used; the message names the file and the fix."""


class MissingFileError(InvalidInputError, FileNotFoundError):
    """A file named by the dataset does not exist."""


def _where(file_name: str | None, image_file: str | None = None) -> str:
    if image_file and file_name and os.fspath(image_file) != os.fspath(file_name):
        return f"{file_name} (annotation of image {image_file})"
    return str(file_name or image_file or "<unknown file>")


def require_file(
    path: str, what: str = "file", *, image_file: str | None = None, fix: str = ""
) -> None:
    """Raise :class:`MissingFileError` if `path` is not an existing file."""
    if not path or not os.path.isfile(path):
        raise MissingFileError(
            f"{what} {_where(path, image_file)} does not exist. Fix: "
            + (
                fix
                or "check the dataset root (DETECTRON2_DATASETS) and the file names in the "
                "annotations; re-run the dataset's preparation script if files are missing."
            )
        )


# ------------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------------
def _open_image(file_name: str, what: str, image_file: str | None = None) -> Image.Image:
    """Open and fully decode, turning every failure into an error that names the file."""
    require_file(file_name, what, image_file=image_file)
    try:
        with open(file_name, "rb") as f:
            img = Image.open(f)
            img.load()  # decode now: a truncated file fails here, not later in a worker
    except UnidentifiedImageError:
        raise InvalidInputError(
            f"{what} {_where(file_name, image_file)} is not a readable image (unknown or damaged "
            f"format, {_size(file_name)}). Fix: re-export or re-download it, or remove it from the "
            "dataset."
        ) from None
    except (OSError, SyntaxError, ValueError) as e:  # "image file is truncated", broken chunks, ...
        raise InvalidInputError(
            f"{what} {_where(file_name, image_file)} is truncated or corrupted ({e}; "
            f"{_size(file_name)}). Fix: re-download or re-export it (an interrupted copy often "
            "leaves a truncated file), or remove it from the dataset."
        ) from None
    return img


def _size(path: str) -> str:
    try:
        return f"{os.path.getsize(path)} bytes"
    except OSError:
        return "size unknown"


def _to_8bit(img: Image.Image, file_name: str = "") -> Image.Image:
    """High-bit-depth single-channel images -> 8-bit "L", scaled (not clipped) to 0..255.

    A float image with NaN/Inf pixels raises (it would silently train as black pixels)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(img).astype(np.uint32)
        return Image.fromarray((arr >> 8).astype(np.uint8), mode="L")
    if img.mode == "I":
        arr = np.asarray(img).astype(np.int64)
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 255:
            return Image.fromarray(arr.astype(np.uint8), mode="L")
        if lo >= 0 and hi <= 65535:
            return Image.fromarray((arr >> 8).astype(np.uint8), mode="L")
        scaled = (arr - lo) * 255.0 / max(hi - lo, 1)
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise InvalidInputError(
                f"image {file_name} is a floating-point image with {bad} NaN/Inf pixel(s) of "
                f"{arr.size}; they would train as black. Fix: fill them (e.g. with the image's "
                "mean) and save the image as 8-bit, or remove it from the dataset."
            )
        if arr.min() >= 0.0 and arr.max() <= 1.0:
            arr = arr * 255.0
        return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), mode="L")
    return img


def read_image(file_name: str, format: str | None = None, *, what: str = "image") -> np.ndarray:
    """Detectron2's ``read_image`` with clear errors and correct 16-bit / alpha handling.

    Returns an HWC uint8 array in `format` ("RGB", "BGR", "L", ...; None keeps the file's mode
    except that high-bit-depth grayscale becomes 8 bit). EXIF orientation is applied.
    """
    from detectron2.data.detection_utils import _apply_exif_orientation, convert_PIL_to_numpy

    img = _open_image(file_name, what)
    img = _apply_exif_orientation(img)
    img = _to_8bit(img, file_name)
    if (
        format is not None
        and img.mode in ("RGBA", "LA", "PA")
        or (format is not None and img.mode == "P" and "transparency" in img.info)
    ):
        img = img.convert("RGBA").convert("RGB")  # drop alpha (documented), keep colours
    return convert_PIL_to_numpy(img, format)


def check_image_size(dataset_dict: Mapping[str, Any], image: np.ndarray) -> None:
    """The decoded image must have the record's ``height``/``width`` (when present)."""
    if "height" not in dataset_dict and "width" not in dataset_dict:
        return
    got_h, got_w = int(image.shape[0]), int(image.shape[1])
    exp_h = int(dataset_dict.get("height", got_h))
    exp_w = int(dataset_dict.get("width", got_w))
    if (got_h, got_w) == (exp_h, exp_w):
        return
    hint = ""
    if (got_h, got_w) == (exp_w, exp_h):
        hint = (
            " Height and width are swapped: the image probably has an EXIF orientation tag "
            "(it is rotated when read) while the annotation was made on the stored pixels, "
            "or the other way round; re-save the image with the rotation applied."
        )
    raise InvalidInputError(
        f"image {dataset_dict.get('file_name', '<unknown>')} is {got_w}x{got_h} (width x height) "
        f"but its annotation says {exp_w}x{exp_h}.{hint} Fix: correct 'height'/'width' in the "
        "annotation (COCO JSON 'images' entry), or point 'file_name' at the image the annotation "
        "was made for."
    )


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
def read_panoptic_ids(file_name: str, *, image_file: str | None = None) -> np.ndarray:
    """Read a COCO panoptic PNG (id = R + 256 G + 256^2 B) as an (H, W) int64 id map."""
    from detectron2.data.detection_utils import _apply_exif_orientation

    img = _apply_exif_orientation(_open_image(file_name, "panoptic annotation PNG", image_file))
    if img.mode != "RGB":
        if img.mode in ("L", "P", "I", "I;16"):
            raise InvalidInputError(
                f"panoptic annotation PNG {_where(file_name, image_file)} has mode {img.mode}; COCO "
                "panoptic PNGs are RGB with segment id = R + 256*G + 256^2*B. Fix: convert the "
                "annotations with panopticapi (e.g. converters/2channels2panoptic_coco_format.py) "
                "or save ids in that RGB encoding."
            )
        img = img.convert("RGB")
    return rgb2id(np.asarray(img)).astype(np.int64)


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


# ------------------------------------------------------------------------------------------------
# Instances
# ------------------------------------------------------------------------------------------------
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
