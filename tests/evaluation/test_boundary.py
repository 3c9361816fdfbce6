"""Boundary IoU on squares whose boundaries are counted by hand (mask2former/evaluation/boundary.py)."""

import numpy as np
import pycocotools.mask as mask_util
import pytest

from mask2former.evaluation import boundary_iou, mask_to_boundary
from mask2former.evaluation.boundary import boundary_width


def box(r0, r1, c0, c1, size=100):
    m = np.zeros((size, size), np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


G = box(20, 60, 20, 60)


SHIFT1 = box(20, 60, 21, 61)  # one column to the right


SHIFT3 = box(20, 60, 23, 63)


def test_boundary_width_and_ring_size():
    assert boundary_width(100, 100) == 3
    assert boundary_width(10, 10) == 1  # never 0
    assert mask_to_boundary(G).sum() == 40**2 - 34**2
    # A mask touching the image border has a boundary along it (the image is padded with 0).
    assert mask_to_boundary(box(0, 100, 0, 100)).sum() == 100**2 - 94**2


def test_boundary_iou_by_hand():
    # Shift by 1: both rings share the top/bottom bands (6 rows x 39 cols = 234) and, in the 34
    # middle rows, columns 21, 22, 58, 59 (136): 370; union 444 + 444 - 370 = 518 -> 5/7.
    assert boundary_iou(G, SHIFT1) == pytest.approx(370 / 518)
    # Shift by 3: only the bands overlap (6 x 37 = 222); union 666 -> 1/3.
    assert boundary_iou(G, SHIFT3) == pytest.approx(1 / 3)
    assert boundary_iou(G, G) == 1.0


def test_bad_mode_is_a_clear_error():
    from pycocotools.coco import COCO

    from mask2former.evaluation import make_boundary_cocoeval

    with pytest.raises(ValueError, match="min"):
        make_boundary_cocoeval(COCO(), COCO(), iou_mode="mean")


def test_rle_boundary_on_the_bounding_box_equals_the_full_image(monkeypatch):
    from mask2former.evaluation import boundary
    from mask2former.evaluation.boundary import _boundaries, rle_boundary

    monkeypatch.setattr(boundary, "_MIN_MASKS_PER_WORKER", 10)

    rng = np.random.default_rng(0)
    rles, expected = [], []
    for k in range(12):
        h, w = rng.integers(20, 90, size=2)
        m = np.zeros((h, w), np.uint8)
        for _ in range(3):  # blobs, some touching the image border
            r0, c0 = rng.integers(0, h - 5), rng.integers(0, w - 5)
            m[r0 : r0 + rng.integers(3, h), c0 : c0 + rng.integers(3, w)] = 1
        m[rng.random((h, w)) < 0.05] ^= 1  # ragged edges and holes
        if k == 0:
            m[:] = 0
        rle = mask_util.encode(np.asfortranarray(m))
        rles.append(rle)
        expected.append(mask_to_boundary(m, 0.05))
        assert np.array_equal(mask_util.decode(rle_boundary(rle, 0.05)), expected[-1])
    pooled = _boundaries(rles * 4, 0.05, workers=2)  # the process-pool path
    assert all(np.array_equal(mask_util.decode(b), e) for b, e in zip(pooled, expected * 4))
