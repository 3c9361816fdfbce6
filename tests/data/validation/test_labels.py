"""Bad semantic and panoptic label files give errors that name the file and the fix
(mask2former/data/validation/labels.py)."""

import numpy as np
import pytest
from panopticapi.utils import rgb2id
from PIL import Image

from mask2former.data.validation import (
    InvalidInputError,
    MissingFileError,
    check_panoptic_segments,
    read_panoptic_png,
    read_sem_seg,
)


def _rgb(h=16, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


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
    read = rgb2id(read_panoptic_png(str(p)))
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
        read_panoptic_png(str(p))


def test_palette_panoptic_png_reads_as_its_colours(tmp_path):
    ids = np.array([[0, 1000, 1000], [2001, 2001, 0]], np.int64)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    p = tmp_path / "pan_p.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=3).save(p)
    assert Image.open(p).mode == "P"
    np.testing.assert_array_equal(rgb2id(read_panoptic_png(str(p))), ids)
