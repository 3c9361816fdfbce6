"""HungarianMatcher on hand-built cases (mask2former/modeling/matcher.py)."""

import itertools

import pytest
import torch

from mask2former.modeling.matcher import HungarianMatcher, batch_dice_cost, batch_sigmoid_ce_cost

from ._float64 import bilinear64


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


# ----------------------------------------------------------------------------------------------
# HungarianMatcher where the cost weights decide the match (mask2former/modeling/matcher.py).
#
# Every assignment is compared with a brute-force search over all injections of targets into
# queries, on a cost matrix recomputed in float64 from its definition (Sec. 3.3):
#     cost = w_class * (-p(class)) + w_mask * mean-BCE + w_dice * (1 - (2|p.t| + 1) / (|p| + |t| + 1)).


WEIGHTS = (1.0, 3.0, 9.0)


def _case(seed: int, num_queries: int = 3, num_targets: int = 3, size: int = 6):
    """Soft predictions and targets of different sizes, from a private generator."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_queries, 5, generator=g) * 2  # K = 4 classes + "no object"
    masks = torch.randn(num_queries, size, size, generator=g) * 3
    fill = torch.rand(num_targets, 1, 1, generator=g)
    tgt = (torch.rand(num_targets, size, size, generator=g) < fill).float()
    labels = torch.randint(0, 4, (num_targets,), generator=g)
    return logits, masks, labels, tgt


def _reference_terms(logits, masks, labels, tgt, coords=None):
    """(-p(class), BCE, dice), each (Q, N) float64, on full masks or at `coords` (P, 2)."""
    prob = logits.double().softmax(-1)
    cost_class = -prob[:, labels]
    if coords is None:
        x, t = masks.double().flatten(1), tgt.double().flatten(1)
    else:
        x, t = bilinear64(masks, coords), bilinear64(tgt, coords)
    s = x.sigmoid()
    bce = -(t[None] * s[:, None].log() + (1 - t[None]) * (1 - s[:, None]).log()).mean(-1)
    inter = (s[:, None] * t[None]).sum(-1)
    dice = 1 - (2 * inter + 1) / (s.sum(-1)[:, None] + t.sum(-1)[None] + 1)
    return cost_class, bce, dice


def _brute_force(cost: torch.Tensor) -> tuple[dict[int, int], float]:
    """Optimal query -> target map and its cost, trying every injection (tiny Q, N only)."""
    q, n = cost.shape
    best, best_map = None, None
    if q >= n:  # every target gets a distinct query
        pairings = ([(qs[j], j) for j in range(n)] for qs in itertools.permutations(range(q), n))
    else:  # every query gets a distinct target
        pairings = ([(i, ts[i]) for i in range(q)] for ts in itertools.permutations(range(n), q))
    for pairs in pairings:
        total = sum(float(cost[i, j]) for i, j in pairs)
        if best is None or total < best - 1e-12:
            best, best_map = total, dict(pairs)
    return best_map, best


def _assert_optimal(got: dict[int, int], cost: torch.Tensor) -> None:
    """`got` is a full injective matching whose float64 cost is the brute-force minimum."""
    best_map, best = _brute_force(cost)
    assert len(got) == min(cost.shape) and len(set(got.values())) == len(got)
    total = sum(float(cost[i, j]) for i, j in got.items())
    assert total <= best + 1e-9, (
        f"matched {got} (cost {total:.6f}); optimum {best_map} ({best:.6f})"
    )


def _match(weights, logits, masks, labels, tgt, num_points=0) -> dict[int, int]:
    matcher = HungarianMatcher(*weights, num_points=num_points)
    outputs = {"pred_logits": logits[None], "pred_masks": masks[None]}
    ((pred_idx, tgt_idx),) = matcher(outputs, [{"labels": labels, "masks": tgt}])
    return dict(zip(pred_idx.tolist(), tgt_idx.tolist()))


def test_weight_permutations_change_the_match_and_each_equals_brute_force():
    case = _case(83)
    terms = _reference_terms(*case)
    expected = {}
    for w in itertools.permutations(WEIGHTS):
        cost = w[0] * terms[0] + w[1] * terms[1] + w[2] * terms[2]
        expected[w] = _brute_force(cost)[0]
        assert _match(w, *case) == expected[w], f"weights (class, mask, dice) = {w}"
    # The case is only worth something if swapping any two weights changes the assignment.
    a, b, c = WEIGHTS
    base = expected[(a, b, c)]
    assert base != expected[(b, a, c)], "class <-> mask swap must matter"
    assert base != expected[(a, c, b)], "mask <-> dice swap must matter"
    assert base != expected[(c, b, a)], "class <-> dice swap must matter"


@pytest.mark.parametrize("weights", [(2.0, 5.0, 5.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1, 0, 0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cases_equal_brute_force_with_more_queries_than_targets(weights, seed):
    case = _case(seed, num_queries=5, num_targets=3)
    terms = _reference_terms(*case)
    cost = sum(w * t for w, t in zip(weights, terms))
    _assert_optimal(_match(weights, *case), cost)


def test_more_targets_than_queries_equals_brute_force():
    logits, masks, labels, tgt = _case(7, num_queries=2, num_targets=4)
    terms = _reference_terms(logits, masks, labels, tgt)
    cost = sum(w * t for w, t in zip(WEIGHTS, terms))  # (2, 4): both queries matched
    _assert_optimal(_match(WEIGHTS, logits, masks, labels, tgt), cost)


@pytest.mark.parametrize("seed,num_points", [(83, 24), (3, 24), (3, 1)])
def test_point_sampled_costs_use_one_shared_point_set(seed, num_points):
    """num_points > 0: the same P uniform points for predictions and targets (Sec. 3.3)."""
    case = _case(seed, num_queries=4, num_targets=3, size=8)
    torch.manual_seed(11)
    got = _match(WEIGHTS, *case, num_points=num_points)
    torch.manual_seed(11)
    coords = torch.rand(1, num_points, 2)[0]  # the matcher's only random draw
    terms = _reference_terms(*case, coords=coords)
    cost = sum(w * t for w, t in zip(WEIGHTS, terms))
    _assert_optimal(got, cost)


def test_full_mask_costs_upsample_predictions_to_the_target_size():
    """num_points = 0 with predictions at half the target size: bilinear upsampling first."""
    logits, masks, labels, tgt = _case(5, num_queries=4, num_targets=3, size=8)
    small = torch.nn.functional.avg_pool2d(masks[:, None], 2)[:, 0]  # (Q, 4, 4)
    up = torch.nn.functional.interpolate(
        small[:, None].double(), size=(8, 8), mode="bilinear", align_corners=False
    )[:, 0]
    terms = _reference_terms(logits, up, labels, tgt)
    for weights in itertools.permutations(WEIGHTS):
        cost = sum(w * t for w, t in zip(weights, terms))
        _assert_optimal(_match(weights, logits, small, labels, tgt), cost)


def test_costs_stay_float32_inside_an_autocast_region():
    """A case whose optimum bfloat16 costs get wrong: under autocast the matcher still finds the
    float64 optimum (it switches autocast off for the costs)."""
    case = _case(84, num_queries=3, num_targets=3, size=16)
    cost = sum(w * t for w, t in zip(WEIGHTS, _reference_terms(*case)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _match(WEIGHTS, *case)
    _assert_optimal(got, cost)


def test_default_weights_and_full_mask_costs():
    matcher = HungarianMatcher()
    assert (matcher.cost_class, matcher.cost_mask, matcher.cost_dice) == (1, 1, 1)
    assert matcher.num_points == 0


def test_all_zero_weights_are_rejected():
    with pytest.raises(ValueError) as err:
        HungarianMatcher(0, 0, 0)
    assert str(err.value) == ("HungarianMatcher: all costs are 0; give at least one a weight > 0")
    HungarianMatcher(0, 0, 1)  # one weight is enough


def test_repr_names_every_weight():
    assert HungarianMatcher(2.0, 5.0, 7.0, num_points=99).extra_repr() == (
        "cost_class=2.0, cost_mask=5.0, cost_dice=7.0, num_points=99"
    )
