"""faster-coco-eval against pycocotools' COCOeval on random ground truth and detections (crowd
regions, empty masks, tied scores, several images and classes): identical precision and recall
arrays (up to float64 rounding, ~1e-16) for boxes and masks and two max-detection settings. This is what
lets `InstanceSegEvaluator` use it (mask2former/evaluation/coco_backend.py); the cross-check
tests in test_instance_evaluation.py check the evaluator's own numbers against pycocotools."""

import contextlib
import io
import logging

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mask2former.evaluation import InstanceSegEvaluator
from mask2former.evaluation.coco_backend import choose_backend, evaluate_on_coco

from . import crosscheck_data as X


def _random_masks(rng, n, h=40, w=56):
    out = []
    for _ in range(n):
        m = np.zeros((h, w), dtype=np.uint8)
        r0, c0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        m[r0 : r0 + rng.integers(2, h - r0 + 1), c0 : c0 + rng.integers(2, w - c0 + 1)] = 1
        m[rng.random((h, w)) < 0.03] ^= 1
        out.append(m)
    return out


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    cats = [{"id": i, "name": f"c{i}"} for i in (5, 2, 9)]
    images, anns, results = [], [], []
    for image_id in range(1, 7):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 40, "width": 56})
        for m in _random_masks(rng, int(rng.integers(0, 5))):
            rle = mask_util.encode(np.asfortranarray(m))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice([5, 2, 9])),
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "area": int(m.sum()),
                    "bbox": [float(x) for x in mask_util.toBbox(rle)],
                    "iscrowd": int(rng.random() < 0.15),
                }
            )
        masks = _random_masks(rng, int(rng.integers(0, 12)))
        if image_id == 3:
            masks.append(np.zeros((40, 56), dtype=np.uint8))  # an empty mask
        for m in masks:
            rle = mask_util.encode(np.asfortranarray(m))
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.choice([5, 2, 9])),
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "bbox": [float(x) for x in mask_util.toBbox(rle)],
                    "score": float(np.round(rng.random(), 1)),  # ties
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": cats}
        coco.createIndex()
    return coco, results


@pytest.mark.parametrize("max_dets", [[1, 10, 100], [1, 3, 5]])
@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("seed", range(4))
def test_faster_coco_eval_equals_pycocotools(seed, iou_type, max_dets):
    coco, results = _random_case(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        fast = evaluate_on_coco(
            coco, results, iou_type, backend="faster-coco-eval", max_dets_per_image=max_dets
        )
        rs = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        ref = COCOeval(coco, coco.loadRes(rs if iou_type == "segm" else results), iou_type)
        ref.params.maxDets = max_dets
        ref.evaluate()
        ref.accumulate()
    assert type(fast).__module__.startswith("faster_coco_eval")
    assert list(fast.params.catIds) == list(ref.params.catIds)
    for key in ("precision", "recall", "scores"):  # equal up to float64 rounding (~2e-16)
        np.testing.assert_allclose(fast.eval[key], ref.eval[key], rtol=0, atol=1e-12, err_msg=key)
    # summary numbers as detectron2 reads them (pycocotools; COCOevalMaxDets for maxDets != 100)
    with contextlib.redirect_stdout(io.StringIO()):
        official = evaluate_on_coco(
            coco, results, iou_type, backend="pycocotools", max_dets_per_image=max_dets
        )
    assert type(official).__module__.startswith(("pycocotools", "detectron2"))
    np.testing.assert_allclose(fast.stats[:6], official.stats[:6], rtol=0, atol=1e-12)


def test_instance_evaluator_uses_faster_coco_eval_and_says_so(tmp_path, caplog):
    data = X.write_dataset(str(tmp_path / "data"))
    name = X.fresh_name("_xcheck_backend")
    from mask2former.data.datasets.custom import register_instance_dataset

    register_instance_dataset(name, data["instances_json"], data["images"])
    assert choose_backend() == "faster-coco-eval" and choose_backend(False) == "pycocotools"
    meta = MetadataCatalog.get(name)
    res = {}
    with caplog.at_level(logging.INFO):
        for fast in (True, False):
            ev = InstanceSegEvaluator(name, output_dir=str(tmp_path), use_fast_impl=fast)
            res[fast] = X.run(
                ev, DatasetCatalog.get(name), lambda r: X.instances_output(r["image_id"], meta)
            )
    assert any("faster-coco-eval" in r.getMessage() for r in caplog.records)
    assert any("official pycocotools" in r.getMessage() for r in caplog.records)
    for task in ("segm", "bbox"):
        X.assert_all_close(res[True][task], res[False][task], tol=1e-9)


@pytest.mark.parametrize("max_dets", [[1, 10, 100], [1, 3, 5]])
def test_boundary_summary_with_any_max_dets(max_dets):
    """Boundary AP's summary numbers (`stats`, what the evaluator reports) read the last maxDets,
    whatever it is: pycocotools' own summarize() only looks for 100 (it gave -1, reported as NaN
    or -100, with TEST.DETECTIONS_PER_IMAGE other than 100). The faster-coco-eval run of the same
    data is the reference."""
    coco, results = _random_case(0)
    # the ground-truth masks as predictions too (random masks alone score 0: nothing to compare)
    results = results + [
        {k: a[k] for k in ("image_id", "category_id", "segmentation")} | {"score": 0.05 * (i % 9)}
        for i, a in enumerate(coco.dataset["annotations"])
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        fast = evaluate_on_coco(
            coco, results, "boundary", backend="faster-coco-eval", max_dets_per_image=max_dets
        )
        official = evaluate_on_coco(
            coco, results, "boundary", backend="pycocotools", max_dets_per_image=max_dets
        )
    assert type(fast).__module__.startswith("faster_coco_eval")
    assert official.stats[0] > 0
    np.testing.assert_allclose(official.stats[:12], fast.stats[:12], rtol=0, atol=1e-9)
