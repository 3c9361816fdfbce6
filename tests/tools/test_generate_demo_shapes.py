"""tools/generate_demo_shapes.py: the demo_shapes dataset is deterministic, written in valid COCO /
panoptic / semantic formats that agree with each other, with a progress bar."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from mask2former.data.datasets.register_demo_shapes import DEMO_CATEGORIES, SEED

SMALL = {"train": (6, 0), "val": (4, 1)}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory, demo_shapes):
    return demo_shapes.prepare_demo_shapes(
        str(tmp_path_factory.mktemp("demo") / "demo_shapes"), splits=SMALL, workers=1
    )


def _rgb2id(png):
    rgb = np.asarray(Image.open(png), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]


def test_render_is_deterministic(demo_shapes):
    a = demo_shapes.render_scene((1, 2, 3))
    b = demo_shapes.render_scene((1, 2, 3))
    c = demo_shapes.render_scene((1, 2, 4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_generation_is_deterministic(small_root, tmp_path, demo_shapes):
    other = demo_shapes.prepare_demo_shapes(str(tmp_path / "again"), splits=SMALL, workers=2)
    for rel in ("annotations/panoptic_val.json", "annotations/instances_train.json"):
        with open(os.path.join(small_root, rel)) as f1, open(os.path.join(other, rel)) as f2:
            assert json.load(f1) == json.load(f2)
    for rel in ("train/000003.jpg", "panoptic_val/000001.png", "panoptic_semseg_train/000002.png"):
        a = np.asarray(Image.open(os.path.join(small_root, rel)))
        b = np.asarray(Image.open(os.path.join(other, rel)))
        np.testing.assert_array_equal(a, b)


def test_stamp_mismatch_regenerates(tmp_path, demo_shapes):
    root = demo_shapes.prepare_demo_shapes(str(tmp_path / "d"), splits={"val": (2, 1)}, workers=1)
    marker = os.path.join(root, "val", "stale.txt")
    open(marker, "w").close()
    # Same stamp: left alone.
    demo_shapes.prepare_demo_shapes(root, splits={"val": (2, 1)}, workers=1)
    assert os.path.exists(marker)
    # Different stamp (here: another split size): regenerated from scratch.
    demo_shapes.prepare_demo_shapes(root, splits={"val": (3, 1)}, workers=1)
    assert not os.path.exists(marker)
    assert len(os.listdir(os.path.join(root, "val"))) == 3


@pytest.mark.parametrize("split", ["train", "val"])
def test_formats_are_valid_and_consistent(small_root, split):
    n = SMALL[split][0]
    categories = {c["id"]: c for c in DEMO_CATEGORIES}
    contiguous = {c["id"]: i for i, c in enumerate(DEMO_CATEGORIES)}

    coco = COCO(os.path.join(small_root, "annotations", f"instances_{split}.json"))
    assert sorted(coco.getImgIds()) == list(range(n))
    assert sorted(coco.getCatIds()) == [c for c in categories if categories[c]["isthing"]]
    with open(os.path.join(small_root, "annotations", f"panoptic_{split}.json")) as f:
        panoptic = json.load(f)
    assert [c["id"] for c in panoptic["categories"]] == sorted(categories)

    num_things = 0
    for ann in panoptic["annotations"]:
        image_info = coco.loadImgs(ann["image_id"])[0]
        stem = os.path.splitext(ann["file_name"])[0]
        assert image_info["file_name"] == stem + ".jpg"  # detectron2's panoptic loader expects it
        image = np.asarray(Image.open(os.path.join(small_root, split, stem + ".jpg")))
        assert image.shape == (image_info["height"], image_info["width"], 3)
        assert image.std() > 20  # not blank

        pan = _rgb2id(os.path.join(small_root, f"panoptic_{split}", ann["file_name"]))
        sem = np.asarray(
            Image.open(os.path.join(small_root, f"panoptic_semseg_{split}", stem + ".png"))
        )
        assert pan.shape == sem.shape == image.shape[:2]
        ids = [s["id"] for s in ann["segments_info"]]
        assert len(set(ids)) == len(ids)
        assert set(np.unique(pan)) - {0} == set(ids)  # PNG ids match segments_info
        things = []
        for s in ann["segments_info"]:
            m = pan == s["id"]
            assert s["area"] == m.sum()
            ys, xs = np.nonzero(m)
            assert s["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            ]
            assert s["iscrowd"] == 0 and s["category_id"] in categories
            assert (sem[m] == contiguous[s["category_id"]]).all()  # semantic agrees with panoptic
            if categories[s["category_id"]]["isthing"]:
                things.append(s)
        assert (sem[pan == 0] == 255).all()

        # Instance annotations are the thing segments of the panoptic annotation, as RLE.
        insts = coco.loadAnns(coco.getAnnIds(imgIds=ann["image_id"]))
        assert len(insts) == len(things)
        num_things += len(things)
        for inst, s in zip(insts, things):
            m = coco.annToMask(inst).astype(bool)
            np.testing.assert_array_equal(m, pan == s["id"])
            assert inst["category_id"] == s["category_id"]
            assert inst["area"] == m.sum() == mask_util.area(inst["segmentation"])
            assert inst["bbox"] == s["bbox"]
    assert num_things >= n  # every image has at least one shape


def test_scenes_cover_all_classes(demo_shapes):
    seen = set()
    for i in range(40):
        _, _, segments, _ = demo_shapes.render_scene((SEED, 0, i))
        seen |= {s["category_id"] for s in segments}
    assert seen == {c["id"] for c in DEMO_CATEGORIES}


def test_generation_reports_progress(tmp_path, capsys, demo_shapes):
    for workers in (1, 2):
        root = tmp_path / f"w{workers}" / "demo_shapes"
        demo_shapes.prepare_demo_shapes(str(root), splits={"val": (3, 0)}, workers=workers)
        err = capsys.readouterr().err
        assert "Generating demo_shapes" in err and "3/3" in err


def test_no_lock_file_next_to_the_dataset(tmp_path, demo_shapes):
    root = demo_shapes.prepare_demo_shapes(
        str(tmp_path / "data" / "demo_shapes"), splits={"val": (1, 0)}, workers=1
    )
    assert sorted(os.listdir(tmp_path / "data")) == ["demo_shapes"]
    assert os.path.isfile(os.path.join(root, "VERSION"))
