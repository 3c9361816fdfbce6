"""Which COCOeval computes box and mask AP, and running it.

pycocotools' `COCOeval` is the official implementation; its per-image matching and accumulation
run in Python and dominate the evaluation time. Two compiled re-implementations exist:

* `faster-coco-eval` (PyPI, pinned in requirements/base.txt): same `COCO`/`COCOeval` interface,
  matching and accumulation in C++. Checked against pycocotools by
  tests/evaluation/test_coco_backend.py (equal precision/recall arrays and summary numbers on
  random detections) and by the cross-check tests of `InstanceSegEvaluator`
  (tests/evaluation/test_instance_evaluation.py: every reported number equals pycocotools' to
  0.01, for each way of registering a dataset);
* detectron2's `COCOeval_opt`, only in builds of detectron2 with compiled ops.

`choose_backend` takes the first available in that order (pycocotools when `fast=False`), and
`evaluate_on_coco` runs the chosen one. Boundary AP ("min" mode) uses faster-coco-eval's
"boundary" IoU type, checked equal to the definition (tests/evaluation/test_boundary.py); the
"boundary"-only mode, and the other backends, use `boundary.py` on top of COCOeval.
"""

from __future__ import annotations

import logging

from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco

logger = logging.getLogger(__name__)

__all__ = ["COCO_BACKENDS", "choose_backend", "evaluate_on_coco", "faster_coco_eval_version"]

COCO_BACKENDS = ("faster-coco-eval", "detectron2", "pycocotools")


def faster_coco_eval_version() -> str | None:
    """The installed faster-coco-eval's version, or None."""
    try:
        import faster_coco_eval
    except ImportError:
        return None
    return faster_coco_eval.__version__


def choose_backend(fast: bool = True) -> str:
    """ "faster-coco-eval" if installed, else "detectron2" (compiled `COCOeval_opt`) if present,
    else "pycocotools"; always "pycocotools" when `fast` is False."""
    if not fast:
        return "pycocotools"
    if faster_coco_eval_version() is not None:
        return "faster-coco-eval"
    from .instance_evaluation import fast_coco_eval_available  # warns once if it is missing

    return "detectron2" if fast_coco_eval_available() else "pycocotools"


def describe(backend: str) -> str:
    if backend == "faster-coco-eval":
        return f"faster-coco-eval {faster_coco_eval_version()} (same numbers as pycocotools)"
    if backend == "detectron2":
        return "detectron2's compiled COCOeval_opt (same numbers as pycocotools)"
    return "the official pycocotools COCOeval"


def _faster_ground_truth(coco_gt):
    """A faster-coco-eval `COCO` of `coco_gt`'s dataset (a copy, made once per `coco_gt`), or
    None when an image has no height/width and no RLE annotation tells its size (faster-coco-eval
    needs them to rasterise polygons)."""
    cached = getattr(coco_gt, "_mask2former_faster_coco", None)
    if cached is not None:
        return cached or None
    from faster_coco_eval import COCO

    # shallow copies: faster-coco-eval adds keys ("ignore", "rle") to the annotation dicts
    dataset = dict(coco_gt.dataset)
    for key in ("images", "annotations", "categories"):
        dataset[key] = [dict(x) for x in dataset.get(key, [])]
    sizes = {}
    for ann in dataset.get("annotations", []):
        seg = ann.get("segmentation")
        if isinstance(seg, dict) and "size" in seg:
            sizes.setdefault(ann["image_id"], tuple(seg["size"]))
    ok = True
    for img in dataset.get("images", []):
        if "height" not in img or "width" not in img:
            if img["id"] in sizes:
                img["height"], img["width"] = sizes[img["id"]]
            else:
                ok = False
    result = COCO(dataset, print_function=logger.debug) if ok else False
    coco_gt._mask2former_faster_coco = result
    return result or None


def evaluate_on_coco(
    coco_gt,
    results: list[dict],
    iou_type: str,
    *,
    backend: str,
    img_ids=None,
    max_dets_per_image=None,
    kpt_oks_sigmas=None,
    dilation_ratio: float = 0.02,
    boundary_iou_mode: str = "min",
):
    """Evaluate COCO-format `results` (dataset category ids) against `coco_gt` (a pycocotools
    `COCO`) with `backend`; returns the COCOeval after evaluate/accumulate/summarize, whose
    `stats`, `eval["precision"]` and `params.catIds` the evaluator reads.

    `iou_type` "bbox", "segm", "keypoints" or "boundary" (Boundary AP, `boundary.py`; with
    faster-coco-eval its own "boundary" IoU type, which is min(mask IoU, Boundary IoU) with the
    crowd rule, checked equal to the definition by tests/evaluation/test_boundary.py). For "segm"
    and "boundary" the boxes are dropped first (areas from the masks), as detectron2 does."""
    if backend not in COCO_BACKENDS:
        raise ValueError(f"COCO backend {backend!r}: expected one of {COCO_BACKENDS}")
    max_dets = list(max_dets_per_image or [1, 10, 100])
    fast_types = ("bbox", "segm", "boundary") if boundary_iou_mode == "min" else ("bbox", "segm")
    gt = _faster_ground_truth(coco_gt) if backend == "faster-coco-eval" else None
    if backend == "faster-coco-eval" and iou_type in fast_types and gt is not None:
        from faster_coco_eval import COCOeval_faster

        results = [dict(r) for r in results]  # loadRes adds keys ("id", "area", ...)
        if iou_type != "bbox":
            for r in results:
                r.pop("bbox", None)
        coco_eval = COCOeval_faster(
            gt,
            gt.loadRes(results),
            iou_type,
            print_function=logger.info,
            boundary_dilation_ratio=dilation_ratio,
        )
        return _run(coco_eval, max_dets, img_ids)
    if backend == "faster-coco-eval":
        why = (
            "an image of the ground truth has no height/width"
            if gt is None
            else f"faster-coco-eval has no {iou_type!r} evaluation"
            + (" with Boundary IoU alone" if iou_type == "boundary" else "")
        )
        logger.info(f"{iou_type}: evaluated with pycocotools ({why})")
    if iou_type == "boundary":
        from .boundary import make_boundary_cocoeval, strip_boxes

        coco_eval = make_boundary_cocoeval(
            coco_gt,
            coco_gt.loadRes(strip_boxes(results)),
            dilation_ratio=dilation_ratio,
            iou_mode=boundary_iou_mode,
            use_fast_impl=backend == "detectron2",
            max_dets=max_dets,
        )
        return _run(coco_eval, max_dets, img_ids)
    return _evaluate_predictions_on_coco(
        coco_gt,
        results,
        iou_type,
        kpt_oks_sigmas=kpt_oks_sigmas,
        use_fast_impl=backend == "detectron2",
        img_ids=img_ids,
        max_dets_per_image=max_dets_per_image,
    )


def _run(coco_eval, max_dets: list[int], img_ids):
    coco_eval.params.maxDets = max_dets
    if img_ids is not None:
        coco_eval.params.imgIds = img_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval
