"""Pieces shared by the training mappers: mapper set-up, reading records and targets, masks
from any annotation format, padding, and the record fields every mapper returns.

Glossary: H, W = image size after augmentation (and padding); N = number of targets.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import polygons_to_bitmask
from panopticapi.utils import rgb2id

from .. import validation

__all__ = [
    "init_mapper",
    "dataset_ignore_label",
    "read_record",
    "read_sem_seg",
    "label_array",
    "read_pan_seg",
    "segmentation_to_mask",
    "annotations_to_masks",
    "pad_to_divisibility",
    "build_flip",
    "image_to_tensor",
    "set_record_defaults",
    "panoptic_to_semantic",
    "read_checked_pan_seg",
    "check_label_size",
    "panoptic_segment_masks",
    "drop_empty_masks",
    "masks_tensor",
]


def init_mapper(
    mapper: Any,
    is_train: bool,
    augmentations: list,
    image_format: str,
    *,
    what: str | None = None,
) -> None:
    """Set the attributes every mapper has (`is_train`, `tfm_gens`, `img_format`) and log the
    augmentations on the mapper's module logger, as "[ClassName] {what}: [...]".

    `what` defaults to "Augmentations used in training" (or "... in inference").
    """
    mapper.is_train = is_train
    mapper.tfm_gens = augmentations
    mapper.img_format = image_format
    if what is None:
        what = f"Augmentations used in {'training' if is_train else 'inference'}"
    logging.getLogger(type(mapper).__module__).info(
        f"[{type(mapper).__name__}] {what}: {augmentations}"
    )


def dataset_ignore_label(cfg) -> int:
    """`ignore_label` of the first training dataset's metadata (falls back to
    `MODEL.SEM_SEG_HEAD.IGNORE_VALUE`)."""
    default = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    names = cfg.DATASETS.TRAIN
    if len(names) == 0:
        return default
    return MetadataCatalog.get(names[0]).get("ignore_label", default)


def read_record(dataset_dict: dict, image_format: str) -> tuple[dict, np.ndarray]:
    """A deep copy of the record (the mapper modifies it) and its image (H, W, 3), checked
    against the record's height/width, with file_name/image_id/height/width filled in."""
    dataset_dict = copy.deepcopy(dataset_dict)
    image = validation.read_image(dataset_dict["file_name"], format=image_format)
    validation.check_image_size(dataset_dict, image)
    set_record_defaults(dataset_dict, image)
    return dataset_dict, image


def check_label_size(label: np.ndarray, record: dict | None, label_file: str, what: str) -> None:
    """A label / panoptic map must have the size of its image (`record` after `read_record`);
    otherwise detectron2's transforms fail with a bare AssertionError."""
    if record is None or "height" not in record or "width" not in record:
        return
    h, w = label.shape[:2]
    if (h, w) == (record["height"], record["width"]):
        return
    raise validation.InvalidInputError(
        f"{what} {label_file} is {w}x{h} (width x height) but its image {record['file_name']} is "
        f"{record['width']}x{record['height']}. Fix: the label must be made on the image itself "
        "(same size); check that the two files belong together, or re-export the label at the "
        "image's size."
    )


def read_sem_seg(path: str, record: dict | None = None) -> np.ndarray:
    """Read a semantic label map (8-bit PNG, or 16-bit PNG/TIFF) as (H, W); with `record` (the
    mapper's record after `read_record`), check that it has the image's size.

    8-bit maps stay uint8, so detectron2 resizes them with PIL's nearest neighbour exactly like
    the panoptic PNG and the masks (identical pixel selection); 16-bit maps (ADE20K-full,
    ignore 65535) become float64, which detectron2's torch nearest-neighbour resize keeps exact.
    """
    # Clear errors for missing/truncated files and colour-coded (non-gray RGB) label maps.
    sem = validation.read_sem_seg(path)
    check_label_size(sem, record, path, "semantic label file")
    return label_array(sem)


def label_array(sem: np.ndarray) -> np.ndarray:
    """uint8 if all labels fit in 0..255, else float64 (see `read_sem_seg`)."""
    if sem.dtype == np.uint8:
        return sem
    if sem.size and sem.min() >= 0 and sem.max() <= 255:
        return sem.astype(np.uint8)
    return sem.astype("double")


