"""Bad inputs give errors that name the file and the fix (mask2former/data/validation.py)."""

import logging

import numpy as np
import pytest
from PIL import Image

from mask2former.config import ConfigKeyError, load_config
from mask2former.data.validation import (
    InvalidInputError,
    MissingFileError,
    check_category_id,
    check_image_size,
    check_instance_annotations,
    check_panoptic_segments,
    clean_polygons,
    read_image,
    read_panoptic_ids,
    read_sem_seg,
    validate_dataset_dicts,
)


def _rgb(h=16, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


# ---- images ------------------------------------------------------------------------------------
def test_missing_image(tmp_path):
    with pytest.raises(MissingFileError, match=r"image .*nope\.jpg does not exist\. Fix:"):
        read_image(str(tmp_path / "nope.jpg"), "BGR")
    # also a FileNotFoundError, for callers that catch that
    with pytest.raises(FileNotFoundError):
        read_image(str(tmp_path / "nope.jpg"), "BGR")


def test_truncated_image(tmp_path):
    full = tmp_path / "full.jpg"
    Image.fromarray(_rgb(64, 64)).save(full, quality=95)
    data = full.read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        InvalidInputError, match=r"cut\.jpg is truncated or corrupted.*Fix: re-download"
    ):
        read_image(str(bad), "BGR")


def test_unreadable_image(tmp_path):
    bad = tmp_path / "text.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(InvalidInputError, match=r"text\.png is not a readable image.*Fix"):
        read_image(str(bad), "RGB")


def test_grayscale_image_becomes_three_equal_channels(tmp_path):
    p = tmp_path / "g.png"
    Image.fromarray(np.full((5, 7), 77, np.uint8)).save(p)
    img = read_image(str(p), "BGR")
    assert img.shape == (5, 7, 3) and img.dtype == np.uint8 and (img == 77).all()


def test_rgba_image_drops_alpha_keeps_colour(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 10, 20, 0  # fully transparent
    p = tmp_path / "a.png"
    Image.fromarray(rgba).save(p)
    bgr = read_image(str(p), "BGR")
    assert bgr.shape == (4, 4, 3) and tuple(bgr[0, 0]) == (20, 10, 200)


def test_palette_with_transparency(tmp_path):
    p = tmp_path / "p.png"
    img = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.info["transparency"] = 0
    img.save(p, transparency=0)
    rgb = read_image(str(p), "RGB")
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[0, 1]) == (0, 255, 0)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    from detectron2.data.detection_utils import read_image as d2_read_image

    arr = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    assert Image.open(p).mode.startswith("I;16")
    ours = read_image(str(p), "BGR")
    assert ours.dtype == np.uint8 and ours.shape == (64, 64, 3)
    np.testing.assert_array_equal(ours[..., 0], (arr >> 8).astype(np.uint8))
    # Detectron2 clips at 255: almost everything becomes white
    theirs = d2_read_image(str(p), "BGR")
    assert (theirs == 255).mean() > 0.9 and (ours == 255).mean() < 0.01


