"""Inference post-processing on hand-made logits, with hand-computed results."""

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import sem_seg_postprocess

from mask2former.modeling.postprocessing import (
    CpuBuffers,
    binary_masks,
    crop_and_resize,
    instance_inference,
    masks_at_output_size,
    panoptic_inference,
    select_instances,
    semantic_inference,
    upsample_masks,
)

BIG = 20.0  # a logit whose sigmoid is 1 - 2e-9


def onehot_logits(classes: list[int], num_classes: int, confidence: float = 10.0) -> torch.Tensor:
    """(Q, K+1) logits putting almost all probability on `classes[q]` (K = no object)."""
    logits = torch.zeros(len(classes), num_classes + 1)
    for q, c in enumerate(classes):
        logits[q, c] = confidence
    return logits


def region_logits(regions: list[tuple[slice, slice]], h: int, w: int) -> torch.Tensor:
    """(Q, H, W) mask logits: +BIG inside the query's region, -BIG outside."""
    m = torch.full((len(regions), h, w), -BIG)
    for q, (ys, xs) in enumerate(regions):
        m[q, ys, xs] = BIG
    return m


def instances(mask_cls, mask_pred, num_classes, topk, thing_ids=None):
    """Instance inference as the model runs it: select pairs, threshold the logits, then the
    probabilities."""
    selection = select_instances(mask_cls, num_classes=num_classes, topk=topk, thing_ids=thing_ids)
    binary = binary_masks(mask_pred, selection.queries)
    return instance_inference(mask_pred.sigmoid(), selection, binary)


def test_semantic_inference_sums_class_times_mask_probabilities():
    # 2 queries, 2 classes: q0 = class 0 with prob 0.5 (0.5 on "no object"), q1 = class 1.
    mask_cls = torch.tensor([[0.0, -100.0, 0.0], [-100.0, 5.0, -100.0]])
    mask_pred = torch.tensor([[[0.0, BIG]], [[-BIG, BIG]]])  # (2, 1, 2)
    out = semantic_inference(mask_cls, mask_pred.sigmoid())
    assert out.shape == (2, 1, 2)
    # class 0 at pixel 0: p(c0|q0) * sigmoid(0) = 0.5 * 0.5
    torch.testing.assert_close(out[0, 0, 0], torch.tensor(0.25), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0, 0, 1], torch.tensor(0.5), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1, 0, 0], torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1, 0, 1], torch.tensor(1.0), atol=1e-6, rtol=0)
    assert out.argmax(0).tolist() == [[0, 1]]


def test_panoptic_inference_hand_computed_segments():
    K = 4  # classes 0, 1 are things; 2, 3 stuff
    thing_ids = {0, 1}
    h, w = 4, 6
    classes = [0, 0, 2, 2, 3, 1, 1]
    regions = [
        (slice(0, 2), slice(0, 2)),  # q0 thing 0: top-left 2x2
        (slice(2, 4), slice(0, 2)),  # q1 thing 0: bottom-left 2x2 (second instance)
        (slice(0, 2), slice(2, 4)),  # q2 stuff 2: top-middle
        (slice(2, 4), slice(2, 4)),  # q3 stuff 2 again: bottom-middle -> merged with q2
        (slice(0, 4), slice(4, 6)),  # q4 stuff 3: right column (8 px)
        (slice(0, 1), slice(4, 5)),  # q5 thing 1, only 1 px, hidden under q4 -> dropped
        (slice(0, 4), slice(0, 6)),  # q6 thing 1, low score -> removed by the threshold
    ]
    mask_cls = onehot_logits(classes, K)
    mask_cls[4, 3] = 12.0  # q4 more confident than q5, wins their shared pixel
    mask_cls[6] = torch.tensor([0.0, 0.5, 0.0, 0.0, 3.0])  # best class = no object
    mask_pred = region_logits(regions, h, w)
    seg, info = panoptic_inference(
        mask_cls,
        mask_pred.sigmoid(),
        num_classes=K,
        thing_ids=thing_ids,
        object_mask_threshold=0.8,
        overlap_threshold=0.8,
    )
    expected = torch.tensor(
        [
            [1, 1, 3, 3, 4, 4],
            [1, 1, 3, 3, 4, 4],
            [2, 2, 3, 3, 4, 4],
            [2, 2, 3, 3, 4, 4],
        ],
        dtype=torch.int32,
    )
    assert seg.dtype == torch.int32
    assert torch.equal(seg, expected)
    assert info == [
        {"id": 1, "isthing": True, "category_id": 0},
        {"id": 2, "isthing": True, "category_id": 0},
        {"id": 3, "isthing": False, "category_id": 2},
        {"id": 4, "isthing": False, "category_id": 3},
    ]


