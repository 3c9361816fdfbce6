"""Bad images give errors that name the file and the fix (mask2former/data/validation/images.py,
errors.py)."""

import numpy as np
import pytest
from PIL import Image

from mask2former.data.validation import (
    InvalidInputError,
    MissingFileError,
    check_image_size,
    read_image,
)


def _rgb(h=16, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


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
