"""datasets/prepare_ade20k_{sem,pan,ins}_seg.py on a tiny ADE20K layout, against hand-computed outputs."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from tests.datasets.layouts import STEM, H, W, load_script, rgb2id, write_ade20k


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
