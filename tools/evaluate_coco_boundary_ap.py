#!/usr/bin/env python
"""Boundary AP (Cheng et al., CVPR 2021) of COCO-format instance predictions; no external tool.

    python tools/evaluate_coco_boundary_ap.py \
        --gt-json-file datasets/coco/annotations/instances_val2017.json \
        --dt-json-file output/inference/coco_2017_val/coco_instances_results.json

`--iou-type boundary` (default) scores each (prediction, ground truth) pair with
min(mask IoU, Boundary IoU) (`--boundary-iou-mode boundary`: Boundary IoU alone); `segm` and
`bbox` give the usual COCO AP. Boundaries are the pixels within d = dilation_ratio x image
diagonal of the mask contour (`--dilation-ratio`, default 0.02).
"""

import argparse
import contextlib
import io
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def evaluate(
    gt_json, dt_json, iou_type="boundary", dilation_ratio=0.02, iou_mode="min", use_fast_impl=None
):
    """{iou_type: {AP, AP50, AP75, APs, APm, APl}} in [0, 100] (NaN where undefined)."""
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from mask2former.evaluation.boundary import make_boundary_cocoeval, strip_boxes
    from mask2former.evaluation.instance_evaluation import fast_coco_eval_available

    if use_fast_impl is None:
        use_fast_impl = fast_coco_eval_available()
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_json)
    with open(dt_json) as f:
        results = json.load(f)
    if not results:
        raise ValueError(f"{dt_json} holds no predictions")
    if iou_type in ("segm", "boundary"):
        results = strip_boxes(results)  # areas from masks, as detectron2 does for segm
    coco_dt = coco_gt.loadRes(results)
    if iou_type == "boundary":
        ev = make_boundary_cocoeval(
            coco_gt,
            coco_dt,
            dilation_ratio=dilation_ratio,
            iou_mode=iou_mode,
            use_fast_impl=use_fast_impl,
        )
    else:
        if use_fast_impl:
            from detectron2.evaluation.fast_eval_api import COCOeval_opt as COCOeval  # noqa
        ev = COCOeval(coco_gt, coco_dt, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return {iou_type: {m: (100 * s if s >= 0 else float("nan")) for m, s in zip(METRICS, ev.stats)}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt-json-file", required=True, help="COCO-format ground truth")
    parser.add_argument("--dt-json-file", required=True, help="COCO-format results")
    parser.add_argument("--iou-type", default="boundary", choices=["boundary", "segm", "bbox"])
    parser.add_argument("--dilation-ratio", type=float, default=0.02)
    parser.add_argument(
        "--boundary-iou-mode",
        default="min",
        choices=["min", "boundary"],
        help="min(mask IoU, Boundary IoU) (default, as published) or Boundary IoU alone",
    )
    parser.add_argument("--output", default=None, help="folder for results.{md,csv,json}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    res = evaluate(
        args.gt_json_file,
        args.dt_json_file,
        args.iou_type,
        args.dilation_ratio,
        args.boundary_iou_mode,
    )
    if args.output:
        from mask2former.evaluation.reporting import write_results_table

        write_results_table(res, args.output, os.path.basename(args.dt_json_file))
    return res


if __name__ == "__main__":
    main()
