"""mask2former/evaluation/agreement.py: per-image agreement of two results, on hand-made ones."""

import torch
from detectron2.structures import Instances

from mask2former.evaluation.agreement import (
    headline_metrics,
    instance_agreement,
    panoptic_agreement,
    panoptic_categories,
    pooled_iou,
    semantic_agreement,
)


def instances(*dets, size=(4, 6)) -> dict:
    """{"instances": ...} from (score, class, (y0, y1, x0, x1)) triples; boxes become masks."""
    masks = torch.zeros(len(dets), *size)
    for k, (_, _, (y0, y1, x0, x1)) in enumerate(dets):
        masks[k, y0:y1, x0:x1] = 1
    out = Instances(size)
    out.scores = torch.tensor([d[0] for d in dets], dtype=torch.float32)
    out.pred_classes = torch.tensor([d[1] for d in dets], dtype=torch.int64)
    out.pred_masks = masks
    return {"instances": out}


A = (0, 2, 0, 2)  # a 2 x 2 square, top left
B = (2, 4, 3, 6)  # a 2 x 3 box, bottom right
A_WIDE = (0, 2, 0, 3)  # A and one more column: IoU with A = 4 / 6


def test_panoptic_categories_hand_worked():
    seg = torch.tensor([[0, 1], [2, 2]], dtype=torch.int32)
    info = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 5}]
    assert panoptic_categories((seg, info)).tolist() == [[0, 1], [6, 6]]
    assert panoptic_categories((torch.zeros(2, 3, dtype=torch.int32), [])).tolist() == [[0] * 3] * 2


def test_semantic_and_panoptic_shares():
    a = torch.zeros(3, 2, 2)
    a[1] = 1.0  # class 1 everywhere
    b = a.clone()
    b[2, 0, 1] = 5.0  # one pixel of four becomes class 2
    assert semantic_agreement({"sem_seg": a}, {"sem_seg": b}) == 0.75
    info = [{"id": 1, "category_id": 3}]
    pa = {"panoptic_seg": (torch.tensor([[1, 1], [0, 1]]), info)}
    pb = {"panoptic_seg": (torch.tensor([[1, 0], [0, 0]]), info)}  # two pixels become void
    assert panoptic_agreement(pa, pb) == 0.5 and panoptic_agreement(pa, pa) == 1.0


def test_identical_instances_agree():
    a = instances((0.9, 1, A), (0.5, 2, B), (0.01, 0, A))
    out = instance_agreement(a, a)
    assert out.classes_equal and out.strict_classes_equal and out.unmatched == 0
    assert out.ious == [1.0, 1.0]  # the two with score >= 0.1


def test_low_score_reordering_is_not_a_difference():
    """Two detections under min_score swap rank: the exact order differs, the check does not."""
    a = instances((0.9, 1, A), (0.004, 2, B), (0.003, 0, A))
    b = instances((0.9, 1, A), (0.003, 2, B), (0.004, 0, A))
    out = instance_agreement(a, b)
    assert out.classes_equal and not out.strict_classes_equal and out.ious == [1.0]


def test_a_tie_among_confident_detections_is_matched_by_class():
    a = instances((0.97, 1, A), (0.96, 2, B))
    b = instances((0.96, 1, A), (0.97, 2, B))  # the same two, ranks swapped
    out = instance_agreement(a, b)
    assert out.classes_equal and not out.strict_classes_equal and out.ious == [1.0, 1.0]


def test_a_changed_class_is_a_difference_both_ways():
    a = instances((0.9, 1, A), (0.8, 2, B))
    b = instances((0.9, 1, A), (0.8, 3, B))
    out = instance_agreement(a, b)
    assert not out.classes_equal and out.unmatched == 2 and out.ious == [1.0, 0.0]


def test_an_extra_confident_detection_is_a_difference():
    a = instances((0.9, 1, A))
    b = instances((0.9, 1, A), (0.5, 2, B))
    out = instance_agreement(a, b)
    assert not out.classes_equal and out.unmatched == 1 and out.ious == [1.0]
    # ... unless it is below min_score
    assert instance_agreement(a, instances((0.9, 1, A), (0.05, 2, B))).classes_equal


def test_partner_found_below_min_score_and_iou_hand_worked():
    """A detection at 0.12 in one run and 0.09 in the other is the same detection; its mask grew
    by one column: IoU 4 / 6."""
    a = instances((0.9, 2, B), (0.12, 1, A))
    b = instances((0.9, 2, B), (0.09, 1, A_WIDE))
    out = instance_agreement(a, b)
    assert out.classes_equal and out.unmatched == 0
    assert out.overlaps == [(6, 6), (4, 6)] and out.ious == [1.0, 4 / 6]


def test_partners_are_one_to_one_and_only_within_top_k():
    """Both reference detections overlap the first of b most; the second takes the other one."""
    a = instances((0.9, 1, A), (0.8, 1, A))
    b = instances((0.9, 1, A), (0.8, 1, A_WIDE))
    out = instance_agreement(a, b)
    assert out.classes_equal and out.ious[0] == 1.0 and abs(out.ious[1] - 4 / 6) < 1e-12
    # With top_k 1 the second of each run is not compared at all.
    assert instance_agreement(a, b, top_k=1).ious == [1.0]
    # A partner ranked beyond b's top k does not count.
    c = instances((0.9, 3, B), (0.5, 1, A))
    out = instance_agreement(instances((0.5, 1, A)), c, top_k=1)
    assert not out.classes_equal and out.unmatched == 2


def test_no_detections():
    empty = instances()
    out = instance_agreement(empty, empty)
    assert out.classes_equal and out.strict_classes_equal and out.ious == [] and out.unmatched == 0
    out = instance_agreement(instances((0.9, 1, A)), empty)
    assert not out.classes_equal and out.overlaps == [(0, 4)] and not out.strict_classes_equal


def test_pooled_iou_weighs_pixels():
    assert pooled_iou([(97, 100), (7, 9)]) == 104 / 109
    assert pooled_iou([]) == 1.0 and pooled_iou([(0, 0)]) == 1.0


def test_headline_metrics_of_the_tasks_present():
    results = {"panoptic_seg": {"PQ": 50.0, "SQ": 80.0, "RQ": 60.0, "PQ_th": 1.0},
               "sem_seg": {"mIoU": 40.0, "pACC": 90.0}}  # fmt: skip
    assert headline_metrics(results) == {
        "panoptic_seg PQ": 50.0,
        "panoptic_seg SQ": 80.0,
        "panoptic_seg RQ": 60.0,
        "sem_seg mIoU": 40.0,
    }
    assert headline_metrics({}) == {}
