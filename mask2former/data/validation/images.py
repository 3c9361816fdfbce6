"""Reading images: every failure an error naming the file, 16-bit / float / alpha images handled
(decisions in the package docstring), and the image size checked against its record."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InvalidInputError, _where, require_file

__all__ = ["check_image_size", "read_image"]


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