def test_16bit_rgb_png(tmp_path):
    import cv2

    arr = np.zeros((4, 4, 3), np.uint16)
    arr[..., 2] = 60000  # red in BGR order
    p = tmp_path / "rgb16.png"
    cv2.imwrite(str(p), arr)
    rgb = read_image(str(p), "RGB")
    assert (
        rgb.dtype == np.uint8 and abs(int(rgb[0, 0, 0]) - 60000 // 257) <= 1 and rgb[0, 0, 1] == 0
    )


def test_exif_rotated_image(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[274] = 6  # rotate 90 degrees clockwise on display
    p = tmp_path / "r.jpg"
    img.save(p, exif=exif, quality=100)
    out = read_image(str(p), "RGB")
    assert out.shape == (20, 10, 3)  # displayed orientation
    assert out[:8].mean() > 200 and out[12:].mean() < 50  # left half is now on top
    check_image_size({"file_name": str(p), "height": 20, "width": 10}, out)
    with pytest.raises(InvalidInputError, match=r"swapped.*EXIF"):
        check_image_size({"file_name": str(p), "height": 10, "width": 20}, out)


def test_image_size_mismatch():
    with pytest.raises(
        InvalidInputError, match=r"a\.jpg is 24x16 .* annotation says 30x16.*Fix: correct"
    ):
        check_image_size({"file_name": "a.jpg", "height": 16, "width": 30}, _rgb())


# ---- semantic labels ---------------------------------------------------------------------------
def test_semantic_label_out_of_range(tmp_path):
    lab = np.zeros((8, 8), np.uint8)
    lab[0, :3] = 7
    lab[1, 0] = 255
    p = tmp_path / "l.png"
    Image.fromarray(lab).save(p)
    with pytest.raises(InvalidInputError) as e:
        read_sem_seg(str(p), num_classes=5, ignore_label=255, image_file="img.jpg")
    msg = str(e.value)
    assert "l.png" in msg and "img.jpg" in msg and "7 (3 px)" in msg and "[0, 5)" in msg
    assert "NUM_CLASSES" in msg and "255" in msg
    ok = read_sem_seg(str(p), num_classes=8, ignore_label=255)
    assert ok.shape == (8, 8) and ok[1, 0] == 255


def test_semantic_label_rgb_rejected(tmp_path):
    p = tmp_path / "c.png"
    Image.fromarray(_rgb(4, 4)).save(p)
    with pytest.raises(InvalidInputError, match=r"labels must be single-channel class indices"):
        read_sem_seg(str(p), num_classes=3)


def test_semantic_label_gray_saved_as_rgb_is_accepted(tmp_path):
    lab = np.array([[0, 1], [2, 255]], np.uint8)
    p = tmp_path / "g.png"
    Image.fromarray(np.stack([lab] * 3, -1)).save(p)
    np.testing.assert_array_equal(read_sem_seg(str(p), num_classes=3), lab)


def test_missing_semantic_label_file(tmp_path):
    with pytest.raises(
        MissingFileError,
        match=r"semantic label file .*x\.png \(annotation of image a\.jpg\) does not exist",
    ):
        read_sem_seg(str(tmp_path / "x.png"), 3, image_file="a.jpg")


def test_semantic_16bit_labels_keep_values(tmp_path):
    lab = np.array([[0, 300], [299, 65535]], np.uint16)
    p = tmp_path / "l16.png"
    Image.fromarray(lab).save(p)
    out = read_sem_seg(str(p), num_classes=301, ignore_label=65535)
    np.testing.assert_array_equal(out, lab)


# ---- panoptic ----------------------------------------------------------------------------------
def _pan_png(path, ids):
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def test_panoptic_segment_id_not_in_segments_info(tmp_path):
    ids = np.zeros((6, 6), np.int64)
    ids[:3] = 1000
    ids[3:, :2] = 2001
    p = tmp_path / "pan.png"
    _pan_png(p, ids)
    read = read_panoptic_ids(str(p))
    np.testing.assert_array_equal(read, ids)
    check_panoptic_segments(
        read, [{"id": 1000, "category_id": 1}, {"id": 2001, "category_id": 2}], str(p)
    )
    with pytest.raises(InvalidInputError) as e:
        check_panoptic_segments(read, [{"id": 1000, "category_id": 1}], str(p), image_file="i.jpg")
    msg = str(e.value)
    assert "pan.png" in msg and "2001 (6 px)" in msg and "segments_info" in msg and "Fix:" in msg


def test_panoptic_png_wrong_mode(tmp_path):
    p = tmp_path / "pan_l.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(p)
    with pytest.raises(InvalidInputError, match=r"R \+ 256\*G"):
        read_panoptic_ids(str(p))


# ---- instances ---------------------------------------------------------------------------------
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


# ---- config ------------------------------------------------------------------------------------
def test_config_misspelled_key_suggests_closest(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(
        ConfigKeyError, match=r"unknown config key 'SOLVER.BASE_LRR'.*Did you mean 'SOLVER.BASE_LR'"
    ):
        load_config(str(cfg))


def test_config_wrong_type():
    with pytest.raises(ValueError, match=r"wrong type for config key 'SOLVER.MAX_ITER'"):
        load_config("", ["SOLVER.MAX_ITER", "'many'"])
