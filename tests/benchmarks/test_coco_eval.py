"""`python -m benchmarks.coco_eval`: both COCO backends time the same evaluation and report the same
AP, AP50 and AP75 on the generated split (box, mask and Boundary AP)."""

import pytest

from benchmarks import coco_eval


def test_both_backends_same_ap(capsys):
    rows = coco_eval.main(["--images", "3", "--dets", "4", "--size", "32", "48", "--boundary"])
    assert [(r[0], r[1]) for r in rows] == [
        (task, backend)
        for task in ("bbox", "segm", "boundary")
        for backend in ("pycocotools", "faster-coco-eval")
    ]
    for slow, fast in zip(rows[::2], rows[1::2]):
        assert fast[4:7] == pytest.approx(slow[4:7], abs=1e-6), (slow, fast)
        assert slow[2] > 0 and fast[7] > 0  # wall seconds, speed-up
    assert "| boundary | faster-coco-eval |" in capsys.readouterr().out.replace("  ", " ")
