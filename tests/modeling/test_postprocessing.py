"""Inference post-processing on hand-made logits, with hand-computed results."""

import math

import torch
import torch.nn.functional as F

from mask2former.modeling.postprocessing import (
    binary_masks,
    instance_inference,
    panoptic_inference,
    semantic_inference,
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


def test_semantic_inference_sums_class_times_mask_probabilities():
    # 2 queries, 2 classes: q0 = class 0 with prob 0.5 (0.5 on "no object"), q1 = class 1.
    mask_cls = torch.tensor([[0.0, -100.0, 0.0], [-100.0, 5.0, -100.0]])
    mask_pred = torch.tensor([[[0.0, BIG]], [[-BIG, BIG]]])  # (2, 1, 2)
    out = semantic_inference(mask_cls, mask_pred)
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
        mask_pred,
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
    seg, info = panoptic_inference(mask_cls, mask_pred, overlap_threshold=0.8, **kw)
    assert seg.tolist() == [[1, 1, 0, 0]] and [s["category_id"] for s in info] == [1]
    seg, info = panoptic_inference(mask_cls, mask_pred, overlap_threshold=0.5, **kw)
    assert seg.tolist() == [[2, 2, 1, 1]] and [s["category_id"] for s in info] == [0, 1]
    # Nothing confident: empty result.
    seg, info = panoptic_inference(torch.zeros(2, K + 1), mask_pred, overlap_threshold=0.8, **kw)
    assert info == [] and not seg.any()


def test_panoptic_pixels_outside_the_winning_mask_are_void():
    # The winner's own mask prob at a pixel is < 0.5: the pixel stays void (0), as published.
    mask_cls = onehot_logits([0], 1)
    mask_pred = torch.tensor([[[BIG, BIG, -1.0]]])
    seg, info = panoptic_inference(
        mask_cls,
        mask_pred,
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
    res = instance_inference(mask_cls, mask_pred, num_classes=K, topk=4)
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
    res = instance_inference(mask_cls, mask_pred, num_classes=2, topk=4, thing_ids={0})
    assert res.pred_classes.tolist() == [0, 0]  # (q0, c0) and (q1, c0)


def test_instance_boxes_match_detectron2():
    """Boxes from the pixel counts = detectron2's boxes of the same masks (one mask empty)."""
    from detectron2.structures import BitMasks

    g = torch.Generator().manual_seed(0)
    mask_pred = torch.randn(6, 9, 13, generator=g) - 1.3  # sparse masks
    mask_pred[0] = -1.0  # empty
    mask_cls = torch.randn(6, 4, generator=g)
    res = instance_inference(mask_cls, mask_pred, num_classes=3, topk=18)
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
            seg, info = panoptic_inference(mask_cls, mask_pred, **kw)
            ref_seg, ref_info = reference_panoptic(mask_cls, mask_pred, **kw)
            assert info == ref_info
            assert torch.equal(seg, ref_seg)


def test_instance_matches_published_computation_on_random_inputs():
    mask_cls, mask_pred = random_predictions(0)
    K, topk = 8, 20
    res = instance_inference(mask_cls, mask_pred, num_classes=K, topk=topk)
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
    res = instance_inference(
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
        seg, info = panoptic_inference(mask_cls.half(), mask_pred.half(), **kw)
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
            seg, info = panoptic_inference(mask_cls, mask_pred, **kw)
            assert info == ref_info and torch.equal(seg, ref_seg)