def read_pan_seg(path: str, image_file: str | None = None) -> np.ndarray:
    """Read a COCO-format panoptic PNG as uint8 RGB (H, W, 3); a grayscale PNG is an error."""
    return validation.read_panoptic_png(path, image_file=image_file)


def panoptic_to_semantic(
    pan_ids: np.ndarray, segments_info: Sequence[dict], ignore_label: int = 255
) -> np.ndarray:
    """Semantic labels from a panoptic id map: each segment's pixels get its `category_id`
    (crowd segments included, as in the COCO semantic conversion); other pixels `ignore_label`.

    `pan_ids` is an (H, W) id map (use `rgb2id` on a panoptic PNG). Returns int64 (H, W).
    """
    dtype = np.int64
    out = np.full(pan_ids.shape, ignore_label, dtype=dtype)
    for seg in segments_info:
        out[pan_ids == seg["id"]] = seg["category_id"]
    return out


def read_checked_pan_seg(dataset_dict: dict, mapper_name: str) -> np.ndarray:
    """Pop `pan_seg_file_name` from a panoptic record and read it as uint8 RGB (H, W, 3), after
    checking that its segment ids are those of `segments_info`.

    A record without `pan_seg_file_name` or `segments_info` raises a ValueError naming the
    mapper (`mapper_name`, e.g. "mask_former_panoptic").
    """
    if "pan_seg_file_name" not in dataset_dict or "segments_info" not in dataset_dict:
        raise ValueError(
            f"Record for {dataset_dict['file_name']} has no 'pan_seg_file_name'/"
            f"'segments_info'; the '{mapper_name}' mapper needs COCO-format panoptic "
            "annotations."
        )
    pan_seg_file = dataset_dict.pop("pan_seg_file_name")
    pan_seg = read_pan_seg(pan_seg_file, dataset_dict["file_name"])
    check_label_size(pan_seg, dataset_dict, pan_seg_file, "panoptic annotation PNG")
    validation.check_panoptic_segments(
        rgb2id(pan_seg),
        dataset_dict["segments_info"],
        pan_seg_file,
        image_file=dataset_dict["file_name"],
    )
    return pan_seg


def panoptic_segment_masks(
    pan_ids: np.ndarray, segments_info: Sequence[dict]
) -> tuple[list[int], list[np.ndarray]]:
    """Non-crowd segments still present in an (H, W) id map -> (category ids, bool masks
    (H, W)); segments that are crowd or that the crop removed entirely are skipped."""
    classes, masks = [], []
    for seg in segments_info:
        if seg.get("iscrowd", 0):
            continue
        mask = pan_ids == seg["id"]
        if not mask.any():  # cropped away
            continue
        classes.append(int(seg["category_id"]))
        masks.append(mask)
    return classes, masks


def drop_empty_masks(
    classes: Sequence[int], masks: Sequence[np.ndarray]
) -> tuple[list[int], list[np.ndarray]]:
    """Keep the (class, mask) pairs whose mask has at least one pixel (e.g. not cropped away)."""
    keep = [i for i, m in enumerate(masks) if m.any()]
    return [classes[i] for i in keep], [masks[i] for i in keep]


def segmentation_to_mask(
    segm: Any, transforms: T.TransformList, orig_hw: tuple[int, int], out_hw: tuple[int, int]
) -> np.ndarray:
    """One annotation's `segmentation` -> transformed binary mask, uint8 (H, W).

    Accepts COCO polygons (list of flat [x0, y0, x1, y1, ...] lists), RLE (compressed: `counts`
    a str/bytes; uncompressed: `counts` a list of ints), or a 2-D array/tensor at the original
    image size.
    """
    if isinstance(segm, list):
        if len(segm) == 0:
            return np.zeros(out_hw, dtype=np.uint8)
        polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm]
        polygons = transforms.apply_polygons(polygons)
        polygons = [p.reshape(-1) for p in polygons if len(p) >= 3]
        if not polygons:
            return np.zeros(out_hw, dtype=np.uint8)
        return polygons_to_bitmask(polygons, *out_hw).astype(np.uint8)
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise ValueError(
                f"An RLE segmentation needs 'counts' and 'size'; got keys {list(segm)}."
            )
        if isinstance(segm["counts"], list):  # uncompressed RLE
            segm = mask_util.frPyObjects(segm, *segm["size"])
        mask = mask_util.decode(segm)
    elif isinstance(segm, (np.ndarray, torch.Tensor)):
        mask = np.asarray(segm)
    else:
        raise ValueError(
            f"Cannot convert segmentation of type '{type(segm).__name__}' to a mask: expected a list of polygons, "
            "an RLE dict, or a 2-D array."
        )
    if mask.ndim != 2 or tuple(mask.shape) != tuple(orig_hw):
        raise ValueError(
            f"A segmentation mask has shape {tuple(mask.shape)} but the image is {tuple(orig_hw)}; "
            "bitmask/RLE annotations must have the original image size."
        )
    return transforms.apply_segmentation(np.ascontiguousarray(mask.astype(np.uint8)))


