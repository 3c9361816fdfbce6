"""Tiny datasets in the official layouts, and the datasets/prepare_*.py scripts as modules."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


STEM = "ADE_train_00000001"


H, W = 6, 8


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "datasets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # worker processes look the functions up by module name
    spec.loader.exec_module(module)
    return module


def rgb2id(rgb):
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def write_ade20k(root: Path):
    """One 6x8 image per split in the ADEChallengeData2016 + instance-challenge layout.

    Semantic (1-based ADE150): rows 0-2 = wall (1) | floor (4); rows 3-5 = bed (8), one pixel
    unlabeled. Instances (R = challenge category, G = instance id): bed (cat 1) rows 3-5 cols 0-3;
    person (cat 2) rows 1-4 cols 5-6, overlapping the floor and the bed region.
    """
    sem = np.zeros((H, W), np.uint8)
    sem[0:3, 0:4], sem[0:3, 4:8], sem[3:6, :] = 1, 4, 8
    sem[5, 7] = 0
    ins = np.zeros((H, W, 3), np.uint8)
    ins[3:6, 0:4] = [1, 1, 0]
    ins[1:5, 5:7] = [2, 2, 0]
    base = root / "ADEChallengeData2016"
    for split in ("training", "validation"):
        stem = STEM if split == "training" else STEM.replace("train", "val")
        for sub, arr, ext in (
            ("images", np.full((H, W, 3), 90, np.uint8), ".jpg"),
            ("annotations", sem, ".png"),
            ("annotations_instance", ins, ".png"),
        ):
            d = base / sub / split
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(d / f"{stem}{ext}")
    # the challenge's category table and category list (test values, not the real table)
    (root / "ade20k_instance_catid_mapping.txt").write_text(
        "Instacne100\tSceneParsing150\tFullADE20K\n1\t8\t165\n2\t13\t2978\n"
    )
    (root / "ade20k_instance_imgCatIds.json").write_text(
        json.dumps(
            {"images": [], "categories": [{"id": 1, "name": "bed"}, {"id": 2, "name": "person"}]}
        )
    )
    return sem, ins


def write_coco_panoptic(root: Path, split="val2017"):
    """COCO layout: one 4x5 panoptic PNG with person (id 1), car (id 3, crowd), rug-merged (200)."""
    coco = root / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / f"panoptic_{split}").mkdir()
    (coco / split).mkdir()
    ids = np.zeros((4, 5), np.int64)
    ids[0:2, 0:2] = 5
    ids[2:4, 0:3] = 300
    ids[0:2, 3:5] = 70000  # needs the G/B channels
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(coco / f"panoptic_{split}" / "000000000001.png")
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(coco / split / "000000000001.jpg")
    ann = {
        "image_id": 1,
        "file_name": "000000000001.png",
        "segments_info": [
            {"id": 5, "category_id": 1, "iscrowd": 0},
            {"id": 300, "category_id": 3, "iscrowd": 1},
            {"id": 70000, "category_id": 200, "iscrowd": 0},
        ],
    }
    js = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": 4, "width": 5}],
        "annotations": [ann],
        "categories": [
            {"id": 1, "name": "person", "isthing": 1},
            {"id": 3, "name": "car", "isthing": 1},
            {"id": 200, "name": "rug-merged", "isthing": 0},
        ],
    }
    (coco / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(js))
    return ids
