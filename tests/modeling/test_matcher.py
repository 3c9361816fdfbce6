"""HungarianMatcher on hand-built cases (mask2former/modeling/matcher.py)."""

import pytest
import torch

from mask2former.modeling.matcher import HungarianMatcher, batch_dice_cost, batch_sigmoid_ce_cost


def _blobs(n: int, size: int = 16) -> torch.Tensor:
    """n disjoint rectangular masks (n, size, size)."""
    masks = torch.zeros(n, size, size)
    step = size // n
    for i in range(n):
        masks[i, i * step : (i + 1) * step, 2 : size - 2] = 1
    return masks


def _perfect_outputs(labels, masks, num_queries, num_classes):
    """Queries 0..N-1 predict the targets exactly; the rest predict "no object" and empty masks."""
    n = len(labels)
    logits = torch.full((1, num_queries, num_classes + 1), -10.0)
    logits[0, torch.arange(n), labels] = 10.0
    logits[0, n:, num_classes] = 10.0
    mask_logits = torch.full((1, num_queries) + masks.shape[-2:], -20.0)
    mask_logits[0, :n] = masks * 40 - 20  # +-20 logits
    return {"pred_logits": logits, "pred_masks": mask_logits}


@pytest.mark.parametrize("num_points", [0, 256])
def test_perfect_predictions_give_identity_and_near_zero_mask_cost(num_points):
    labels = torch.tensor([2, 0, 1])
    masks = _blobs(3)
    outputs = _perfect_outputs(labels, masks, num_queries=5, num_classes=3)
    matcher = HungarianMatcher(cost_class=2, cost_mask=5, cost_dice=5, num_points=num_points)
    ((pred_idx, tgt_idx),) = matcher(outputs, [{"labels": labels, "masks": masks}])
    assert pred_idx.dtype == torch.int64 and tgt_idx.dtype == torch.int64
    order = torch.argsort(tgt_idx)
    assert pred_idx[order].tolist() == [0, 1, 2]
    assert tgt_idx[order].tolist() == [0, 1, 2]

    pred = outputs["pred_masks"][0, :3].flatten(1)
    tgt = masks.flatten(1)
    assert torch.diagonal(batch_sigmoid_ce_cost(pred, tgt)).max() < 1e-6
    assert torch.diagonal(batch_dice_cost(pred, tgt)).max() < 1e-6
    # Off-diagonal (wrong mask) costs are large.
    assert batch_dice_cost(pred, tgt)[0, 1] > 0.9


@pytest.mark.parametrize("num_points", [0, 512])
def test_permuted_predictions_give_the_permutation(num_points):
    torch.manual_seed(1)
    labels = torch.tensor([0, 1, 2, 3])
    masks = _blobs(4)
    perm = torch.tensor([2, 0, 3, 1])  # query q predicts target perm[q]
    outputs = _perfect_outputs(labels[perm], masks[perm], num_queries=4, num_classes=4)
    matcher = HungarianMatcher(cost_class=1, cost_mask=1, cost_dice=1, num_points=num_points)
    ((pred_idx, tgt_idx),) = matcher(outputs, [{"labels": labels, "masks": masks}])
    assert dict(zip(pred_idx.tolist(), tgt_idx.tolist())) == {q: int(perm[q]) for q in range(4)}


def test_class_cost_alone_decides_when_masks_are_identical():
    labels = torch.tensor([1, 0])
    masks = torch.ones(2, 8, 8)
    logits = torch.tensor([[[5.0, -5.0, 0.0], [-5.0, 5.0, 0.0]]])  # query 0 -> class 0
    outputs = {"pred_logits": logits, "pred_masks": torch.zeros(1, 2, 8, 8)}
    matcher = HungarianMatcher(num_points=64)
    ((pred_idx, tgt_idx),) = matcher(outputs, [{"labels": labels, "masks": masks}])
    assert dict(zip(pred_idx.tolist(), tgt_idx.tolist())) == {0: 1, 1: 0}


def test_images_without_targets_give_empty_indices():
    outputs = {"pred_logits": torch.randn(2, 3, 4), "pred_masks": torch.randn(2, 3, 8, 8)}
    targets = [
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16)},
        {"labels": torch.tensor([1]), "masks": torch.ones(1, 16, 16)},
    ]
    indices = HungarianMatcher(num_points=32)(outputs, targets)
    assert [len(i) for i, _ in indices] == [0, 1]
    assert indices[0][0].dtype == torch.int64 and indices[0][1].dtype == torch.int64


def test_more_targets_than_queries_matches_every_query():
    outputs = {"pred_logits": torch.randn(1, 2, 4), "pred_masks": torch.randn(1, 2, 8, 8)}
    targets = [{"labels": torch.tensor([0, 1, 2]), "masks": _blobs(3, 8)}]
    ((pred_idx, tgt_idx),) = HungarianMatcher(num_points=16)(outputs, targets)
    assert sorted(pred_idx.tolist()) == [0, 1] and len(set(tgt_idx.tolist())) == 2


def test_costs_are_fp32_under_autocast_and_no_grad():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    masks = torch.randn(1, 3, 8, 8, requires_grad=True)
    targets = [{"labels": torch.tensor([0, 2]), "masks": _blobs(2, 16).bool()}]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = HungarianMatcher(num_points=32)(
            {"pred_logits": logits.bfloat16(), "pred_masks": masks.bfloat16()}, targets
        )
    assert len(out[0][0]) == 2


def test_nan_predictions_raise_a_clear_error():
    outputs = {
        "pred_logits": torch.full((1, 2, 3), float("nan")),
        "pred_masks": torch.zeros(1, 2, 4, 4),
    }
    targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 4, 4)}]
    with pytest.raises(ValueError, match="not finite"):
        HungarianMatcher(num_points=8)(outputs, targets)


def test_batch_costs_match_a_float64_reference():
    torch.manual_seed(2)
    x = torch.randn(5, 40, dtype=torch.float64) * 4
    t = (torch.rand(3, 40, dtype=torch.float64) > 0.5).double()
    p = x.sigmoid()
    bce = -(t[None] * p[:, None].log() + (1 - t[None]) * (1 - p[:, None]).log()).mean(-1)
    dice = 1 - (2 * (p[:, None] * t[None]).sum(-1) + 1) / (p.sum(-1)[:, None] + t.sum(-1)[None] + 1)
    assert torch.allclose(batch_sigmoid_ce_cost(x.float(), t.float()).double(), bce, atol=1e-5)
    assert torch.allclose(batch_dice_cost(x.float(), t.float()).double(), dice, atol=1e-5)
