"""Semantic PQ's VOID handling, hand-worked (evaluation/semantic_pq.py; panopticapi's rules).

A predicted and a ground-truth segment of one class match if IoU > 0.5, where the prediction's
pixels on VOID (ignore_label, or a label outside [0, K)) are removed from the union; an
unmatched prediction lying more than half on VOID is not a false positive.
"""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.evaluation import PQStat
from PIL import Image

from mask2former.evaluation.semantic_pq import (
    decode_sem_seg_predictions,
    semantic_pq,
    semantic_pq_stat,
)


def _stat(gt, pred, num_classes=3, ignore=255):
    stat = PQStat().pq_per_cat
    semantic_pq_stat(np.array([gt]), np.array([pred]), num_classes, ignore, stat)
    return stat


def test_semantic_pq_removes_void_from_the_union():
    # Class 0: 4 gt pixels, predicted on them and on 4 VOID pixels: IoU 4 / (8 + 4 - 4 - 4) = 1.
    # (With VOID left in the union it would be 4 / 8 = 0.5, not a match.)
    stat = _stat([0, 0, 0, 0, 255, 255, 255, 255, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    assert (stat[0].tp, stat[0].fp, stat[0].fn) == (1, 0, 0)
    assert stat[0].iou == pytest.approx(1.0)
    assert (stat[1].tp, stat[1].fp, stat[1].fn) == (1, 0, 0)


def test_semantic_pq_unmatched_predictions_on_void_are_not_false_positives():
    # Class 2 predicted on 3 pixels, 2 of them VOID (> half): not an FP.
    # Class 1 predicted on 2 pixels, 1 of them VOID (exactly half): an FP.
    gt = [0, 0, 0, 0, 255, 255, 255, 0]
    pred = [0, 0, 0, 2, 2, 2, 1, 1]
    stat = _stat(gt, pred)
    # class 0: gt 5 px, pred 3 px, inter 3 -> IoU 3/5 > 0.5: TP
    assert (stat[0].tp, stat[0].fp, stat[0].fn) == (1, 0, 0)
    assert stat[0].iou == pytest.approx(3 / 5)
    assert (stat[2].tp, stat[2].fp, stat[2].fn) == (0, 0, 0)
    assert (stat[1].tp, stat[1].fp, stat[1].fn) == (0, 1, 0)


def test_semantic_pq_iou_exactly_half_is_no_match():
    # Class 0: gt 4 px, pred 4 px, 2 shared: IoU 2 / 6, an FN and an FP.
    stat = _stat([0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 0, 0])
    assert (stat[0].tp, stat[0].fp, stat[0].fn) == (0, 1, 1)
    stat = _stat([0, 0, 1, 1], [0, 0, 0, 0])  # class 0: IoU 2 / 4 = 0.5 exactly: no match
    assert (stat[0].tp, stat[0].fp, stat[0].fn) == (0, 1, 1)
    assert (stat[1].tp, stat[1].fp, stat[1].fn) == (0, 0, 1)


def test_semantic_pq_labels_outside_the_classes_are_void():
    # -1 (e.g. "no class") and 7 (>= num_classes) in the ground truth behave like ignore_label.
    stat = _stat([0, 0, -1, 7], [0, 0, 0, 0])
    assert (stat[0].tp, stat[0].fp, stat[0].fn) == (1, 0, 0)
    assert stat[0].iou == pytest.approx(1.0)


def test_semantic_pq_label_equal_to_num_classes_is_void():
    # K = 3: label 3 is outside [0, 3), VOID like ignore_label. Class 0: IoU 2 / (4 + 2 - 2 - 2).
    stat = _stat([0, 0, 3, 3], [0, 0, 0, 0])
    assert (stat[0].tp, stat[0].fp, stat[0].fn) == (1, 0, 0)
    assert stat[0].iou == pytest.approx(1.0)


def test_semantic_pq_prediction_only_on_void():
    # Class 1 predicted on VOID pixels only, absent from the ground truth: nothing counted.
    stat = _stat([0, 0, 255, 255], [0, 0, 1, 1])
    assert (stat[1].tp, stat[1].fp, stat[1].fn) == (0, 0, 0)
    assert (stat[0].tp, stat[0].fp, stat[0].fn) == (1, 0, 0)


def test_semantic_pq_accumulates_over_images():
    # Two images into one stat: class 0 a TP in each (IoU 1, then 3 / 4), class 1 an FN and an FP
    # in each (IoU 1 / 3 both times).
    stat = PQStat().pq_per_cat
    for gt, pred in (
        ([0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 1, 2]),
        ([0, 0, 0, 1, 1, 2], [0, 0, 0, 0, 2, 1]),
    ):
        semantic_pq_stat(np.array([gt]), np.array([pred]), 3, 255, stat)
    assert (stat[0].tp, stat[0].fp, stat[0].fn) == (2, 0, 0)
    assert stat[0].iou == pytest.approx(1.0 + 3 / 4)
    assert (stat[1].tp, stat[1].fp, stat[1].fn) == (0, 2, 2)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def _entries(file_name: str, labels: np.ndarray, dataset_ids: dict) -> list[dict]:
    """sem_seg_predictions.json entries of one (H, W) contiguous label map (-1: no entry)."""
    return [
        {"file_name": file_name, "category_id": dataset_ids[c], "segmentation": _rle(labels == c)}
        for c in np.unique(labels)
        if c >= 0
    ]


def test_decode_sem_seg_predictions_maps_ids_and_leaves_uncovered_pixels_at_minus_one():
    d2c = {10: 0, 20: 1, 30: 2}
    x = np.array([[1, 1, -1]])  # one entry only; pixel 2 is in no entry
    y = np.array([[0, 2], [2, 0]])
    preds = _entries("x.jpg", x, {1: 20}) + _entries("y.jpg", y, {0: 10, 2: 30})
    out = decode_sem_seg_predictions(preds, d2c)
    assert set(out) == {"x.jpg", "y.jpg"}
    assert out["x.jpg"].dtype == np.int64 and out["x.jpg"].tolist() == x.tolist()
    assert out["y.jpg"].tolist() == y.tolist()
    # Without a mapping the category ids are the labels.
    raw = decode_sem_seg_predictions(_entries("y.jpg", y, {0: 5, 2: 7}), None)
    assert raw["y.jpg"].tolist() == [[5, 7], [7, 5]]


SPQ_GT = [np.array([[0, 0, 0, 1, 1, 1, 255, 2]]), np.array([[1, 1, 1, 1, 255, 255, 255, 255]])]
SPQ_PRED = [np.array([[0, 0, 0, 0, 1, 1, 2, 2]]), np.array([[1, 1, 2, 2, 2, 2, 1, 1]])]


@pytest.fixture
def spq_dataset(tmp_path):
    """Classes a, b, c (dataset ids 10, 20, 30), two 1 x 8 images with VOID (255)."""
    name = "_test_semantic_pq_end_to_end"
    records = []
    for i, gt in enumerate(SPQ_GT):
        path = str(tmp_path / f"gt{i}.png")
        Image.fromarray(gt.astype(np.uint8)).save(path)
        records.append({"file_name": f"img{i}.jpg", "sem_seg_file_name": path})
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=["a", "b", "c"],
        ignore_label=255,
        stuff_dataset_id_to_contiguous_id={10: 0, 20: 1, 30: 2},
    )
    return name


def test_semantic_pq_end_to_end_hand_worked(spq_dataset, tmp_path):
    """Image 0: a IoU 3/4, b 2/3, c 1/(2 + 1 - 1 - 1) = 1 (its VOID pixel leaves the union): TPs.
    Image 1: b IoU 2 / (4 + 4 - 2 - 2) = 0.5, not a match (FN + FP: exactly half on VOID); c
    predicted only, half on VOID (FP). Its VOID pixels are not scored. PQ per class: a 3/4; b (2/3)/2; c 1/1.5."""
    ids = {0: 10, 1: 20, 2: 30}
    preds = [e for i, p in enumerate(SPQ_PRED) for e in _entries(f"img{i}.jpg", p, ids)]
    path = tmp_path / "sem_seg_predictions.json"
    path.write_text(json.dumps(preds))
    res = semantic_pq(spq_dataset, str(path))  # the default mIoU convention: v0.6
    pq, sem = res["panoptic_seg"], res["sem_seg"]
    expect = {
        "PQ": (3 / 4 + 1 / 3 + 2 / 3) / 3,
        "SQ": (3 / 4 + 2 / 3 + 1) / 3,
        "RQ": (1 + 1 / 2 + 2 / 3) / 3,
    }
    for key, value in expect.items():
        assert pq[key] == pytest.approx(100 * value), key
        assert pq[f"{key}_st"] == pytest.approx(100 * value), key  # every class is stuff
    assert pq["PQ-a"] == pytest.approx(75) and pq["PQ-b"] == pytest.approx(100 / 3)
    assert pq["PQ-c"] == pytest.approx(100 * 2 / 3)
    # mIoU from the same predictions, over valid pixels of both images: conf[pred, gt] sums
    # a: tp 3 / (gt 3 + pred 4 - 3); b: 4 / (7 + 4 - 4); c: 1 / (1 + 3 - 1).
    assert sem["mIoU"] == pytest.approx(100 * (3 / 4 + 4 / 7 + 1 / 3) / 3)
    assert list(res) == ["panoptic_seg", "sem_seg"]
    # The predictions may also be given as the loaded list.
    assert semantic_pq(spq_dataset, preds)["panoptic_seg"]["PQ"] == pytest.approx(pq["PQ"])


def test_semantic_pq_errors(spq_dataset):
    ids = {0: 10, 1: 20, 2: 30}
    stray = [e for i in range(4) for e in _entries(f"stray{i}.jpg", SPQ_PRED[0], ids)]
    with pytest.raises(ValueError, match=r"^predictions for images not in '_test_semantic_pq_"):
        semantic_pq(spq_dataset, stray)
    with pytest.raises(ValueError) as err:
        semantic_pq(spq_dataset, stray)
    assert "stray2.jpg" in str(err.value) and "stray3.jpg" not in str(err.value)  # first 3
    small = _entries("img0.jpg", SPQ_PRED[0][:, :7], ids)
    with pytest.raises(
        ValueError, match=r"^img0.jpg: prediction \(1, 7\) vs ground truth \(1, 8\)"
    ):
        semantic_pq(spq_dataset, small)
