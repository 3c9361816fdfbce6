"""The datasets/prepare_*.py scripts on tiny inputs in the official layouts, checked against
hand-computed outputs."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
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


def test_ade20k_sem_seg_label_shift(tmp_path):
    sem, _ = write_ade20k(tmp_path)
    load_script("prepare_ade20k_sem_seg").main(["--root", str(tmp_path), "--workers", "2"])
    base = tmp_path / "ADEChallengeData2016" / "annotations_detectron2"
    out = np.asarray(Image.open(base / "training" / f"{STEM}.png"))
    expected = np.full((H, W), 255, np.uint8)
    expected[0:3, 0:4], expected[0:3, 4:8], expected[3:6, :] = 0, 3, 7
    expected[5, 7] = 255
    assert np.array_equal(out, expected)
    assert (base / "validation" / f"{STEM.replace('train', 'val')}.png").is_file()


def test_ade20k_panoptic(tmp_path):
    write_ade20k(tmp_path)
    load_script("prepare_ade20k_pan_seg").main(["--root", str(tmp_path), "--workers", "1"])
    base = tmp_path / "ADEChallengeData2016"
    data = json.loads((base / "ade20k_panoptic_train.json").read_text())
    cats = data["categories"]
    assert len(cats) == 150 and [c["id"] for c in cats] == list(range(150))
    assert [c["id"] for c in cats if c["isthing"]] == [7, 12]  # bed, person
    assert cats[0] == {"id": 0, "name": "wall", "isthing": 0, "color": [120, 120, 120]}
    assert data["images"] == [{"id": STEM, "file_name": f"{STEM}.jpg", "width": W, "height": H}]
    (ann,) = data["annotations"]
    assert ann["image_id"] == STEM and ann["file_name"] == f"{STEM}.png"
    segs = {s["category_id"]: s for s in ann["segments_info"]}
    # hand-computed: the person is pasted over 4 floor pixels; unlabeled / un-instanced bed = void
    assert {c: (s["area"], s["bbox"]) for c, s in segs.items()} == {
        0: (12, [0, 0, 4, 3]),
        3: (8, [4, 0, 4, 3]),
        7: (12, [0, 3, 4, 3]),
        12: (8, [5, 1, 2, 4]),
    }
    pan = rgb2id(np.asarray(Image.open(base / "ade20k_panoptic_train" / f"{STEM}.png")))
    expected = np.zeros((H, W), np.int64)
    expected[0:3, 0:4] = segs[0]["id"]
    expected[0:3, 4:8] = segs[3]["id"]
    expected[3:6, 0:4] = segs[7]["id"]
    expected[1:5, 5:7] = segs[12]["id"]
    assert np.array_equal(pan, expected)
    seg_ids = {s["id"] for s in ann["segments_info"]}
    assert len(seg_ids) == 4 and 0 not in seg_ids  # unique, and never VOID


def test_ade20k_instance(tmp_path):
    write_ade20k(tmp_path)
    load_script("prepare_ade20k_ins_seg").main(["--root", str(tmp_path), "--workers", "1"])
    data = json.loads(
        (tmp_path / "ADEChallengeData2016" / "ade20k_instance_train.json").read_text()
    )
    assert data["categories"] == [{"id": 7, "name": "bed"}, {"id": 12, "name": "person"}]
    assert data["images"] == [{"id": STEM, "file_name": f"{STEM}.jpg", "width": W, "height": H}]
    bed, person = data["annotations"]
    assert (bed["id"], bed["image_id"], bed["category_id"], bed["iscrowd"]) == (1, STEM, 7, 0)
    assert (bed["bbox"], bed["area"]) == ([0, 3, 4, 3], 12)
    assert (person["category_id"], person["bbox"], person["area"]) == (12, [5, 1, 2, 4], 8)
    expected = np.zeros((H, W), np.uint8)
    expected[1:5, 5:7] = 1
    assert np.array_equal(mask_util.decode(person["segmentation"]), expected)


def test_ade20k_scripts_explain_missing_challenge_files(tmp_path):
    write_ade20k(tmp_path)
    (tmp_path / "ade20k_instance_catid_mapping.txt").unlink()
    with pytest.raises(SystemExit, match="ade20k_instance_catid_mapping.txt"):
        load_script("prepare_ade20k_pan_seg").main(["--root", str(tmp_path)])


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


def test_coco_semantic_from_panoptic(tmp_path, capsys):
    write_coco_panoptic(tmp_path)
    script = load_script("prepare_coco_semantic_annos_from_panoptic_annos")
    script.main(["--root", str(tmp_path), "--splits", "val2017", "--workers", "2"])
    out = np.asarray(Image.open(tmp_path / "coco" / "panoptic_semseg_val2017" / "000000000001.png"))
    # contiguous ids = positions in COCO_CATEGORIES: person 0, car 2, rug-merged 132
    expected = np.array(
        [[0, 0, 255, 132, 132], [0, 0, 255, 132, 132], [2, 2, 2, 255, 255], [2, 2, 2, 255, 255]],
        np.uint8,
    )
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    assert "wrote 1 semantic PNGs" in capsys.readouterr().out
    # numbering from the JSON's own category list instead
    script.main(
        ["--root", str(tmp_path), "--splits", "val2017", "--workers", "1", "--categories-from-json"]
    )
    out = np.asarray(Image.open(tmp_path / "coco" / "panoptic_semseg_val2017" / "000000000001.png"))
    assert np.array_equal(
        out, np.select([expected == 0, expected == 2, expected == 132], [0, 1, 2], 255)
    )
