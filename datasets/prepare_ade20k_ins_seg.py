#!/usr/bin/env python3
"""ADE20K instance annotations (COCO instance JSON, RLE masks) from the ADE20K
instance-segmentation challenge annotations.

Inputs (under --root, default $DETECTRON2_DATASETS or ./datasets):
  ADEChallengeData2016/images/{training,validation}/*.jpg
  ADEChallengeData2016/annotations_instance/{training,validation}/*.png   (R = instance-challenge
        category 1..100, G = instance id, 0 = none; from the challenge's annotations_instance.tar)
  --img-cat-ids: the challenge's image/category list (JSON with "categories": [{"id": 1..100,
        "name": ...}]); default <root>/ade20k_instance_imgCatIds.json.
  --catid-mapping: the challenge's category table (`Instance100 SceneParse150 FullADE20K`,
        1-based, one header line); default <root>/ade20k_instance_catid_mapping.txt.
  Neither file can be downloaded from here: the published Mask2Former repository ships both in
  its datasets/ folder (copied from the ADE20K instance-segmentation challenge toolkit).
Output:
  ADEChallengeData2016/ade20k_instance_{train,val}.json: images (id = file stem), one annotation
  per instance (RLE, bbox [x, y, w, h], area, iscrowd 0), categories with id = ADE150 label
  (0-based), so instance and panoptic annotations share category ids.
Usage: python datasets/prepare_ade20k_ins_seg.py [--root DIR] [--img-cat-ids F] [--catid-mapping F]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image
from tqdm import tqdm

SPLITS = {"train": "training", "val": "validation"}


def read_catid_mapping(path: str) -> dict[int, int]:
    """{instance-challenge category (1-based): ADE150 label (0-based)}."""
    mapping = {}
    with open(path) as f:
        for i, line in enumerate(f):
            if i == 0 or not line.strip():
                continue
            ins_id, sem_id = line.split()[:2]
            mapping[int(ins_id)] = int(sem_id) - 1
    return mapping


def instances_from_png(ins: np.ndarray, mapping: dict[int, int]) -> list[dict]:
    """(H, W, >=2) instance PNG -> one {category_id, segmentation (RLE), bbox, area} per
    instance id."""
    anns = []
    ins_cat, ins_id = ins[..., 0], ins[..., 1]
    for inst in np.unique(ins_id):
        if inst == 0:
            continue
        mask = ins_id == inst
        cat_ids = np.unique(ins_cat[mask])
        if len(cat_ids) != 1 or int(cat_ids[0]) not in mapping:
            raise ValueError(
                f"instance {inst} has instance-challenge categories {cat_ids.tolist()}; "
                "expected exactly one listed in the category mapping."
            )
        ys, xs = np.nonzero(mask)
        x, y = int(xs.min()), int(ys.min())
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("utf-8")
        anns.append(
            {
                "category_id": mapping[int(cat_ids[0])],
                "segmentation": rle,
                "bbox": [x, y, int(xs.max()) - x + 1, int(ys.max()) - y + 1],
                "area": int(mask_util.area(rle)),
                "iscrowd": 0,
            }
        )
    return anns


def process_image(image_file: str, instance_dir: str, mapping: dict[int, int]):
    stem = os.path.splitext(os.path.basename(image_file))[0]
    width, height = Image.open(image_file).size
    ins = np.asarray(Image.open(os.path.join(instance_dir, stem + ".png")).convert("RGB"))
    if ins.shape[:2] != (height, width):
        raise ValueError(f"{stem}: image {width}x{height} but instance PNG {ins.shape[:2]}.")
    image = {
        "id": stem,
        "file_name": os.path.basename(image_file),
        "width": width,
        "height": height,
    }
    return image, instances_from_png(ins, mapping)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"))
    parser.add_argument(
        "--img-cat-ids", default=None, help="default: <root>/ade20k_instance_imgCatIds.json"
    )
    parser.add_argument(
        "--catid-mapping", default=None, help="default: <root>/ade20k_instance_catid_mapping.txt"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    cat_file = args.img_cat_ids or os.path.join(args.root, "ade20k_instance_imgCatIds.json")
    mapping_file = args.catid_mapping or os.path.join(
        args.root, "ade20k_instance_catid_mapping.txt"
    )
    for f, what in (
        (cat_file, "ade20k_instance_imgCatIds.json"),
        (mapping_file, "ade20k_instance_catid_mapping.txt"),
    ):
        if not os.path.isfile(f):
            sys.exit(
                f"'{f}' does not exist. It is the ADE20K instance challenge's {what}, "
                "shipped in the published Mask2Former repository's datasets/ folder; pass "
                "it with --img-cat-ids / --catid-mapping."
            )
    mapping = read_catid_mapping(mapping_file)
    with open(cat_file) as f:
        categories = [{**c, "id": mapping[c["id"]]} for c in json.load(f)["categories"]]

    base = os.path.join(args.root, "ADEChallengeData2016")
    for split, dirname in SPLITS.items():
        image_dir = os.path.join(base, "images", dirname)
        instance_dir = os.path.join(base, "annotations_instance", dirname)
        for d in (image_dir, instance_dir):
            if not os.path.isdir(d):
                sys.exit(f"'{d}' does not exist (see datasets/README.md for the ADE20K layout).")
        files = sorted(str(p) for p in Path(image_dir).glob("*.jpg"))
        fn = functools.partial(process_image, instance_dir=instance_dir, mapping=mapping)
        with Pool(max(1, args.workers)) as pool:
            results = list(tqdm(pool.imap(fn, files, chunksize=16), total=len(files), desc=split))
        images, annotations = [], []
        for image, anns in results:
            images.append(image)
            for a in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": image["id"], **a})
        out_json = os.path.join(base, f"ade20k_instance_{split}.json")
        with open(out_json, "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
        print(f"{split}: wrote {len(annotations)} instances of {len(images)} images to {out_json}")


if __name__ == "__main__":
    main()
