"""Bad annotations give errors that name the file and the fix; dropped polygons are counted
(mask2former/data/validation/annotations.py)."""

import logging

import numpy as np
import pytest
from PIL import Image

from mask2former.data.validation import (
    InvalidInputError,
    MissingFileError,
    check_category_id,
    check_instance_annotations,
    clean_polygons,
    validate_dataset_dicts,
)


def _rgb(h=16, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_category_id_not_in_metadata():
    with pytest.raises(InvalidInputError) as e:
        check_category_id(9, 3, "x.jpg", names=["a", "b", "c"], what="annotation #2")
    msg = str(e.value)
    assert "annotation #2 in x.jpg has category_id 9" in msg and "0..2 (0=a, 1=b, 2=c)" in msg
    check_category_id(2, 3)


def test_polygons_with_fewer_than_3_points_are_dropped_with_count(caplog):
    good = [0, 0, 10, 0, 10, 10]
    d = {
        "file_name": "a.jpg",
        "annotations": [
            {"category_id": 0, "segmentation": [good, [1, 1, 2, 2]], "iscrowd": 0},
            {
                "category_id": 1,
                "segmentation": [[5, 5, 6, 6]],
                "iscrowd": 0,
            },  # only a 2-point polygon
            {"category_id": 1, "segmentation": {"size": [4, 4], "counts": "abc"}, "iscrowd": 0},
        ],
    }
    with caplog.at_level(logging.WARNING, logger="mask2former.data.validation"):
        out = validate_dataset_dicts(
            [d, {"file_name": "b.jpg", "annotations": []}], "toy", num_classes=2
        )
    annos = out[0]["annotations"]
    assert len(annos) == 2 and annos[0]["segmentation"] == [good]
    assert d["annotations"][0]["segmentation"] == [good, [1, 1, 2, 2]]  # input not modified
    text = caplog.text
    assert "Dataset toy (2 images)" in text and "2 polygon(s) with fewer than 3 points" in text
    assert (
        "1 instance(s) had no valid polygon" in text
        and "1 image(s) have an empty annotation list" in text
    )


def test_polygon_with_odd_coordinates_raises():
    with pytest.raises(InvalidInputError, match="odd number of coordinates"):
        clean_polygons([[0, 0, 1, 1, 2]], "a.jpg")


def test_dataset_level_category_check():
    d = {
        "file_name": "a.jpg",
        "annotations": [{"category_id": 5, "segmentation": [], "iscrowd": 0}],
    }
    with pytest.raises(InvalidInputError, match=r"annotation #0 in a\.jpg has category_id 5"):
        check_instance_annotations(d, 3)
    pan = {
        "file_name": "a.jpg",
        "pan_seg_file_name": "a.png",
        "segments_info": [{"id": 3, "category_id": 9}],
    }
    with pytest.raises(
        InvalidInputError,
        match=r"segment 3 in a\.png \(annotation of image a\.jpg\) has category_id 9",
    ):
        validate_dataset_dicts([pan], num_classes=4)


def test_dataset_level_missing_files(tmp_path):
    img = tmp_path / "a.jpg"
    Image.fromarray(_rgb()).save(img)
    d = {"file_name": str(img), "sem_seg_file_name": str(tmp_path / "a.png")}
    with pytest.raises(MissingFileError, match=r"semantic label file .*a\.png"):
        validate_dataset_dicts([d], check_files=True)
