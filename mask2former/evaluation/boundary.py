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
  ``iou_mode="boundary"`` uses Boundary IoU alone;
* a crowd (``iscrowd``) ground-truth region has no meaningful boundary: against it a detection D
  keeps COCO's plain crowd mask IoU |D ∩ G| / |D| in both modes, as the definition and its
  reference implementation (boundary-iou-api's ``computeBoundaryIoU``) do.

The erosion is d iterations of a 3x3 erosion (a (2d+1)x(2d+1) square, chessboard distance) after
padding the mask with one background pixel, as in the reference code. No external tool is needed.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable

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
    "rle_boundary",
]

BOUNDARY_IOU_MODES = ("min", "boundary")
_MIN_MASKS_PER_WORKER = 2000  # below this, a process pool costs more than it saves


def boundary_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """d in pixels: round(dilation_ratio x image diagonal), at least 1."""
    diag = np.sqrt(height**2 + width**2)
    return max(1, int(round(dilation_ratio * diag)))


def mask_to_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """(H, W) binary mask -> (H, W) uint8 boundary G_d ∩ G (mask minus its erosion by d)."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    # Padded with background so that the image border counts as contour.
    return _erode_boundary(mask, boundary_width(*mask.shape, dilation_ratio))


def boundary_iou(gt: np.ndarray, pred: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of two (H, W) binary masks (1.0 when both boundaries are empty)."""
    g = mask_to_boundary(gt, dilation_ratio).astype(bool)
    p = mask_to_boundary(pred, dilation_ratio).astype(bool)
    union = np.logical_or(g, p).sum()
    return float(np.logical_and(g, p).sum() / union) if union else 1.0


def _erode_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), dtype=np.uint8), iterations=d)
    return mask - eroded[1:-1, 1:-1]


def rle_boundary(rle: dict, dilation_ratio: float = 0.02) -> dict:
    """COCO RLE of a mask -> COCO RLE of its boundary (same as `mask_to_boundary`).

    The erosion runs on the mask's bounding box grown by d + 1 pixels only: beyond it the mask is
    0, or the image ends, which the zero padding reproduces exactly.
    """
    h, w = rle["size"]
    d = boundary_width(h, w, dilation_ratio)
    out = np.zeros((h, w), dtype=np.uint8, order="F")
    x, y, bw, bh = mask_util.toBbox(rle)
    if bw > 0 and bh > 0:
        y0, x0 = max(int(y) - d - 1, 0), max(int(x) - d - 1, 0)
        y1 = min(int(np.ceil(y + bh)) + d + 1, h)
        x1 = min(int(np.ceil(x + bw)) + d + 1, w)
        crop = np.ascontiguousarray(mask_util.decode(rle)[y0:y1, x0:x1])
        out[y0:y1, x0:x1] = _erode_boundary(crop, d)
    return mask_util.encode(out)


