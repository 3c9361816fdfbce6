"""SetCriterion (mask2former/modeling/criterion.py), and the point sampling it takes from
detectron2's PointRend (Sec. 3.3)."""

import math

import pytest
import torch
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from torch import nn

from mask2former.modeling import criterion as criterion_module
from mask2former.modeling.criterion import (
    SetCriterion,
    calculate_uncertainty,
    dice_loss,
    sigmoid_ce_loss,
)
from mask2former.modeling.matcher import HungarianMatcher

from ._float64 import bilinear64

NUM_CLASSES = 3


def make_criterion(point_sampled=True, num_points=64, eos_coef=0.1, matcher=None):
    return SetCriterion(
        num_classes=NUM_CLASSES,
        matcher=matcher or HungarianMatcher(2, 5, 5, num_points=num_points),
        weight_dict={"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
        eos_coef=eos_coef,
        losses=["labels", "masks"],
        num_points=num_points,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        point_sampled=point_sampled,
    )


class FixedMatcher(nn.Module):
    def __init__(self, indices):
        super().__init__()
        self.indices = indices

    def forward(self, outputs, targets):
        return self.indices


# ---- a hand-worked case, expected values in float64 --------------------------------------------
LOGITS = [[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, -0.3, 1.5]]  # (Q=2, K+1=4)


MASK_LOGITS = [[[1.0, -2.0], [0.5, 3.0]], [[0.0, 0.0], [-1.0, 1.0]]]  # (Q=2, 2, 2)


TARGET_MASK = [[1.0, 0.0], [0.0, 1.0]]  # one target, class 0, matched to query 0


def expected_losses():
    # Cross-entropy: query 0 -> class 0 (weight 1), query 1 -> no object (weight 0.1).
    def nll(row, c):
        return -(row[c] - math.log(sum(math.exp(v) for v in row)))

    ce = (1.0 * nll(LOGITS[0], 0) + 0.1 * nll(LOGITS[1], 3)) / (1.0 + 0.1)
    x = [v for r in MASK_LOGITS[0] for v in r]
    t = [v for r in TARGET_MASK for v in r]
    sig = [1 / (1 + math.exp(-v)) for v in x]
    bce = sum(-(ti * math.log(s) + (1 - ti) * math.log(1 - s)) for s, ti in zip(sig, t)) / 4
    dice = 1 - (2 * sum(s * ti for s, ti in zip(sig, t)) + 1) / (sum(sig) + sum(t) + 1)
    return ce, bce, dice  # num_masks = 1


def hand_case():
    outputs = {
        "pred_logits": torch.tensor([LOGITS]),
        "pred_masks": torch.tensor([MASK_LOGITS]),
    }
    targets = [{"labels": torch.tensor([0]), "masks": torch.tensor([TARGET_MASK]).bool()}]
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    return outputs, targets, indices


def test_hand_worked_values_full_mask():
    outputs, targets, indices = hand_case()
    crit = make_criterion(point_sampled=False, matcher=FixedMatcher(indices))
    losses = crit(outputs, targets)
    ce, bce, dice = expected_losses()
    assert losses["loss_ce"].item() == pytest.approx(ce, rel=1e-5)
    assert losses["loss_mask"].item() == pytest.approx(bce, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice, rel=1e-5)


def test_hand_worked_values_point_sampled(monkeypatch):
    """With the sampled points fixed at the 4 pixel centres, points == full mask."""
    outputs, targets, indices = hand_case()
    centres = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]])

    def fixed_points(mask_logits, *args, **kwargs):
        return centres.expand(mask_logits.shape[0], -1, -1)

    monkeypatch.setattr(
        criterion_module, "get_uncertain_point_coords_with_randomness", fixed_points
    )
    crit = make_criterion(point_sampled=True, num_points=4, matcher=FixedMatcher(indices))
    losses = crit(outputs, targets)
    _, bce, dice = expected_losses()
    assert losses["loss_mask"].item() == pytest.approx(bce, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice, rel=1e-5)


def test_empty_weight_buffer():
    crit = make_criterion(eos_coef=0.1)
    assert crit.empty_weight.tolist() == pytest.approx([1, 1, 1, 0.1])
    assert "empty_weight" in crit.state_dict()


