#!/usr/bin/env python3
"""ADE20K-150 panoptic annotations (COCO panoptic format) from the semantic labels and the ADE20K
instance-segmentation challenge annotations.

Inputs (under --root, default $DETECTRON2_DATASETS or ./datasets):
  ADEChallengeData2016/images/{training,validation}/*.jpg
  ADEChallengeData2016/annotations/{training,validation}/*.png            (0 = unlabeled, 1..150)
  ADEChallengeData2016/annotations_instance/{training,validation}/*.png   (R = instance-challenge
        category 1..100, G = instance id, 0 = none; from the challenge's annotations_instance.tar)
  --catid-mapping: the challenge's category table, rows `Instance100 SceneParse150 FullADE20K`
        (1-based) after one header line. It is not downloadable from here: the published
        Mask2Former repository ships it as datasets/ade20k_instance_catid_mapping.txt (copied
        from the ADE20K instance-segmentation challenge toolkit). Default:
        <root>/ade20k_instance_catid_mapping.txt.
Outputs:
  ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png   (segment id = R + 256 G + 256^2 B)
  ADEChallengeData2016/ade20k_panoptic_{train,val}.json    (150 categories: id = ADE150 label
        0..149, isthing = class is in the mapping table, color = ADE palette)

Stuff segments come from the semantic labels of non-thing classes; thing segments, one per
instance, are pasted over them (the two annotations overlap a little). Segment area and bbox are
measured on the final map and segments left with no pixel are dropped. Segment ids are
deterministic: the category colour, perturbed deterministically on collision.
Usage: python datasets/prepare_ade20k_pan_seg.py [--root DIR] [--catid-mapping FILE] [--workers N]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image
from tqdm import tqdm

SPLITS = {"train": "training", "val": "validation"}


def load_ade20k_categories():
    """mask2former/data/datasets/ade20k_categories.py (class names, colours, the challenge's
    category table reader), loaded without importing the whole package."""
    path = Path(__file__).resolve().parents[1] / "mask2former/data/datasets/ade20k_categories.py"
    if path.is_file():
        spec = importlib.util.spec_from_file_location("_ade20k_categories", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:  # installed package, script copied elsewhere
        from mask2former.data.datasets import ade20k_categories as mod
    return mod


def new_segment_id(color, used: set, seed: int) -> int:
    """The category colour as an id if free, else a deterministic perturbation of it."""
    rng = np.random.RandomState(seed)
    c = np.asarray(color, dtype=np.int64)
    while True:
        sid = rgb2id(c)
        if sid != 0 and sid not in used:
            used.add(sid)
            return sid
        c = np.clip(np.asarray(color) + rng.randint(-30, 31, size=3), 0, 255)


def panoptic_from_ade(
    sem: np.ndarray, ins: np.ndarray, mapping: dict[int, int], colors: list
) -> tuple[np.ndarray, list[dict]]:
    """(H, W) uint8 semantic labels (1..150) + (H, W, >=2) instance PNG -> (id map, segments)."""
    things = set(mapping.values())
    cats = sem.astype(np.int64) - 1  # -1 = unlabeled
    pan = np.zeros(sem.shape, dtype=np.int64)
    used: set = set()
    seg_cats: dict[int, int] = {}
    for cat in np.unique(cats):  # stuff first
        if cat < 0 or cat in things:
            continue
        sid = new_segment_id(colors[cat], used, seed=len(used))
        pan[cats == cat] = sid
        seg_cats[sid] = int(cat)
    ins_cat, ins_id = ins[..., 0], ins[..., 1]
    for inst in np.unique(ins_id):  # then things, pasted over stuff
        if inst == 0:
            continue
        mask = ins_id == inst
        cat_ids = np.unique(ins_cat[mask])
        if len(cat_ids) != 1 or int(cat_ids[0]) not in mapping:
            raise ValueError(
                f"instance {inst} has instance-challenge categories {cat_ids.tolist()}; "
                "expected exactly one listed in the category mapping."
            )
        cat = mapping[int(cat_ids[0])]
        sid = new_segment_id(colors[cat], used, seed=len(used))
        pan[mask] = sid
        seg_cats[sid] = cat
    segments = []
    for sid, cat in seg_cats.items():
        mask = pan == sid
        area = int(mask.sum())
        if area == 0:  # a stuff segment entirely covered by things
            continue
        ys, xs = np.nonzero(mask)
        x, y = int(xs.min()), int(ys.min())
        bbox = [x, y, int(xs.max()) - x + 1, int(ys.max()) - y + 1]
        segments.append({"id": sid, "category_id": cat, "area": area, "bbox": bbox, "iscrowd": 0})
    return pan, segments


def process_image(
    image_file: str,
    semantic_dir: str,
    instance_dir: str,
    out_dir: str,
    mapping: dict[int, int],
    colors: list,
):
    stem = os.path.splitext(os.path.basename(image_file))[0]
    width, height = Image.open(image_file).size
    sem = np.asarray(Image.open(os.path.join(semantic_dir, stem + ".png")))
    ins = np.asarray(Image.open(os.path.join(instance_dir, stem + ".png")).convert("RGB"))
    if sem.shape != (height, width) or ins.shape[:2] != (height, width):
        raise ValueError(
            f"{stem}: image {width}x{height}, semantic {sem.shape}, instance "
            f"{ins.shape[:2]}: sizes differ."
        )
    pan, segments = panoptic_from_ade(sem, ins, mapping, colors)
    Image.fromarray(id2rgb(pan)).save(os.path.join(out_dir, stem + ".png"))
    image = {
        "id": stem,
        "file_name": os.path.basename(image_file),
        "width": width,
        "height": height,
    }
    annotation = {"image_id": stem, "file_name": stem + ".png", "segments_info": segments}
    return image, annotation


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"))
    parser.add_argument(
        "--catid-mapping", default=None, help="default: <root>/ade20k_instance_catid_mapping.txt"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    mapping_file = args.catid_mapping or os.path.join(
        args.root, "ade20k_instance_catid_mapping.txt"
    )
    if not os.path.isfile(mapping_file):
        sys.exit(
            f"'{mapping_file}' does not exist. It is the ADE20K instance challenge's category "
            "table, shipped by the published Mask2Former repository as "
            "datasets/ade20k_instance_catid_mapping.txt; pass it with --catid-mapping."
        )
    ade = load_ade20k_categories()
    mapping = ade.read_catid_mapping(mapping_file)
    names, colors = ade.ADE20K_150_CLASSES, ade.ADE20K_150_COLORS
    categories = [
        {"id": i, "name": n, "isthing": int(i in set(mapping.values())), "color": list(colors[i])}
        for i, n in enumerate(names)
    ]

    base = os.path.join(args.root, "ADEChallengeData2016")
    for split, dirname in SPLITS.items():
        image_dir = os.path.join(base, "images", dirname)
        semantic_dir = os.path.join(base, "annotations", dirname)
        instance_dir = os.path.join(base, "annotations_instance", dirname)
        for d in (image_dir, semantic_dir, instance_dir):
            if not os.path.isdir(d):
                sys.exit(f"'{d}' does not exist (see datasets/README.md for the ADE20K layout).")
        out_dir = os.path.join(base, f"ade20k_panoptic_{split}")
        os.makedirs(out_dir, exist_ok=True)
        files = sorted(str(p) for p in Path(image_dir).glob("*.jpg"))
        fn = functools.partial(
            process_image,
            semantic_dir=semantic_dir,
            instance_dir=instance_dir,
            out_dir=out_dir,
            mapping=mapping,
            colors=colors,
        )
        with Pool(max(1, args.workers)) as pool:
            results = list(tqdm(pool.imap(fn, files, chunksize=16), total=len(files), desc=split))
        out = {
            "images": [r[0] for r in results],
            "annotations": [r[1] for r in results],
            "categories": categories,
        }
        out_json = os.path.join(base, f"ade20k_panoptic_{split}.json")
        with open(out_json, "w") as f:
            json.dump(out, f)
        print(f"{split}: wrote {len(files)} panoptic PNGs to {out_dir} and {out_json}")


if __name__ == "__main__":
    main()
