#!/usr/bin/env python3
"""COCO: semantic label PNGs from the panoptic annotations (for semantic evaluation).

Reads  $DETECTRON2_DATASETS/coco/annotations/panoptic_{train,val}2017.json
       $DETECTRON2_DATASETS/coco/panoptic_{train,val}2017/*.png
Writes $DETECTRON2_DATASETS/coco/panoptic_semseg_{train,val}2017/*.png: uint8, pixel = contiguous
       class id 0..132 (position in detectron2's COCO_CATEGORIES, which is the order of the
       panoptic JSON's categories), 255 = unlabeled. Crowd segments keep their class.

Runs in parallel (--workers, default: all cores) with a progress bar.
Usage: python datasets/prepare_coco_semantic_annos_from_panoptic_annos.py [--root DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from multiprocessing import Pool

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image
from tqdm import tqdm


def panoptic_png_to_semantic(job: tuple[str, str, list], id_map: dict[int, int]) -> None:
    """One panoptic PNG -> one semantic PNG (255 where no segment)."""
    src, dst, segments = job
    pan = rgb2id(np.asarray(Image.open(src).convert("RGB")))
    out = np.full(pan.shape, 255, dtype=np.uint8)
    for seg in segments:
        out[pan == seg["id"]] = id_map[seg["category_id"]]
    Image.fromarray(out).save(dst)


def convert_split(
    panoptic_json: str, panoptic_root: str, sem_seg_root: str, categories: list[dict], workers: int
) -> int:
    """Write a semantic PNG for every annotation of `panoptic_json`; returns how many."""
    if len(categories) > 255:
        raise ValueError("uint8 output holds at most 255 classes (255 is 'unlabeled').")
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    with open(panoptic_json) as f:
        annotations = json.load(f)["annotations"]
    os.makedirs(sem_seg_root, exist_ok=True)
    jobs = [
        (
            os.path.join(panoptic_root, a["file_name"]),
            os.path.join(sem_seg_root, a["file_name"]),
            a["segments_info"],
        )
        for a in annotations
    ]
    fn = functools.partial(panoptic_png_to_semantic, id_map=id_map)
    with Pool(max(1, workers)) as pool:
        for _ in tqdm(
            pool.imap_unordered(fn, jobs, chunksize=32),
            total=len(jobs),
            desc=os.path.basename(sem_seg_root),
        ):
            pass
    return len(jobs)


def coco_categories() -> list[dict]:
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return COCO_CATEGORIES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root",
        default=os.getenv("DETECTRON2_DATASETS", "datasets"),
        help="folder holding coco/ (default: $DETECTRON2_DATASETS or ./datasets)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--splits", nargs="+", default=["val2017", "train2017"])
    parser.add_argument(
        "--categories-from-json",
        action="store_true",
        help="number classes in the order of the JSON's categories instead of "
        "detectron2's COCO_CATEGORIES (for COCO-format data with other classes)",
    )
    args = parser.parse_args(argv)

    coco = os.path.join(args.root, "coco")
    for split in args.splits:
        pan_json = os.path.join(coco, "annotations", f"panoptic_{split}.json")
        pan_root = os.path.join(coco, f"panoptic_{split}")
        for p in (pan_json, pan_root):
            if not os.path.exists(p):
                sys.exit(
                    f"'{p}' does not exist: download the COCO 2017 panoptic annotations "
                    f"and unzip panoptic_{split}.zip (see datasets/README.md)."
                )
        if args.categories_from_json:
            with open(pan_json) as f:
                cats = json.load(f)["categories"]
        else:
            cats = coco_categories()
        out = os.path.join(coco, f"panoptic_semseg_{split}")
        n = convert_split(pan_json, pan_root, out, cats, args.workers)
        print(f"{split}: wrote {n} semantic PNGs to {out}")


if __name__ == "__main__":
    main()