def test_panoptic_overlap_threshold_and_empty_result():
    K = 2
    # q0 (class 0) covers 4 px; q1 (class 1, more confident) covers 2 of them -> q0 keeps 2/4 = 0.5.
    mask_cls = onehot_logits([0, 1], K)
    mask_cls[1, 1] = 12.0
    mask_pred = region_logits([(slice(0, 1), slice(0, 4)), (slice(0, 1), slice(0, 2))], 1, 4)
    kw = dict(num_classes=K, thing_ids={0, 1}, object_mask_threshold=0.8)
    seg, info = panoptic_inference(mask_cls, mask_pred.sigmoid(), overlap_threshold=0.8, **kw)
    assert seg.tolist() == [[1, 1, 0, 0]] and [s["category_id"] for s in info] == [1]
    seg, info = panoptic_inference(mask_cls, mask_pred.sigmoid(), overlap_threshold=0.5, **kw)
    assert seg.tolist() == [[2, 2, 1, 1]] and [s["category_id"] for s in info] == [0, 1]
    # Nothing confident: empty result.
    seg, info = panoptic_inference(
        torch.zeros(2, K + 1), mask_pred.sigmoid(), overlap_threshold=0.8, **kw
    )
    assert info == [] and not seg.any()


def test_panoptic_pixels_outside_the_winning_mask_are_void():
    # The winner's own mask prob at a pixel is < 0.5: the pixel stays void (0), as published.
    mask_cls = onehot_logits([0], 1)
    mask_pred = torch.tensor([[[BIG, BIG, -1.0]]])
    seg, info = panoptic_inference(
        mask_cls,
        mask_pred.sigmoid(),
        num_classes=1,
        thing_ids={0},
        object_mask_threshold=0.5,
        overlap_threshold=0.5,
    )
    assert seg.tolist() == [[1, 1, 0]]


def test_instance_inference_topk_scores_and_boxes():
    K = 3
    # q0: class 2 (p ~ 1), mask rows 1-2, cols 1-3; q1: split between class 0 and 1; q2: empty mask.
    mask_cls = torch.tensor(
        [[-10.0, -10.0, 10.0, -10.0], [2.0, 1.5, -10.0, -10.0], [-10.0, 4.0, -10.0, -10.0]]
    )
    h, w = 5, 6
    mask_pred = torch.full((3, h, w), -BIG)
    mask_pred[0, 1:3, 1:4] = BIG
    mask_pred[1, 0, :] = 1.0  # sigmoid(1) = 0.731 inside the mask
    res = instances(mask_cls, mask_pred, num_classes=K, topk=4)
    assert len(res) == 4
    probs = F.softmax(mask_cls, -1)[:, :K]
    exp_pairs = sorted(
        ((probs[q, c].item(), q, c) for q in range(3) for c in range(K)), reverse=True
    )[:4]
    assert res.pred_classes.tolist() == [c for _, _, c in exp_pairs]
    assert res.pred_masks.dtype == torch.float32 and res.pred_masks.shape == (4, h, w)
    for i, (p, q, _c) in enumerate(exp_pairs):
        if q == 0:
            mask_score, box = 1.0, [1, 1, 4, 3]
        elif q == 1:
            mask_score, box = 1 / (1 + math.exp(-1.0)), [0, 0, 6, 1]
        else:
            mask_score, box = 0.0, [0, 0, 0, 0]  # empty mask: score 0, zero box
        assert math.isclose(res.scores[i].item(), p * mask_score, rel_tol=1e-4, abs_tol=1e-6)
        assert res.pred_boxes.tensor[i].tolist() == box
        assert torch.equal(res.pred_masks[i], (mask_pred[q] > 0).float())