def _boundaries(rles: list[dict], dilation_ratio: float, workers: int) -> list[dict]:
    if workers <= 1 or len(rles) < _MIN_MASKS_PER_WORKER * 2:
        return [rle_boundary(r, dilation_ratio) for r in rles]
    import multiprocessing
    from functools import partial

    chunk = max(1, len(rles) // (workers * 8))
    # One OpenCV thread per worker: the workers are the parallelism. "spawn", not "fork": a child
    # forked from a process whose OpenCV/OpenMP thread pools have run can deadlock on their locks
    # (seen here: evaluation after training in one process hung).
    with multiprocessing.get_context("spawn").Pool(workers, cv2.setNumThreads, (1,)) as pool:
        return pool.map(partial(rle_boundary, dilation_ratio=dilation_ratio), rles, chunk)


class _BoundaryIoUMixin:
    """Turns a COCOeval (pycocotools', or detectron2's fast `COCOeval_opt`) for iouType "segm"
    into Boundary AP: `_prepare` adds a boundary RLE to every annotation, `computeIoU` uses it.

    The params keep iouType "segm" (area ranges, summarize() and the C++ matching all work as for
    masks); only the IoU matrix changes.
    """

    dilation_ratio: float = 0.02
    iou_mode: str = "min"
    num_workers: int = 1

    def _prepare(self):
        super()._prepare()  # converts polygons/RLEs of gts and dts to RLE ("segmentation")
        key = f"_boundary@{self.dilation_ratio}"
        todo = [
            ann
            for anns in list(self._gts.values()) + list(self._dts.values())
            for ann in anns
            if key not in ann
        ]
        boundaries = _boundaries(
            [a["segmentation"] for a in todo], self.dilation_ratio, self.num_workers
        )
        for ann, b in zip(todo, boundaries):
            ann[key] = b

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        """(D, G) IoUs of the detections (by score) and ground truths of one image and class:
        min(mask IoU, Boundary IoU) (or Boundary IoU alone) for a regular G, and the plain crowd
        mask IoU |D ∩ G| / |D| for a crowd G (Cheng et al., "Boundary IoU", CVPR 2021)."""
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
        if len(gt) == 0 or len(dt) == 0:
            return []
        key = f"_boundary@{self.dilation_ratio}"
        iscrowd = [int(o["iscrowd"]) for o in gt]
        crowd = np.asarray(iscrowd, dtype=bool)
        # (D, G); for a crowd G: |D ∩ G| / |D|, pycocotools' crowd rule
        mask_ious = np.asarray(
            mask_util.iou([d["segmentation"] for d in dt], [g["segmentation"] for g in gt], iscrowd)
        )
        boundary_ious = np.asarray(
            mask_util.iou([d[key] for d in dt], [g[key] for g in gt], iscrowd)
        )
        if self.iou_mode == "min":
            boundary_ious = np.minimum(boundary_ious, mask_ious)
        # A crowd region has no meaningful boundary: it keeps the plain crowd mask IoU (Boundary
        # IoU, Cheng et al., CVPR 2021, and its reference `computeBoundaryIoU`).
        return np.where(crowd[None, :], mask_ious, boundary_ious)


def make_boundary_cocoeval(
    coco_gt,
    coco_dt,
    *,
    dilation_ratio: float = 0.02,
    iou_mode: str = "min",
    use_fast_impl: bool = False,
    num_workers: int | None = None,
    max_dets: list[int] | None = None,
):
    """A COCOeval (pycocotools, or detectron2's `COCOeval_opt` if `use_fast_impl`) that computes
    Boundary AP. Call `.evaluate(); .accumulate(); .summarize()` on it as usual.

    Boundaries of many masks (COCO val: ~0.5 M) are computed by `num_workers` processes (default:
    up to 8 CPU cores). `max_dets` (default [1, 10, 100]) become `params.maxDets`; a last value
    other than 100 is summarised by detectron2's `COCOevalMaxDets.summarize` (pycocotools' own
    reads AP at 100 detections only and would report -1)."""
    if iou_mode not in BOUNDARY_IOU_MODES:
        raise ValueError(
            f"iou_mode={iou_mode!r} is not one of {BOUNDARY_IOU_MODES}: 'min' = min(mask IoU, "
            "Boundary IoU) as in the published Boundary AP, 'boundary' = Boundary IoU alone."
        )
    base = COCOeval
    if use_fast_impl:
        from detectron2.evaluation.fast_eval_api import COCOeval_opt

        base = COCOeval_opt
    max_dets = list(max_dets or [1, 10, 100])
    body = {}
    if max_dets[-1] != 100:
        from detectron2.evaluation.coco_evaluation import COCOevalMaxDets

        body["summarize"] = COCOevalMaxDets.summarize
    cls = type("BoundaryCOCOeval", (_BoundaryIoUMixin, base), body)
    ev = cls(coco_gt, coco_dt, "segm")
    ev.params.maxDets = max_dets
    ev.dilation_ratio = float(dilation_ratio)
    ev.iou_mode = iou_mode
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    ev.num_workers = num_workers
    return ev


def strip_boxes(results: Iterable[dict]) -> list[dict]:
    """Copies of COCO results without "bbox", so areas (small/medium/large) come from masks."""
    out = []
    for r in results:
        r = copy.copy(r)
        r.pop("bbox", None)
        out.append(r)
    return out
