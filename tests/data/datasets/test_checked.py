"""Annotation files that detectron2's loaders would get silently wrong raise (or warn) with the
file, the id and the fix; through the one-call registrations of custom.py."""

import json
import logging

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from mask2former.data.datasets import (
    register_instance_dataset,
    register_panoptic_dataset,
    register_semantic_dataset,
)
from mask2former.data.datasets.checked import read_json
from mask2former.data.validation import InvalidInputError, MissingFileError

SQUARE = [2.0, 2.0, 10.0, 2.0, 10.0, 10.0, 2.0, 10.0]


@pytest.fixture
def names():
    made = []

    def name(n):
        made.append(n)
        return n

    yield name
    for n in made:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
        if n in MetadataCatalog.list():
            MetadataCatalog.remove(n)


def _coco(tmp_path, images, annotations):
    (tmp_path / "img").mkdir(exist_ok=True)
    for img in images:
        Image.new("RGB", (16, 16)).save(tmp_path / "img" / img["file_name"])
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}],
    }
    p = tmp_path / "inst.json"
    p.write_text(json.dumps(data))
    return p


def _img(i, name=None):
    return {"id": i, "file_name": name or f"{i}.png", "width": 16, "height": 16}


def _ann(i, image_id, seg):
    return {
        "id": i,
        "image_id": image_id,
        "category_id": 1,
        "segmentation": seg,
        "iscrowd": 0,
        "bbox": [2, 2, 8, 8],
        "area": 64,
    }


def _load_instances(tmp_path, names, images, annotations):
    p = _coco(tmp_path, images, annotations)
    n = names("_chk_inst")
    register_instance_dataset(n, p, tmp_path / "img")
    return DatasetCatalog.get(n)


def test_duplicate_coco_image_ids_raise(tmp_path, names):
    with pytest.raises(InvalidInputError) as e:
        _load_instances(
            tmp_path, names, [_img(1, "a.png"), _img(1, "b.png")], [_ann(1, 1, [SQUARE])]
        )
    assert (
        "inst.json: 1 image id(s) are used by more than one image, e.g. id 1 by ['a.png', 'b.png']"
        in str(e.value)
    )


def test_odd_polygon_raises_with_the_annotation_id(tmp_path, names):
    with pytest.raises(
        InvalidInputError,
        match=r"annotation id 7 \(image 1.png\) has a polygon with an odd number of coordinates \(7\)",
    ):
        _load_instances(tmp_path, names, [_img(1)], [_ann(7, 1, [SQUARE[:7]])])


def test_short_polygons_are_counted_in_a_specific_warning(tmp_path, names, caplog):
    with caplog.at_level(logging.WARNING):
        records = _load_instances(
            tmp_path,
            names,
            [_img(1)],
            [_ann(1, 1, [SQUARE, [1.0, 1.0, 3.0, 3.0]]), _ann(2, 1, [[1.0, 2.0]])],
        )
    assert "1 polygon(s) with fewer than 3 points dropped" not in caplog.text  # two were
    assert (
        "2 polygon(s) with fewer than 3 points dropped; 1 instance(s) left without a polygon dropped"
        in caplog.text
    )
    assert len(records[0]["annotations"]) == 1


def test_polygons_outside_the_image(tmp_path, names, caplog):
    far = [x + 100 for x in SQUARE]
    with pytest.raises(
        InvalidInputError,
        match=r"every polygon lies wholly outside its image \(e.g. annotation 1 of 1.png\)",
    ):
        _load_instances(tmp_path, names, [_img(1)], [_ann(1, 1, [far])])
    for n in list(DatasetCatalog.list()):
        if n == "_chk_inst":
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
    with caplog.at_level(logging.WARNING):
        _load_instances(tmp_path, names, [_img(1)], [_ann(1, 1, [far]), _ann(2, 1, [SQUARE])])
    assert (
        "1 instance(s) lie wholly outside their image and train as empty masks (e.g. annotation 1 of 1.png)"
        in caplog.text
    )


@pytest.mark.parametrize(
    "text, detail", [('{"images": [', "truncated"), ("not json", "Expecting value")]
)
def test_bad_json_names_the_file(tmp_path, text, detail):
    p = tmp_path / "x.json"
    p.write_text(text)
    with pytest.raises(InvalidInputError) as e:
        read_json(str(p), "COCO instance JSON")
    assert f"COCO instance JSON {p} ({len(text)} bytes) is not valid JSON" in str(e.value)
    assert detail in str(e.value)