@pytest.mark.parametrize("point_sampled", [True, False])
def test_empty_targets_give_finite_losses_and_gradients(point_sampled):
    pred_logits = torch.randn(2, 5, NUM_CLASSES + 1, requires_grad=True)
    pred_masks = torch.randn(2, 5, 8, 8, requires_grad=True)
    outputs = {
        "pred_logits": pred_logits,
        "pred_masks": pred_masks,
        "aux_outputs": [{"pred_logits": pred_logits * 1, "pred_masks": pred_masks * 1}],
    }
    targets = [
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 32, 32)}
        for _ in range(2)
    ]
    losses = make_criterion(point_sampled=point_sampled)(outputs, targets)
    assert set(losses) == {
        "loss_ce",
        "loss_mask",
        "loss_dice",
        "loss_ce_0",
        "loss_mask_0",
        "loss_dice_0",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    sum(losses.values()).backward()
    assert pred_masks.grad is not None and pred_logits.grad is not None


def test_mixed_empty_and_nonempty_images():
    outputs = {
        "pred_logits": torch.randn(2, 4, NUM_CLASSES + 1),
        "pred_masks": torch.randn(2, 4, 8, 8),
    }
    targets = [
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 32, 32)},
        {"labels": torch.tensor([1, 2]), "masks": torch.rand(2, 32, 32) > 0.5},
    ]
    losses = make_criterion()(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_mask"] > 0


class ToyModel(nn.Module):
    """Tiny stand-in for MaskFormer's head: a conv trunk, queries, class and mask heads."""

    def __init__(self, num_queries=4, dim=8, num_layers=3):
        super().__init__()
        self.trunk = nn.Conv2d(3, dim, 3, stride=4, padding=1)
        self.query = nn.Embedding(num_queries, dim)
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers - 1))
        self.cls = nn.Linear(dim, NUM_CLASSES + 1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        feats = self.trunk(x)  # (B, C, h, w)
        q = self.query.weight[None].expand(x.shape[0], -1, -1)
        preds = []
        for i in range(len(self.layers) + 1):
            if i > 0:
                q = q + torch.relu(self.layers[i - 1](q))
            qn = self.norm(q)
            preds.append(
                {
                    "pred_logits": self.cls(qn),
                    "pred_masks": torch.einsum("bqc,bchw->bqhw", qn, feats),
                }
            )
        return {**preds[-1], "aux_outputs": preds[:-1]}


@pytest.mark.parametrize("point_sampled", [True, False])
def test_every_parameter_gets_a_gradient(point_sampled):
    model = ToyModel()
    x = torch.randn(2, 3, 32, 32)
    targets = [
        {"labels": torch.tensor([0, 2]), "masks": torch.rand(2, 32, 32) > 0.5},
        {"labels": torch.tensor([1]), "masks": torch.rand(1, 32, 32) > 0.5},
    ]
    crit = make_criterion(point_sampled=point_sampled, num_points=100)
    losses = crit(model(x), targets)
    assert len(losses) == 9  # 3 losses x (final + 2 aux)
    total = sum(
        crit.weight_dict.get(k.rsplit("_", 1)[0] if k[-1].isdigit() else k, 1) * v
        for k, v in losses.items()
    )
    assert torch.isfinite(total)
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_point_and_full_mask_losses_agree_on_smooth_masks():
    """Uniform point sampling estimates the full-mask loss (importance ratio 0)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    pred = (2 - 4 * (xx**2 + yy**2))[None, None]  # (1, 1, 64, 64) logits of a disc
    target = (xx**2 + yy**2 < 0.6)[None].float()
    outputs = {"pred_logits": torch.zeros(1, 1, NUM_CLASSES + 1), "pred_masks": pred}
    targets = [{"labels": torch.tensor([0]), "masks": target}]
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    full = make_criterion(point_sampled=False, matcher=FixedMatcher(indices))(outputs, targets)
    crit = make_criterion(point_sampled=True, num_points=20000, matcher=FixedMatcher(indices))
    crit.importance_sample_ratio = 0.0
    pts = crit(outputs, targets)
    assert pts["loss_mask"].item() == pytest.approx(full["loss_mask"].item(), rel=0.05)
    assert pts["loss_dice"].item() == pytest.approx(full["loss_dice"].item(), rel=0.05)


def test_num_masks_is_clamped_to_one():
    crit = make_criterion()
    empty = [{"labels": torch.zeros(0, dtype=torch.int64)}]
    assert crit.num_masks_across_workers(empty, torch.device("cpu")) == 1.0
    three = [{"labels": torch.tensor([0, 1])}, {"labels": torch.tensor([2])}]
    assert crit.num_masks_across_workers(three, torch.device("cpu")) == 3.0


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="unknown losses"):
        SetCriterion(3, HungarianMatcher(), {}, 0.1, ["boxes"], 10, 3.0, 0.75)
    with pytest.raises(ValueError, match="num_points > 0"):
        SetCriterion(3, HungarianMatcher(), {}, 0.1, ["masks"], 0, 3.0, 0.75)
    with pytest.raises(ValueError, match="oversample_ratio must be >= 1"):
        SetCriterion(3, HungarianMatcher(), {}, 0.1, ["masks"], 10, 0.5, 0.75)
    with pytest.raises(ValueError, match=r"importance_sample_ratio must be in \[0, 1\]"):
        SetCriterion(3, HungarianMatcher(), {}, 0.1, ["masks"], 10, 3.0, 1.5)


# ---- point sampling (detectron2.projects.point_rend.point_features) -------------------------
def _sample(masks, coords):
    """(R, H, W) masks at (R, P, 2) points in [0, 1] -> (R, P), as the criterion samples."""
    return point_sample(masks[:, None], coords, align_corners=False).squeeze(1)


def test_point_sample_reads_pixel_centres():
    masks = torch.arange(6.0).reshape(1, 2, 3)
    coords = torch.tensor([[[0.5 / 3, 0.25], [2.5 / 3, 0.75]]])  # (x, y)
    assert _sample(masks, coords)[0].tolist() == pytest.approx([0.0, 5.0], abs=1e-6)


def test_importance_sampling_picks_the_most_uncertain_points():
    # Logit map with a band of uncertainty (logit ~0) in the middle and confident elsewhere.
    logits = torch.full((1, 1, 32, 32), 8.0)
    logits[..., 12:20] = torch.linspace(-0.5, 0.5, 8)
    p, k = 50, 3.0
    torch.manual_seed(3)
    coords = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, p, k, 1.0)
    assert coords.shape == (1, p, 2)

    torch.manual_seed(3)
    candidates = torch.rand(1, int(p * k), 2)
    uncertainty = -point_sample(logits, candidates, align_corners=False).abs()[0, 0]
    best = candidates[0, torch.topk(uncertainty, p).indices]
    assert {tuple(c) for c in coords[0].tolist()} == {tuple(c) for c in best.tolist()}
    # and they lie in (or next to) the uncertain band, while uniform points mostly do not.
    assert (point_sample(logits, coords, align_corners=False).abs() < 8).all()


def test_importance_ratio_mixes_uniform_points():
    logits = torch.randn(4, 1, 8, 8)
    coords = get_uncertain_point_coords_with_randomness(
        logits, calculate_uncertainty, 40, 3.0, 0.75
    )
    assert coords.shape == (4, 40, 2)
    assert coords.min() >= 0 and coords.max() <= 1


# ----------------------------------------------------------------------------------------------
# SetCriterion normalisation with several masks and num_masks != 1 (modeling/criterion.py).
#
# References in float64 from the definitions (Sec. 3.3): per matched pair, BCE averaged over its
# P points and dice with +1 smoothing; both summed over the M pairs and divided by num_masks, the
# number of target masks averaged over workers (at least 1).


def _bce64(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-mask BCE averaged over points, (M, P) -> (M,) float64."""
    x, t = x.double(), t.double()
    s = x.sigmoid()
    return (-(t * s.log() + (1 - t) * (1 - s).log())).mean(1)


def _dice64(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-mask smoothed dice loss, (M, P) -> (M,) float64."""
    s, t = x.double().sigmoid(), t.double()
    return 1 - (2 * (s * t).sum(1) + 1) / (s.sum(1) + t.sum(1) + 1)


@pytest.mark.parametrize("num_masks", [1.0, 2.5, 7.0])
def test_loss_functions_sum_per_mask_means_and_divide_by_num_masks(num_masks):
    torch.manual_seed(0)
    x = torch.randn(4, 13) * 3  # M = 4 masks of P = 13 points
    t = (torch.rand(4, 13) < torch.tensor([[0.1], [0.5], [0.9], [0.3]])).float()
    t[1, 5] = 0.5  # soft targets (bilinearly sampled labels) are legal too
    bce = sigmoid_ce_loss(x, t, num_masks)
    dice = dice_loss(x, t, num_masks)
    assert bce.item() == pytest.approx(_bce64(x, t).sum().item() / num_masks, rel=1e-5)
    assert dice.item() == pytest.approx(_dice64(x, t).sum().item() / num_masks, rel=1e-5)


def test_masks_with_different_point_counts_are_not_pooled():
    """A plain mean over every point would weight masks equally only by accident: check that
    one confident-wrong mask among easy ones counts as 1/num_masks of its own BCE."""
    x = torch.tensor([[-8.0] * 6, [8.0] * 6])  # mask 0 confidently wrong, mask 1 right
    t = torch.ones(2, 6)
    per_mask = _bce64(x, t)
    assert sigmoid_ce_loss(x, t, 4.0).item() == pytest.approx(per_mask.sum().item() / 4, rel=1e-5)


class CountingMatcher(nn.Module):
    """Returns the given (pred_idx, tgt_idx) per image; records how often it was called."""

    def __init__(self, indices):
        super().__init__()
        self.indices = indices
        self.calls = 0

    def forward(self, outputs, targets):
        self.calls += 1
        return self.indices


def _make(point_sampled: bool, indices, num_points: int = 5) -> SetCriterion:
    return SetCriterion(
        num_classes=NUM_CLASSES,
        matcher=CountingMatcher(indices),
        weight_dict={"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
        eos_coef=0.2,
        losses=["labels", "masks"],
        num_points=num_points,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        point_sampled=point_sampled,
    )


def _batch():
    """Two images, 3 and 2 targets of different sizes, 8 x 6 and 5 x 4 (the second is padded to
    8 x 6: the padded height and width differ); 4 queries each."""
    g = torch.Generator().manual_seed(3)
    pred_logits = torch.randn(2, 4, NUM_CLASSES + 1, generator=g)
    pred_masks = torch.randn(2, 4, 4, 3, generator=g) * 2  # (B, Q, h, w) at 1/2 here
    t0 = (torch.rand(3, 8, 6, generator=g) > 0.5).float()
    t1 = (torch.rand(2, 5, 4, generator=g) > 0.3).float()  # smaller: zero-padded to 8 x 6
    targets = [
        {"labels": torch.tensor([2, 0, 1]), "masks": t0},
        {"labels": torch.tensor([1, 1]), "masks": t1},
    ]
    # Out-of-order indices: query q of image b supervised by target j.
    indices = [
        (torch.tensor([3, 0, 2]), torch.tensor([1, 2, 0])),
        (torch.tensor([1, 2]), torch.tensor([1, 0])),
    ]
    return {"pred_logits": pred_logits, "pred_masks": pred_masks}, targets, indices


def _pairs(outputs, targets, indices):
    """The M matched (prediction logits (h, w), padded target (8, 6)) pairs, image by image."""
    pairs = []
    for b, (qs, js) in enumerate(indices):
        for q, j in zip(qs.tolist(), js.tolist()):
            tgt = torch.zeros(8, 6)
            m = targets[b]["masks"][j]
            tgt[: m.shape[0], : m.shape[1]] = m
            pairs.append((outputs["pred_masks"][b, q], tgt))
    return pairs


def _ce64(outputs, targets, indices, eos_coef=0.2) -> float:
    """Class-weighted cross-entropy over all B*Q queries; unmatched -> "no object"."""
    logits = outputs["pred_logits"].double()
    num, den = 0.0, 0.0
    for b in range(logits.shape[0]):
        target = [NUM_CLASSES] * logits.shape[1]
        for q, j in zip(*[x.tolist() for x in indices[b]]):
            target[q] = int(targets[b]["labels"][j])
        for q, c in enumerate(target):
            w = eos_coef if c == NUM_CLASSES else 1.0
            num += -w * logits[b, q].log_softmax(-1)[c].item()
            den += w
    return num / den


def test_full_mask_losses_over_two_images_and_five_masks():
    outputs, targets, indices = _batch()
    losses = _make(False, indices)(outputs, targets)
    pairs = _pairs(outputs, targets, indices)
    up = [
        nn.functional.interpolate(
            p[None, None].double(), size=(8, 6), mode="bilinear", align_corners=False
        ).flatten()
        for p, _ in pairs
    ]
    x = torch.stack(up)
    t = torch.stack([tgt.flatten() for _, tgt in pairs])
    assert losses["loss_mask"].item() == pytest.approx(_bce64(x, t).sum().item() / 5, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(_dice64(x, t).sum().item() / 5, rel=1e-5)
    assert losses["loss_ce"].item() == pytest.approx(_ce64(outputs, targets, indices), rel=1e-5)


def test_point_sampled_losses_over_two_images_and_five_masks(monkeypatch):
    """Fixed per-pair points (inside the padding too): BCE/dice at those points, / num_masks."""
    outputs, targets, indices = _batch()
    g = torch.Generator().manual_seed(9)
    coords = torch.rand(5, 7, 2, generator=g)  # (M, P, 2): a different point set per pair
    seen = {}

    def fixed_points(
        mask_logits, uncertainty_func, num_points, oversample_ratio, importance_sample_ratio
    ):
        seen.update(shape=tuple(mask_logits.shape), args=(num_points, oversample_ratio))
        seen["importance"] = importance_sample_ratio
        return coords

    monkeypatch.setattr(
        criterion_module, "get_uncertain_point_coords_with_randomness", fixed_points
    )
    losses = _make(True, indices, num_points=7)(outputs, targets)
    assert seen == {"shape": (5, 1, 4, 3), "args": (7, 3.0), "importance": 0.75}

    pairs = _pairs(outputs, targets, indices)
    x = torch.cat([bilinear64(p[None], coords[k]) for k, (p, _) in enumerate(pairs)])
    t = torch.cat([bilinear64(tgt[None], coords[k]) for k, (_, tgt) in enumerate(pairs)])
    assert losses["loss_mask"].item() == pytest.approx(_bce64(x, t).sum().item() / 5, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(_dice64(x, t).sum().item() / 5, rel=1e-5)


def test_num_masks_is_averaged_over_workers(monkeypatch):
    """Two workers with 5 and 3 masks: every worker divides by (5 + 3) / 2 = 4."""
    outputs, targets, indices = _batch()
    monkeypatch.setattr(criterion_module, "_world_size", lambda: 2)

    def all_reduce(tensor):
        tensor += 3.0  # the other worker's count

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    crit = _make(False, indices)
    assert crit.num_masks_across_workers(targets, torch.device("cpu")) == 4.0
    single = _make(False, indices)
    monkeypatch.setattr(criterion_module, "_world_size", lambda: 1)
    ref = single(outputs, targets)
    monkeypatch.setattr(criterion_module, "_world_size", lambda: 2)
    got = crit(outputs, targets)
    for key in ("loss_mask", "loss_dice"):
        assert got[key].item() == pytest.approx(ref[key].item() * 5 / 4, rel=1e-6)
    assert got["loss_ce"].item() == pytest.approx(ref["loss_ce"].item(), rel=1e-6)


def test_world_size_is_one_without_a_process_group():
    assert criterion_module._world_size() == 1


def test_aux_outputs_get_their_own_matching_and_suffixed_losses():
    outputs, targets, indices = _batch()
    aux = [
        {"pred_logits": outputs["pred_logits"] * 0.5, "pred_masks": outputs["pred_masks"] + 1},
        {"pred_logits": outputs["pred_logits"], "pred_masks": outputs["pred_masks"]},
    ]
    crit = _make(False, indices)
    losses = crit(dict(outputs, aux_outputs=aux), targets)
    assert crit.matcher.calls == 3  # last layer + two auxiliary predictions
    assert sorted(losses) == sorted(
        f"{k}{s}" for k in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1")
    )
    for key in ("loss_ce", "loss_mask", "loss_dice"):
        assert losses[f"{key}_1"].item() == pytest.approx(losses[key].item(), rel=1e-6)
        assert not math.isclose(losses[f"{key}_0"].item(), losses[key].item(), rel_tol=1e-4)
    plain = _make(False, indices)(aux[0], targets)
    for key in ("loss_ce", "loss_mask", "loss_dice"):
        assert losses[f"{key}_0"].item() == pytest.approx(plain[key].item(), rel=1e-6)


def test_only_the_requested_losses_are_computed():
    outputs, targets, indices = _batch()
    crit = _make(False, indices)
    crit.losses = ["labels"]
    assert sorted(crit(outputs, targets)) == ["loss_ce"]


def test_no_target_in_the_batch_gives_zero_mask_losses_with_gradients():
    outputs, _, _ = _batch()
    outputs = {k: v.clone().requires_grad_() for k, v in outputs.items()}
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 6)}] * 2
    crit = _make(True, [(torch.zeros(0, dtype=torch.int64),) * 2] * 2)
    losses = crit(outputs, empty)
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    # Every query is "no object": the cross-entropy is the plain mean over queries.
    ce = -outputs["pred_logits"].double().log_softmax(-1)[..., NUM_CLASSES].mean()
    assert losses["loss_ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    sum(losses.values()).backward()
    assert outputs["pred_masks"].grad is not None


def test_empty_weight_and_repr():
    crit = _make(True, [])
    assert crit.empty_weight.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.2])
    assert crit.extra_repr() == (
        "num_classes=3, eos_coef=0.2, losses=['labels', 'masks'], "
        "weight_dict={'loss_ce': 2.0, 'loss_mask': 5.0, 'loss_dice': 5.0}, num_points=5, "
        "oversample_ratio=3.0, importance_sample_ratio=0.75, point_sampled=True"
    )


def test_invalid_arguments_name_the_fix():
    with pytest.raises(ValueError) as err:
        SetCriterion(3, HungarianMatcher(), {}, 0.1, ["labels", "boxes"], 10, 3.0, 0.75)
    assert str(err.value) == "SetCriterion: unknown losses ['boxes']; valid: 'labels', 'masks'"
    with pytest.raises(ValueError) as err:
        SetCriterion(3, HungarianMatcher(), {}, 0.1, ["masks"], 0, 3.0, 0.75)
    assert str(err.value) == (
        "SetCriterion: point_sampled=True needs num_points > 0, got 0; set "
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS or MODEL.MASK_FORMER.POINT_SAMPLED_LOSS False"
    )
    SetCriterion(3, HungarianMatcher(), {}, 0.1, ["masks"], 0, 3.0, 0.75, point_sampled=False)
    SetCriterion(3, HungarianMatcher(), {}, 0.1, ["masks"], 1, 3.0, 0.75)  # one point is enough
    with pytest.raises(ValueError) as err:
        SetCriterion(3, HungarianMatcher(), {}, 0.1, ["masks"], 10, 0.5, 0.75)
    assert str(err.value) == (
        "SetCriterion: oversample_ratio must be >= 1, got 0.5 (MODEL.MASK_FORMER.OVERSAMPLE_RATIO)"
    )
    for ratio in (-0.25, 1.5):
        with pytest.raises(ValueError) as err:
            SetCriterion(3, HungarianMatcher(), {}, 0.1, ["masks"], 10, 3.0, ratio)
        assert str(err.value) == (
            f"SetCriterion: importance_sample_ratio must be in [0, 1], got {ratio} "
            "(MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO)"
        )
    # The bounds themselves are valid (as in point_rend): no oversampling; all-uniform or
    # all-importance points.
    SetCriterion(3, HungarianMatcher(), {}, 0.1, ["masks"], 10, 1.0, 0.75)
    SetCriterion(3, HungarianMatcher(), {}, 0.1, ["masks"], 10, 3.0, 0.0)
    SetCriterion(3, HungarianMatcher(), {}, 0.1, ["masks"], 10, 3.0, 1.0)
