"""tools/evaluate_coco_boundary_ap.py: Boundary AP on shifted squares, and the fast COCO evaluation when present."""

import importlib.util
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest

from mask2former.evaluation import boundary_iou


def box(r0, r1, c0, c1, size=100):
    m = np.zeros((size, size), np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


G = box(20, 60, 20, 60)


SHIFT1 = box(20, 60, 21, 61)  # one column to the right


def _write(tmp_path, gt_masks, dt_masks):
    """COCO json files: one image, one category; gt_masks list, dt_masks [(mask, score)]."""

    def rle(m):
        r = mask_util.encode(np.asfortranarray(m))
        r["counts"] = r["counts"].decode()
        return r

    gt = {
        "images": [{"id": 1, "height": 100, "width": 100, "file_name": "a.jpg"}],
        "categories": [{"id": 5, "name": "thing"}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": 5,
                "segmentation": rle(m),
                "area": float(m.sum()),
                "bbox": list(mask_util.toBbox(rle(m))),
                "iscrowd": 0,
            }
            for i, m in enumerate(gt_masks)
        ],
    }
    dt = [
        {"image_id": 1, "category_id": 5, "segmentation": rle(m), "score": s, "bbox": [0, 0, 1, 1]}
        for m, s in dt_masks
    ]
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(dt))
    return str(gt_path), str(dt_path)


@pytest.fixture(scope="module")
def tool():
    path = os.path.join(
        os.path.dirname(__file__), "..", "..", "tools", "evaluate_coco_boundary_ap.py"
    )
    spec = importlib.util.spec_from_file_location("evaluate_coco_boundary_ap", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_boundary_ap_shifted_square(tool, tmp_path):
    """Mask IoU 1560/1640 = 0.951 (>= every threshold: AP 100); Boundary IoU 5/7 = 0.714
    (matches at 0.50 ... 0.70, 5 of 10 thresholds: AP 50). min() and Boundary alone agree."""
    gt, dt = _write(tmp_path, [G], [(SHIFT1, 0.9)])
    assert tool.main(["--gt-json-file", gt, "--dt-json-file", dt, "--iou-type", "segm"])["segm"][
        "AP"
    ] == pytest.approx(100)
    for mode in ("min", "boundary"):
        res = tool.main(
            [
                "--gt-json-file",
                gt,
                "--dt-json-file",
                dt,
                "--boundary-iou-mode",
                mode,
                "--output",
                str(tmp_path / mode),
            ]
        )
        assert res["boundary"]["AP"] == pytest.approx(50)
        assert res["boundary"]["AP50"] == pytest.approx(100)
        assert res["boundary"]["AP75"] == pytest.approx(0)
        assert (tmp_path / mode / "results.csv").exists()


def test_boundary_ap_min_vs_boundary_only(tool, tmp_path):
    """GT 80x80 square; prediction = the square with a 58x58 hole (ring 11 px wide).
    Mask IoU = (6400 - 3364) / 6400 = 0.474. Prediction boundary = outer ring 924 + ring around the
    hole 64^2 - 58^2 = 732; it contains the GT boundary (924): Boundary IoU = 924 / 1656 = 0.558.
    min -> 0.474 < 0.5: AP 0.  Boundary alone -> matches at 0.50 and 0.55: AP 20."""
    g = box(10, 90, 10, 90)
    p = g.copy()
    p[21:79, 21:79] = 0
    assert boundary_iou(g, p) == pytest.approx(924 / 1656)
    gt, dt = _write(tmp_path, [g], [(p, 0.8)])
    assert tool.evaluate(gt, dt, "boundary", iou_mode="min")["boundary"]["AP"] == pytest.approx(0)
    assert tool.evaluate(gt, dt, "boundary", iou_mode="boundary")["boundary"]["AP"] == (
        pytest.approx(20)
    )


def test_fast_coco_eval_when_present_pycocotools_otherwise(tool, tmp_path, caplog):
    """With detectron2's compiled ops the fast COCOeval_opt is the base class; without them the
    official pycocotools COCOeval is used and a warning says so once."""
    from detectron2.evaluation.fast_eval_api import COCOeval_opt
    from pycocotools.coco import COCO

    from mask2former.evaluation import make_boundary_cocoeval
    from mask2former.evaluation.instance_evaluation import fast_coco_eval_available

    gt, dt = _write(tmp_path, [G], [(SHIFT1, 0.9)])
    coco = COCO(gt)
    assert isinstance(make_boundary_cocoeval(coco, coco, use_fast_impl=True), COCOeval_opt)
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        with caplog.at_level("WARNING"):
            tool.evaluate(gt, dt)
            tool.evaluate(gt, dt)
            assert not fast_coco_eval_available()
        assert len([r for r in caplog.records if "pycocotools" in r.getMessage()]) <= 1
    else:
        assert fast_coco_eval_available()