# ---- panoptic ----------------------------------------------------------------------------------
def _panoptic(tmp_path, names, images, annotations):
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "pan").mkdir(exist_ok=True)
    for img in images:
        Image.new("RGB", (16, 16)).save(tmp_path / "img" / img["file_name"])
    for ann in annotations:
        Image.new("RGB", (16, 16)).save(tmp_path / "pan" / ann["file_name"])
    cats = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}]
    p = tmp_path / "pan.json"
    p.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    n = names("_chk_pan")
    register_panoptic_dataset(n, tmp_path / "img", tmp_path / "pan", p)
    return DatasetCatalog.get(n)


def _pan_ann(image_id, png, segments=((5, 1),)):
    return {
        "image_id": image_id,
        "file_name": png,
        "segments_info": [{"id": s, "category_id": c, "iscrowd": 0} for s, c in segments],
    }


def test_panoptic_annotation_with_another_images_id(tmp_path, names):
    images = [_img(1, "a.jpg"), _img(2, "b.jpg")]
    with pytest.raises(InvalidInputError) as e:
        _panoptic(tmp_path, names, images, [_pan_ann(2, "a.png"), _pan_ann(1, "b.png")])
    assert "the annotation a.png has image_id 2, which is the id of image b.jpg" in str(e.value)


def test_panoptic_two_annotations_for_one_image(tmp_path, names):
    images = [_img(1, "a.jpg"), _img(2, "b.jpg")]
    with pytest.raises(InvalidInputError, match=r"image_id 1: \['a.png', 'b.png'\]"):
        _panoptic(tmp_path, names, images, [_pan_ann(1, "a.png"), _pan_ann(1, "b.png")])


def test_panoptic_segment_id_listed_twice(tmp_path, names):
    with pytest.raises(
        InvalidInputError, match=r"a.png lists segment id 5 twice \(category_id 1 and 2\)"
    ):
        _panoptic(tmp_path, names, [_img(1, "a.jpg")], [_pan_ann(1, "a.png", ((5, 1), (5, 2)))])


def test_panoptic_image_without_annotation_is_reported(tmp_path, names, caplog):
    images = [_img(1, "a.jpg"), _img(2, "b.jpg")]
    with caplog.at_level(logging.WARNING):
        records = _panoptic(tmp_path, names, images, [_pan_ann(1, "a.png")])
    assert len(records) == 1
    assert "1 of 2 images have no annotation entry and are not used (e.g. b.jpg)" in caplog.text


# ---- semantic ----------------------------------------------------------------------------------
def _semantic(tmp_path, names, stems, labels, image_ext=".jpg"):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for s in stems:
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / f"{s}.png")
    for s in labels:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "lab" / f"{s}.png")
    n = names("_chk_sem")
    register_semantic_dataset(
        n, tmp_path / "img", tmp_path / "lab", ["a", "b"], image_ext=image_ext
    )
    return DatasetCatalog.get(n)


def test_semantic_missing_label_raises(tmp_path, names):
    with pytest.raises(MissingFileError) as e:
        _semantic(tmp_path, names, ["0", "1", "2"], ["0", "2"], image_ext=".png")
    msg = str(e.value)
    assert (
        f"semantic label file {tmp_path / 'lab' / '1.png'} (annotation of image {tmp_path / 'img' / '1.png'}) does not exist (1 of 3 images"
        in msg
    )


def test_semantic_wrong_image_ext_says_what_the_folder_holds(tmp_path, names):
    with pytest.raises(
        InvalidInputError,
        match=r"no '\*.jpg' image under .*img \(it holds: 2 x .png\). Fix: pass the image extension as image_ext",
    ):
        _semantic(tmp_path, names, ["0", "1"], ["0", "1"])


def test_semantic_pairs(tmp_path, names):
    records = _semantic(tmp_path, names, ["0", "1"], ["0", "1", "9"], image_ext=".png")
    assert [r["sem_seg_file_name"] for r in records] == [
        str(tmp_path / "lab" / f"{i}.png") for i in (0, 1)
    ]


def test_builtin_loaders_name_a_truncated_json(tmp_path, names):
    from mask2former.data.datasets._utils import wrap_with_path_check

    p = tmp_path / "instances_val2017.json"
    p.write_text('{"images": [')
    n = names("_chk_builtin")

    def d2_loader():  # detectron2's load_coco_json: json.load without the file name
        with open(p) as f:
            return json.load(f)

    DatasetCatalog.register(n, d2_loader)
    wrap_with_path_check(n, [(str(tmp_path), "prepare"), (str(p), "prepare")])
    with pytest.raises(
        InvalidInputError,
        match=r"annotation JSON of dataset '_chk_builtin' .*instances_val2017.json \(12 bytes\) is not valid JSON",
    ):
        DatasetCatalog.get(n)