def test_instance_inference_drops_stuff_for_panoptic_models():
    mask_cls = torch.tensor(
        [[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]
    )  # q0 class 0 (thing), q1 class 1 (stuff)
    mask_pred = torch.full((2, 2, 2), BIG)
    res = instances(mask_cls, mask_pred, num_classes=2, topk=4, thing_ids={0})
    assert res.pred_classes.tolist() == [0, 0]  # (q0, c0) and (q1, c0)


def test_instance_boxes_match_detectron2():
    """Boxes from the pixel counts = detectron2's boxes of the same masks (one mask empty)."""
    from detectron2.structures import BitMasks

    g = torch.Generator().manual_seed(0)
    mask_pred = torch.randn(6, 9, 13, generator=g) - 1.3  # sparse masks
    mask_pred[0] = -1.0  # empty
    mask_cls = torch.randn(6, 4, generator=g)
    res = instances(mask_cls, mask_pred, num_classes=3, topk=18)
    ref = BitMasks(res.pred_masks.bool()).get_bounding_boxes().tensor
    assert (res.pred_masks.flatten(1).sum(1) == 0).any()  # the empty mask is among them
    assert torch.equal(res.pred_boxes.tensor, ref)


# ---- the published loop-based implementations, as references on random inputs ------------------
def reference_panoptic(
    mask_cls, mask_pred, num_classes, thing_ids, object_mask_threshold, overlap_threshold
):
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    mask_pred = mask_pred.sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep]
    cur_prob_masks = cur_scores.view(-1, 1, 1) * cur_masks
    h, w = cur_masks.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32)
    segments_info = []
    current_segment_id = 0
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info
    cur_mask_ids = cur_prob_masks.argmax(0)
    stuff_memory_list = {}
    for k in range(cur_classes.shape[0]):
        pred_class = cur_classes[k].item()
        isthing = pred_class in thing_ids
        mask_area = (cur_mask_ids == k).sum().item()
        original_area = (cur_masks[k] >= 0.5).sum().item()
        mask = (cur_mask_ids == k) & (cur_masks[k] >= 0.5)
        if mask_area > 0 and original_area > 0 and mask.sum().item() > 0:
            if mask_area / original_area < overlap_threshold:
                continue
            if not isthing:
                if int(pred_class) in stuff_memory_list:
                    panoptic_seg[mask] = stuff_memory_list[int(pred_class)]
                    continue
                stuff_memory_list[int(pred_class)] = current_segment_id + 1
            current_segment_id += 1
            panoptic_seg[mask] = current_segment_id
            segments_info.append(
                {"id": current_segment_id, "isthing": bool(isthing), "category_id": int(pred_class)}
            )
    return panoptic_seg, segments_info


