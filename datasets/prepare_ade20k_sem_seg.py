#!/usr/bin/env python3
"""ADE20K SceneParsing-150: shift the labels for detectron2.

Reads  $DETECTRON2_DATASETS/ADEChallengeData2016/annotations/{training,validation}/*.png
       (0 = unlabeled, 1..150 = classes)
Writes $DETECTRON2_DATASETS/ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png
       (label - 1 in uint8: 0 -> 255 = ignore, 1..150 -> 0..149)

Usage: python datasets/prepare_ade20k_sem_seg.py [--root DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm


def convert(args: tuple[Path, Path]) -> None:
    """One label PNG: uint8 `label - 1`, so 0 wraps to 255."""
    src, dst = args
    label = np.asarray(Image.open(src))
    if label.dtype != np.uint8:
        raise ValueError(f"{src}: expected an 8-bit label PNG, got {label.dtype}.")
    Image.fromarray(label - np.uint8(1)).save(dst)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root",
        default=os.getenv("DETECTRON2_DATASETS", "datasets"),
        help="folder holding ADEChallengeData2016 (default: $DETECTRON2_DATASETS or ./datasets)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    base = Path(args.root) / "ADEChallengeData2016"
    for split in ("training", "validation"):
        src_dir = base / "annotations" / split
        if not src_dir.is_dir():
            sys.exit(
                f"'{src_dir}' does not exist: unzip ADEChallengeData2016.zip under {args.root}."
            )
        dst_dir = base / "annotations_detectron2" / split
        dst_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(f, dst_dir / f.name) for f in sorted(src_dir.glob("*.png"))]
        with Pool(max(1, args.workers)) as pool:
            for _ in tqdm(
                pool.imap_unordered(convert, jobs, chunksize=64), total=len(jobs), desc=split
            ):
                pass
        print(f"{split}: wrote {len(jobs)} label maps to {dst_dir}")


if __name__ == "__main__":
    main()
