"""benchmarks/outputs_check.py: the comparison sees a change in logits and in panoptic pixels."""

import pytest
import torch

from benchmarks import outputs_check


def test_outputs_compare_sees_a_change():
    seg = torch.tensor([[1, 1], [2, 2]], dtype=torch.int32)
    info = [
        {"id": 1, "category_id": 3, "isthing": True},
        {"id": 2, "category_id": 5, "isthing": False},
    ]
    ref = [
        {
            "logits": torch.ones(2, 3),
            "masks": torch.ones(2, 4, 4),
            "out": {"panoptic_seg": (seg, info), "sem_seg": torch.rand(4, 2, 2)},
        }
    ]
    same = outputs_check.compare(ref, ref)
    assert same["logits_rel"] == 0 and same["pan_agree"] == 100.0
    seg2 = seg.clone()
    seg2[0, 0] = 2
    cand = [
        {
            "logits": torch.ones(2, 3) * 1.1,
            "masks": torch.ones(2, 4, 4),
            "out": {"panoptic_seg": (seg2, info), "sem_seg": ref[0]["out"]["sem_seg"]},
        }
    ]
    diff = outputs_check.compare(ref, cand)
    assert diff["logits_rel"] == pytest.approx(0.1) and diff["pan_agree"] == 75.0