def random_predictions(seed, Q=30, K=8, h=24, w=32):
    g = torch.Generator().manual_seed(seed)
    mask_cls = torch.randn(Q, K + 1, generator=g) * 4
    mask_pred = torch.randn(Q, h // 4, w // 4, generator=g) * 3
    mask_pred = F.interpolate(mask_pred[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return mask_cls, mask_pred


def test_panoptic_matches_published_loop_on_random_inputs():
    for seed in range(5):
        mask_cls, mask_pred = random_predictions(seed)
        for thr in (0.0, 0.5, 0.8):
            kw = dict(
                num_classes=8,
                thing_ids={0, 1, 2, 3},
                object_mask_threshold=thr * 0.5,
                overlap_threshold=thr,
            )
            seg, info = panoptic_inference(mask_cls, mask_pred.sigmoid(), **kw)
            ref_seg, ref_info = reference_panoptic(mask_cls, mask_pred, **kw)
            assert info == ref_info
            assert torch.equal(seg, ref_seg)


def test_instance_matches_published_computation_on_random_inputs():
    mask_cls, mask_pred = random_predictions(0)
    K, topk = 8, 20
    res = instances(mask_cls, mask_pred, num_classes=K, topk=topk)
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    s, idx = scores.flatten().topk(topk, sorted=True)
    q = idx // K
    m = mask_pred[q]
    binary = (m > 0).float()
    mask_scores = (m.sigmoid().flatten(1) * binary.flatten(1)).sum(1) / (
        binary.flatten(1).sum(1) + 1e-6
    )
    assert torch.equal(res.pred_classes, idx % K)
    assert torch.equal(res.pred_masks, binary)
    # Same values up to float32 summation order (a dot product instead of a sum).
    torch.testing.assert_close(res.scores, s * mask_scores, rtol=1e-5, atol=0)


def test_binary_masks_repeated_queries_and_empty_selection():
    logits = torch.randn(4, 7, 9, dtype=torch.float32)
    queries = torch.tensor([2, 0, 2, 3, 0])
    out, first_rows, row_counts, col_counts = binary_masks(logits, queries)
    ref = (logits[queries] > 0).float()
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert first_rows == {2: 0, 0: 1, 3: 3}
    assert torch.equal(row_counts, ref[[0, 1, 3]].sum(2)) and torch.equal(
        col_counts, ref[[0, 1, 3]].sum(1)
    )
    empty = binary_masks(logits, queries[:0])
    assert (
        empty.masks.shape == (0, 7, 9)
        and empty.row_counts.shape == (0, 7)
        and empty.first_rows == {}
    )
    # No thing class among the pairs: an empty, well-formed result.
    res = instances(
        torch.tensor([[0.0, 5.0, 0.0]]), logits[:1], num_classes=2, topk=4, thing_ids={5}
    )
    assert len(res) == 0 and res.pred_masks.shape == (0, 7, 9)
    assert res.pred_boxes.tensor.shape == (0, 4) and res.scores.shape == (0,)


def test_panoptic_matches_published_loop_in_half_precision():
    """fp16 probabilities (autocast): counts stay exact, products in fp16 as in the loop."""
    for seed in range(3):
        mask_cls, mask_pred = random_predictions(seed)
        kw = dict(
            num_classes=8, thing_ids={0, 1, 2, 3}, object_mask_threshold=0.0, overlap_threshold=0.0
        )
        seg, info = panoptic_inference(mask_cls.half(), mask_pred.half().sigmoid(), **kw)
        ref_seg, ref_info = reference_panoptic(mask_cls.half(), mask_pred.half(), **kw)
        assert len(ref_info) >= 2 and info == ref_info and torch.equal(seg, ref_seg)


def test_panoptic_row_bands_match_whole_image(monkeypatch):
    """Bands of a few rows (as at COCO sizes on the CPU) give the whole-image result."""
    from mask2former.modeling import postprocessing

    for seed in range(3):
        mask_cls, mask_pred = random_predictions(seed)
        kw = dict(
            num_classes=8, thing_ids={0, 1, 2, 3}, object_mask_threshold=0.0, overlap_threshold=0.0
        )
        ref_seg, ref_info = reference_panoptic(mask_cls, mask_pred, **kw)
        assert len(ref_info) >= 2  # several segments compete for pixels
        for elements in (1, 50, 333):  # 1: one row per band
            monkeypatch.setattr(postprocessing, "_PANOPTIC_BAND_ELEMENTS", elements)
            seg, info = panoptic_inference(mask_cls, mask_pred.sigmoid(), **kw)
            assert info == ref_info and torch.equal(seg, ref_seg)


# ----------------------------------------------------------------------------------------------
# Panoptic post-processing at the edge of its overlap rule (modeling/postprocessing.py).
#
# The rule (upstream_inventory.md Sec. 9): a kept query's score per pixel is p(class) * p(mask);
# the pixel goes to the best query. For query k: won = pixels it wins (whatever its own mask
# probability there), original = pixels where its own probability >= 0.5, segment = won pixels
# where its own probability >= 0.5. It is dropped when won / original < overlap_threshold, so
# pixels it wins with its own probability < 0.5 count for keeping it, but are void in the output.


NUM_CLASSES = 3


def _cls(probs: list[list[float]]) -> torch.Tensor:
    """(Q, K+1) logits whose softmax is exactly `probs` (rows sum to 1)."""
    return torch.tensor(probs).log()


def _prob_logits(prob: torch.Tensor) -> torch.Tensor:
    return torch.log(prob) - torch.log1p(-prob)  # sigmoid^-1


def _run(mask_cls, mask_prob, overlap=0.8, things=(0, 1), via_logits=False):
    kwargs = dict(
        num_classes=NUM_CLASSES,
        thing_ids=set(things),
        object_mask_threshold=0.5,
        overlap_threshold=overlap,
    )
    if via_logits:
        logits = _prob_logits(mask_prob.double()).float()
        return panoptic_inference(mask_cls, logits.sigmoid(), **kwargs)  # as the model does
    return panoptic_inference(mask_cls, mask_prob, **kwargs)


def _two_queries(low_prob_wins: bool) -> torch.Tensor:
    """A 1 x 10 image. Query A (class 0): 0.9 on pixels 0-3 (original area 4), 0.4 on 4-7 when
    `low_prob_wins` (else 0.01). Query B (class 1): 0.95 on pixels 2-3 and 8-9, 0.1 elsewhere."""
    a = torch.tensor([0.9] * 4 + [0.4 if low_prob_wins else 0.01] * 4 + [0.01] * 2)
    b = torch.tensor([0.1, 0.1, 0.95, 0.95, 0.1, 0.1, 0.1, 0.1, 0.95, 0.95])
    return torch.stack([a, b])[:, None, :]  # (Q, 1, 10)


CLS = _cls([[0.9, 0.05, 0.03, 0.02], [0.05, 0.9, 0.03, 0.02]])  # equal scores 0.9


@pytest.mark.parametrize("via_logits", [False, True])
def test_low_probability_wins_keep_a_query_but_stay_void(via_logits):
    # A wins 0, 1 (0.9) and 4-7 (0.4 vs 0.1): won 6, original 4 -> 6 / 4 >= 0.8, kept.
    # Its segment is only 0, 1 (won and >= 0.5); 4-7 are void; B keeps 2, 3, 8, 9.
    seg, info = _run(CLS, _two_queries(low_prob_wins=True), via_logits=via_logits)
    assert seg[0].tolist() == [1, 1, 2, 2, 0, 0, 0, 0, 2, 2]
    assert info == [
        {"id": 1, "isthing": True, "category_id": 0},
        {"id": 2, "isthing": True, "category_id": 1},
    ]
    assert seg.dtype == torch.int32


def test_without_the_low_probability_wins_the_query_is_dropped():
    # A wins only 0, 1: won 2, original 4 -> 0.5 < 0.8: dropped, B becomes segment 1.
    seg, info = _run(CLS, _two_queries(low_prob_wins=False))
    assert seg[0].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 1, 1]
    assert info == [{"id": 1, "isthing": True, "category_id": 1}]


@pytest.mark.parametrize("overlap,kept", [(1.51, False), (1.5, True), (0.0, True)])
def test_overlap_threshold_is_compared_with_won_over_original(overlap, kept):
    # A: won 6 / original 4 = 1.5; B: won 4 / original 4 = 1.0 -> B survives any threshold <= 1.
    seg, info = _run(CLS, _two_queries(low_prob_wins=True), overlap=overlap)
    cats = [s["category_id"] for s in info]
    assert (0 in cats) == kept
    if overlap <= 1.0:
        assert 1 in cats


def test_a_query_that_wins_only_low_probability_pixels_is_dropped():
    # A: 0.45 everywhere except 0.9 on pixel 0, which B takes (0.95 * 0.9 > 0.9 * 0.9):
    # A wins 1-9 (won 9 >= 0.8 * original 1) but none of them at >= 0.5: no segment at all.
    a = torch.tensor([0.9] + [0.45] * 9)
    b = torch.tensor([0.95] + [0.1] * 9)
    seg, info = _run(CLS, torch.stack([a, b])[:, None, :])
    assert seg[0].tolist() == [1] + [0] * 9
    assert info == [{"id": 1, "isthing": True, "category_id": 1}]


def test_stuff_segments_of_one_class_merge_and_things_do_not():
    # Three queries: two of stuff class 2 on disjoint halves, one thing (class 0) in between.
    probs = torch.full((3, 1, 9), 0.02)
    probs[0, 0, 0:3] = 0.9
    probs[1, 0, 6:9] = 0.9
    probs[2, 0, 3:6] = 0.9
    cls = _cls([[0.02, 0.02, 0.9, 0.06]] * 2 + [[0.9, 0.02, 0.02, 0.06]])
    seg, info = _run(cls, probs, things=(0,))
    assert seg[0].tolist() == [1, 1, 1, 2, 2, 2, 1, 1, 1]
    assert info == [
        {"id": 1, "isthing": False, "category_id": 2},
        {"id": 2, "isthing": True, "category_id": 0},
    ]


def test_unconfident_and_no_object_queries_are_not_kept():
    probs = torch.full((3, 1, 4), 0.9)
    cls = _cls([[0.5, 0.2, 0.2, 0.1], [0.3, 0.1, 0.1, 0.5], [0.6, 0.2, 0.1, 0.1]])
    # q0: score 0.5, not > 0.5; q1: "no object"; q2: kept.
    seg, info = _run(cls, probs)
    assert seg.tolist() == [[1, 1, 1, 1]] and info == [{"id": 1, "isthing": True, "category_id": 0}]
    seg, info = _run(cls[:2], probs[:2])
    assert not seg.any() and info == []


def _reference(mask_cls, mask_prob, num_classes, thing_ids, object_mask_threshold, overlap):
    """The rule of the module docstring, pixel by pixel in float64 (slow, tiny sizes)."""
    p = mask_cls.double().softmax(-1)
    q, h, w = mask_prob.shape
    kept = [
        k for k in range(q) if p[k].argmax() != num_classes and p[k].max() > object_mask_threshold
    ]
    seg = torch.zeros(h, w, dtype=torch.int32)
    info, stuff, next_id = [], {}, 1
    prob = mask_prob.double()
    win = {}
    for i in range(h):
        for j in range(w):
            best = max(kept, key=lambda k: (p[k].max() * prob[k, i, j], -k))
            win[i, j] = best
    for k in kept:
        won = sum(1 for v in win.values() if v == k)
        original = int((prob[k] >= 0.5).sum())
        pixels = [(i, j) for (i, j), v in win.items() if v == k and prob[k, i, j] >= 0.5]
        if won == 0 or original == 0 or not pixels or won / original < overlap:
            continue
        cls = int(p[k].argmax())
        if cls not in thing_ids and cls in stuff:
            sid = stuff[cls]
        else:
            sid = next_id
            next_id += 1
            if cls not in thing_ids:
                stuff[cls] = sid
            info.append({"id": sid, "isthing": cls in thing_ids, "category_id": cls})
        for i, j in pixels:
            seg[i, j] = sid
    return seg, info


@pytest.mark.parametrize("seed", range(4))
def test_random_low_contrast_masks_match_a_pixel_loop(seed):
    """Probabilities around 0.5, so many pixels are won below 0.5 (the published random test
    uses confident masks, where the rule's edge is rarely reached)."""
    g = torch.Generator().manual_seed(seed)
    q, h, w = 6, 6, 8
    mask_cls = torch.randn(q, NUM_CLASSES + 1, generator=g) * 3
    mask_prob = torch.rand(q, h, w, generator=g) * 0.45 + 0.2  # 0.2 .. 0.65
    for k in range(q):  # each query is confident (up to 0.9) on a random 3 x 4 block
        i, j = (torch.rand(2, generator=g) * torch.tensor([h - 3, w - 4])).long().tolist()
        mask_prob[k, i : i + 3, j : j + 4] += 0.25
    segments = []
    for overlap in (0.2, 0.5, 0.9):
        got = _run(mask_cls, mask_prob, overlap=overlap, things=(0, 1))
        ref = _reference(mask_cls, mask_prob, NUM_CLASSES, {0, 1}, 0.5, overlap)
        assert got[1] == ref[1], overlap
        assert torch.equal(got[0], ref[0]), overlap
        segments.append(len(ref[1]))
    assert segments[0] >= 2  # not vacuous: several segments survive the lowest threshold


# ---- CPU memory reuse (`CpuBuffers`) ---------------------------------------------------------
def test_buffers_give_the_results_of_fresh_memory():
    """Every step that takes `buffers` returns, from pooled memory, exactly what it returns
    without; the resizes are detectron2's (F.interpolate, `sem_seg_postprocess`)."""
    buffers = CpuBuffers()
    buffers.pool.min_bytes = 0  # pool every tensor at these sizes
    g = torch.Generator().manual_seed(0)
    logits, mask_cls = torch.randn(5, 6, 8, generator=g) * 3, torch.randn(5, 4, generator=g)
    for image_size, output_size in [
        ((24, 32), (24, 32)),
        ((20, 30), (20, 30)),
        ((20, 30), (9, 41)),
    ]:
        buffers.begin_round()
        up = upsample_masks(logits, (24, 32))
        ref = F.interpolate(logits[None], size=(24, 32), mode="bilinear", align_corners=False)[0]
        assert torch.equal(up, ref) and torch.equal(upsample_masks(logits, (24, 32), buffers), ref)
        masks = masks_at_output_size(up, image_size, output_size, buffers)
        ref = sem_seg_postprocess(up, image_size, *output_size)
        assert masks.is_contiguous() and torch.equal(masks, ref)
        assert torch.equal(masks_at_output_size(up, image_size, output_size), ref)
        assert torch.equal(crop_and_resize(up, image_size, output_size, buffers), ref)
        queries = torch.tensor([3, 1, 3])
        a, b = binary_masks(masks, queries, buffers), binary_masks(masks, queries)
        assert a.first_rows == b.first_rows and torch.equal(a.masks, b.masks)
        assert torch.equal(a.row_counts, b.row_counts) and torch.equal(a.col_counts, b.col_counts)
        prob = masks.sigmoid()
        assert torch.equal(
            semantic_inference(mask_cls, prob, buffers), semantic_inference(mask_cls, prob)
        )
    assert buffers.pool.free_bytes() > 0  # pooled memory was used and given back
    # With grad (out= ops record none) the ops allocate: same values, and differentiable.
    x = logits.clone().requires_grad_()
    assert buffers.empty(x, (2, 3)) is None
    up = upsample_masks(x, (24, 32), buffers)
    assert up.requires_grad and torch.equal(up, upsample_masks(logits, (24, 32)))
    sem = semantic_inference(mask_cls, up.sigmoid(), buffers)
    sem.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    buffers.clear()
    assert buffers.pool.free_bytes() == 0


# ---- edges that the published-loop comparisons do not reach (mutation testing, issue 26) -----
# An out= tensor of the wrong shape is resized with a deprecation warning (and would be an error
# in a future PyTorch): the steps below must hand each op an out= of exactly the right shape.
@pytest.mark.filterwarnings("error::UserWarning")
def test_each_buffered_step_takes_its_output_from_the_pool():
    """An output made with `buffers` is pool memory: dropping it gives the memory back. (Fewer
    rows than queries: a buffer sized by the wrong dimension would be too small.)"""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 3, 4, generator=g)
    up = upsample_masks(logits, (5, 6))
    mask_cls = torch.randn(6, 5, generator=g)
    steps = {
        "upsample_masks": lambda b: upsample_masks(logits, (5, 6), b),
        "crop_and_resize": lambda b: crop_and_resize(up, (4, 5), (7, 9), b),
        "masks_at_output_size": lambda b: masks_at_output_size(up, (4, 5), (4, 5), b),
        "semantic_inference": lambda b: semantic_inference(mask_cls, up.sigmoid(), b),
        "binary_masks": lambda b: binary_masks(up, torch.tensor([2, 0]), b).masks,
    }
    for name, step in steps.items():
        buffers = CpuBuffers()
        buffers.pool.min_bytes = 0
        buffers.begin_round()
        out = step(buffers)
        assert buffers.pool.free_bytes() == 0, name
        del out
        assert buffers.pool.free_bytes() > 0, name
    # Pooled outputs keep the dtype of the step: the input's, or float32 for binary masks.
    buffers = CpuBuffers()
    buffers.pool.min_bytes = 0
    up64 = upsample_masks(logits.double(), (5, 6), buffers)
    ref = F.interpolate(logits.double()[None], size=(5, 6), mode="bilinear", align_corners=False)
    assert up64.dtype == torch.float64 and torch.equal(up64, ref[0])
    assert binary_masks(up64, torch.tensor([1]), buffers).masks.dtype == torch.float32


def test_object_mask_threshold_is_strict():
    probs = torch.full((1, 1, 3), 0.9)
    cls = _cls([[0.7, 0.1, 0.1, 0.1]])
    score = F.softmax(cls, -1).max().item()  # float32 -> float: the same number
    kw = dict(num_classes=NUM_CLASSES, thing_ids={0}, overlap_threshold=0.8)
    _, info = panoptic_inference(cls, probs, object_mask_threshold=score, **kw)
    assert info == []  # a score equal to the threshold is not above it
    seg, info = panoptic_inference(cls, probs, object_mask_threshold=score - 1e-6, **kw)
    assert seg.tolist() == [[1, 1, 1]] and len(info) == 1


def test_a_mask_probability_of_exactly_one_half_is_foreground():
    # sigmoid(0) = 0.5 exactly: such pixels count in the original area and join the segment.
    logits = torch.tensor([[[3.0, 0.0, 0.0, -3.0]]])
    seg, info = _run(_cls([[0.9, 0.05, 0.03, 0.02]]), logits.sigmoid(), overlap=1.0)
    # won 4 / original 3 >= 1.0; segment = the 3 pixels >= 0.5
    assert seg.tolist() == [[1, 1, 1, 0]] and len(info) == 1


def test_a_single_pixel_segment_is_kept():
    # A (class 0) wins only pixel 0 (won = original = segment = 1 pixel); B (class 1) the rest.
    a = torch.tensor([0.9, 0.01, 0.01, 0.01])
    b = torch.tensor([0.01, 0.9, 0.9, 0.9])
    seg, info = _run(CLS, torch.stack([a, b])[:, None, :])
    assert seg.tolist() == [[1, 2, 2, 2]]
    assert [s["category_id"] for s in info] == [0, 1]


def test_panoptic_products_in_float64():
    """float64 inputs: the winner is decided in float64. Here q1's score * probability exceeds
    q0's by about 1e-10 (relative): rounded to float32 the two would tie and q0 would win."""
    cls = torch.tensor(
        [[0.9, 0.05, 0.03, 0.02], [0.05, 0.9 * (1 - 1e-10), 0.03, 0.02 + 0.9e-10]],
        dtype=torch.float64,
    ).log()
    prob = torch.tensor([0.7, 0.7 * (1 + 2e-10)], dtype=torch.float64).view(2, 1, 1).expand(2, 1, 3)
    seg, info = _run(cls, prob.contiguous())
    assert seg.tolist() == [[1, 1, 1]]
    assert info == [{"id": 1, "isthing": True, "category_id": 1}]


@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize("seed,queries,overlap", [(1, 6, 0.5), (0, 8, 0.5), (0, 6, 0.8)])
def test_panoptic_row_bands_with_an_overlap_threshold(monkeypatch, seed, queries, overlap):
    """Original areas are summed over the bands: with a threshold, each band's share counts.
    Bands of 5 rows: the last of the 24 rows is a shorter band (4 rows)."""
    from mask2former.modeling import postprocessing

    mask_cls, mask_pred = random_predictions(seed, Q=queries)
    kw = dict(num_classes=8, thing_ids={0, 1, 2, 3}, object_mask_threshold=0.0)
    ref_seg, ref_info = reference_panoptic(mask_cls, mask_pred, overlap_threshold=overlap, **kw)
    _, all_info = reference_panoptic(mask_cls, mask_pred, overlap_threshold=0.0, **kw)
    assert 1 <= len(ref_info) < len(all_info)  # the threshold drops some segments, not all
    kept = int(mask_cls.argmax(-1).ne(8).sum())
    monkeypatch.setattr(postprocessing, "_PANOPTIC_BAND_ELEMENTS", 5 * kept * mask_pred.shape[-1])
    seg, info = panoptic_inference(mask_cls, mask_pred.sigmoid(), overlap_threshold=overlap, **kw)
    assert info == ref_info and torch.equal(seg, ref_seg)


def test_instance_of_a_single_pixel_mask():
    # One query (class 1 of 2) whose mask is the single pixel (0, 0) of a 3 x 4 image.
    mask_cls = torch.tensor([[0.0, 3.0, -1.0]])
    mask_pred = torch.full((1, 3, 4), -BIG)
    mask_pred[0, 0, 0] = 1.0
    res = instances(mask_cls, mask_pred, num_classes=2, topk=1)
    assert res.image_size == (3, 4)
    assert res.pred_classes.tolist() == [1]
    assert res.pred_boxes.tensor.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    # The published score p(class) * sum(prob * mask) / (area + 1e-6), in float32; exact here
    # (one pixel: no summation order).
    p, prob = F.softmax(mask_cls, -1)[0, 1], mask_pred[0, 0, 0].sigmoid()
    assert res.scores.tolist() == [(p * (prob / (torch.tensor(1.0) + 1e-6))).item()]


def test_boxes_of_no_masks():
    from mask2former.modeling.postprocessing import _boxes_from_extent

    boxes = _boxes_from_extent(
        torch.zeros(0, 5, dtype=torch.bool), torch.zeros(0, 3, dtype=torch.bool)
    )
    assert boxes.shape == (0, 4) and boxes.dtype == torch.float32
