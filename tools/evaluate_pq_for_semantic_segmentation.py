#!/usr/bin/env python
"""PQ (each class one segment) and mIoU of a semantic segmentation model's predictions.

Reads the `sem_seg_predictions.json` that an evaluation run writes (SemSegEvaluator, into
OUTPUT_DIR/inference/<dataset>/) and compares it with the dataset's ground truth:

    python tools/evaluate_pq_for_semantic_segmentation.py \
        --dataset-name ade20k_sem_seg_val \
        --json-file output/inference/ade20k_sem_seg_val/sem_seg_predictions.json

Any registered dataset with `stuff_classes` and `ignore_label` works (ADE20K-150, ADE20K-full,
COCO-Stuff-10k, Cityscapes, Mapillary, ...). Results are printed and, with --output, written as
results.{md,csv,json}.
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset-name",
        default="ade20k_sem_seg_val",
        help="registered dataset (default: %(default)s)",
    )
    parser.add_argument("--json-file", required=True, help="sem_seg_predictions.json")
    parser.add_argument(
        "--output",
        default=None,
        help="folder for results.{md,csv,json} (default: next to --json-file)",
    )
    args = parser.parse_args(argv)

    from detectron2.utils.logger import setup_logger

    setup_logger(name="mask2former")
    import mask2former  # noqa: F401  (registers the datasets)
    from mask2former.evaluation import semantic_pq, write_results_table

    results = semantic_pq(args.dataset_name, args.json_file)
    pq, sem = results["panoptic_seg"], results["sem_seg"]
    print(
        f"{args.dataset_name}: PQ {pq['PQ']:.2f}  SQ {pq['SQ']:.2f}  RQ {pq['RQ']:.2f}  "
        f"mIoU {sem['mIoU']:.2f}"
    )
    out = args.output or os.path.dirname(os.path.abspath(args.json_file))
    paths = write_results_table(results, out, f"{args.dataset_name} (semantic PQ)")
    logging.getLogger("mask2former").info(f"wrote {paths['md']}")
    return results


if __name__ == "__main__":
    main()