def annotations_to_masks(
    annotations: Sequence[dict],
    transforms: T.TransformList,
    orig_hw: tuple[int, int],
    out_hw: tuple[int, int],
) -> tuple[list[int], list[np.ndarray]]:
    """Non-crowd annotations -> (category ids, uint8 masks (H, W)); crowd ones are skipped."""
    classes, masks = [], []
    for obj in annotations:
        if obj.get("iscrowd", 0) != 0:
            continue
        if "segmentation" not in obj:
            raise ValueError(
                "An instance annotation has no 'segmentation'; the mask mappers need masks "
                "(polygons, RLE or bitmasks)."
            )
        classes.append(int(obj["category_id"]))
        masks.append(segmentation_to_mask(obj["segmentation"], transforms, orig_hw, out_hw))
    return classes, masks


def pad_to_divisibility(
    size_divisibility: int,
    image: torch.Tensor,
    sem_seg: torch.Tensor | None = None,
    pan_seg: torch.Tensor | None = None,
    ignore_label: int = 255,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Pad (3, H, W) image / (H, W) maps on the bottom and right up to the next multiple of
    `size_divisibility` (<= 0: no padding). Image pad 128, sem_seg `ignore_label`, pan_seg 0 (VOID).

    Upstream pads "to exactly SIZE_DIVISIBILITY" (which crops when the image is larger); for the
    published configs (crop size == SIZE_DIVISIBILITY) both give the same result.
    """
    if size_divisibility <= 0:
        return image, sem_seg, pan_seg
    h, w = image.shape[-2:]
    pad = [0, (-w) % size_divisibility, 0, (-h) % size_divisibility]  # left, right, top, bottom
    if pad[1] == 0 and pad[3] == 0:
        return image, sem_seg, pan_seg
    image = F.pad(image, pad, value=128).contiguous()
    if sem_seg is not None:
        sem_seg = F.pad(sem_seg, pad, value=ignore_label).contiguous()
    if pan_seg is not None:
        pan_seg = F.pad(pan_seg, pad, value=0).contiguous()
    return image, sem_seg, pan_seg


def build_flip(random_flip: str) -> list[T.Augmentation]:
    """`INPUT.RANDOM_FLIP` ("none" | "horizontal" | "vertical") -> a list of 0 or 1 RandomFlip."""
    if random_flip == "none":
        return []
    if random_flip not in ("horizontal", "vertical"):
        raise ValueError(
            f"INPUT.RANDOM_FLIP must be 'none', 'horizontal' or 'vertical'; got '{random_flip}'."
        )
    return [
        T.RandomFlip(horizontal=random_flip == "horizontal", vertical=random_flip == "vertical")
    ]


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, H, W) uint8 tensor."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def set_record_defaults(dataset_dict: dict, image: np.ndarray) -> None:
    """Make sure the output carries file_name/image_id/height/width (original image size)."""
    dataset_dict.setdefault("height", image.shape[0])
    dataset_dict.setdefault("width", image.shape[1])
    if "image_id" not in dataset_dict:
        dataset_dict["image_id"] = os.path.splitext(os.path.basename(dataset_dict["file_name"]))[0]


def masks_tensor(masks: Sequence[np.ndarray], hw: tuple[int, int]) -> torch.Tensor:
    """A list of (H, W) masks -> bool (N, H, W) tensor ((0, H, W) when empty)."""
    if len(masks) == 0:
        return torch.zeros((0, *hw), dtype=torch.bool)
    return torch.stack([torch.from_numpy(np.ascontiguousarray(m)).bool() for m in masks])
