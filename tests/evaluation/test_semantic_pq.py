"""Semantic PQ's VOID handling, hand-worked (evaluation/semantic_pq.py; panopticapi's rules).

A predicted and a ground-truth segment of one class match if IoU > 0.5, where the prediction's
pixels on VOID (ignore_label, or a label outside [0, K)) are removed from the union; an
unmatched prediction lying more than half on VOID is not a false positive.
"""

import numpy as np
import pytest
from panopticapi.evaluation import PQStat

from mask2former.evaluation.semantic_pq import semantic_pq_stat


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
