"""Boundary IoU and Boundary AP (Cheng et al., "Boundary IoU: Improving Object-Centric Image
Segmentation Evaluation", CVPR 2021), on top of pycocotools' COCOeval.

The paper's definitions, with d = dilation_ratio x image diagonal (0.02 by default):

* the boundary of a mask G is G_d ∩ G, the pixels of G within distance d of its contour, i.e. G
  minus its erosion by d (pixels outside the image count as background, so a mask cut by the image
  border has a boundary there);
* Boundary IoU(G, P) = |(G_d ∩ G) ∩ (P_d ∩ P)| / |(G_d ∩ G) ∪ (P_d ∩ P)|;
* Boundary AP is COCO's AP with the mask IoU of each (detection, ground truth) pair replaced. Like
  the published boundary-iou-api (which Mask2Former's Table 2 used) the default replacement is
  min(mask IoU, Boundary IoU), so a prediction must get both the region and the contour right;
  ``iou_mode="boundary"`` uses Boundary IoU alone.

The erosion is d iterations of a 3x3 erosion (a (2d+1)x(2d+1) square, chessboard distance) after
padding the mask with one background pixel, as in the reference code. No external tool is needed.
"""
from __future__ import annotations

import copy
import logging
from typing import Iterable

import cv2
import numpy as np
import pycocotools.mask as mask_util
from pycocotools.cocoeval import COCOeval

logger = logging.getLogger(__name__)

__all__ = [
    "BOUNDARY_IOU_MODES",
    "boundary_iou",
    "boundary_width",
    "mask_to_boundary",
    "make_boundary_cocoeval",
]

BOUNDARY_IOU_MODES = ("min", "boundary")


def boundary_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """d in pixels: round(dilation_ratio x image diagonal), at least 1."""
    diag = np.sqrt(height**2 + width**2)
    return max(1, int(round(dilation_ratio * diag)))


def mask_to_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """(H, W) binary mask -> (H, W) uint8 boundary G_d ∩ G (mask minus its erosion by d)."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    h, w = mask.shape
    d = boundary_width(h, w, dilation_ratio)
    # Pad with background so the image border counts as contour.
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), dtype=np.uint8), iterations=d)[1 : h + 1, 1 : w + 1]
    return mask - eroded


def boundary_iou(gt: np.ndarray, pred: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of two (H, W) binary masks (1.0 when both boundaries are empty)."""
    g = mask_to_boundary(gt, dilation_ratio).astype(bool)
    p = mask_to_boundary(pred, dilation_ratio).astype(bool)
    union = np.logical_or(g, p).sum()
    return float(np.logical_and(g, p).sum() / union) if union else 1.0


def _rle_boundary(rle: dict, dilation_ratio: float) -> dict:
    """COCO RLE of a mask -> COCO RLE of its boundary."""
    boundary = mask_to_boundary(mask_util.decode(rle), dilation_ratio)
    return mask_util.encode(np.asfortranarray(boundary))


class _BoundaryIoUMixin:
    """Turns a COCOeval (pycocotools', or detectron2's fast `COCOeval_opt`) for iouType "segm"
    into Boundary AP: `_prepare` adds a boundary RLE to every annotation, `computeIoU` uses it.

    The params keep iouType "segm" (area ranges, summarize() and the C++ matching all work as for
    masks); only the IoU matrix changes.
    """

    dilation_ratio: float = 0.02
    iou_mode: str = "min"

    def _prepare(self):
        super()._prepare()  # converts polygons/RLEs of gts and dts to RLE ("segmentation")
        key = f"_boundary@{self.dilation_ratio}"
        for anns in list(self._gts.values()) + list(self._dts.values()):
            for ann in anns:
                if key not in ann:
                    ann[key] = _rle_boundary(ann["segmentation"], self.dilation_ratio)

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order]
        if len(dt) > p.maxDets[-1]:
            dt = dt[: p.maxDets[-1]]
        key = f"_boundary@{self.dilation_ratio}"
        iscrowd = [int(o["iscrowd"]) for o in gt]
        ious = mask_util.iou([d[key] for d in dt], [g[key] for g in gt], iscrowd)
        if self.iou_mode == "min":
            mask_ious = mask_util.iou(
                [d["segmentation"] for d in dt], [g["segmentation"] for g in gt], iscrowd
            )
            ious = np.minimum(ious, mask_ious)
        return ious


def make_boundary_cocoeval(
    coco_gt,
    coco_dt,
    *,
    dilation_ratio: float = 0.02,
    iou_mode: str = "min",
    use_fast_impl: bool = False,
):
    """A COCOeval (pycocotools, or detectron2's `COCOeval_opt` if `use_fast_impl`) that computes
    Boundary AP. Call `.evaluate(); .accumulate(); .summarize()` on it as usual."""
    if iou_mode not in BOUNDARY_IOU_MODES:
        raise ValueError(
            f"iou_mode={iou_mode!r} is not one of {BOUNDARY_IOU_MODES}: 'min' = min(mask IoU, "
            "Boundary IoU) as in the published Boundary AP, 'boundary' = Boundary IoU alone."
        )
    base = COCOeval
    if use_fast_impl:
        from detectron2.evaluation.fast_eval_api import COCOeval_opt

        base = COCOeval_opt
    cls = type("BoundaryCOCOeval", (_BoundaryIoUMixin, base), {})
    ev = cls(coco_gt, coco_dt, "segm")
    ev.dilation_ratio = float(dilation_ratio)
    ev.iou_mode = iou_mode
    return ev


def strip_boxes(results: Iterable[dict]) -> list[dict]:
    """Copies of COCO results without "bbox", so areas (small/medium/large) come from masks."""
    out = []
    for r in results:
        r = copy.copy(r)
        r.pop("bbox", None)
        out.append(r)
    return out
