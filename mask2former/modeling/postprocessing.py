"""Inference: turn (class logits, mask logits) pairs into semantic, panoptic and instance outputs.

Semantics follow the published implementation exactly (upstream_inventory.md Sec. 9; the paper's
Sec. 4.1 "Post-processing"), with two improvements: every step is vectorised over queries (no
per-segment pass over the image), and instances get real boxes computed from their masks.

Shapes: Q queries, K classes (the last of the K+1 logits is "no object"), (H, W) output size.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances


def semantic_inference(
    mask_cls: torch.Tensor, mask_pred: torch.Tensor, mask_prob: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum over queries of p(class) * p(pixel in mask) (MaskFormer's semantic fusion).

    mask_cls (Q, K+1) logits, mask_pred (Q, H, W) logits (or pass `mask_prob` = its sigmoid).
    Returns (K, H, W) unnormalised per-class scores.
    """
    cls_prob = F.softmax(mask_cls, dim=-1)[..., :-1]  # (Q, K), "no object" dropped
    if mask_prob is None:
        mask_prob = mask_pred.sigmoid()
    return torch.einsum("qc,qhw->chw", cls_prob, mask_prob)


# Elements of the (n, rows, W) band temporaries of `panoptic_inference` on the CPU (1 M = 4 MB).
_PANOPTIC_BAND_ELEMENTS = 1 << 20


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    num_classes: int,
    thing_ids: set[int] | frozenset,
    object_mask_threshold: float,
    overlap_threshold: float,
    mask_prob: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[dict]]:
    """Non-overlapping segments from the confident queries.

    Keep queries whose best class is not "no object" and whose probability exceeds
    `object_mask_threshold`; each pixel goes to the kept query with the highest
    score * mask probability; a query's segment is its pixels where its own mask probability
    is >= 0.5, dropped when (pixels it won) / (pixels of its mask) < `overlap_threshold`; all
    segments of one stuff class merge into one. Segment ids start at 1 (0 = void).

    Returns (panoptic_seg (H, W) int32, segments_info [{"id", "isthing", "category_id"}]).
    """
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)  # (Q,), (Q,)
    if mask_prob is None:
        mask_prob = mask_pred.sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    kept = keep.nonzero().flatten()  # indices of the kept queries, in query order
    cur_scores = scores[kept]
    cur_classes = labels[kept]

    h, w = mask_prob.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=mask_prob.device)
    segments_info: list[dict] = []
    n = kept.numel()
    if n == 0:
        return panoptic_seg, segments_info

    # Per pixel: the winning kept query (argmax of score * mask probability; the first one on
    # ties) and whether the winner's own probability is >= 0.5; per kept query: its mask area.
    # Computed in bands of rows so that the (n, rows, W) temporaries stay small and cache-hot
    # instead of an (n, H, W) copy; the results are those of the whole-image computation.
    cur_mask_ids = torch.empty((h, w), dtype=torch.long, device=mask_prob.device)
    winner_fg = torch.empty((h, w), dtype=torch.bool, device=mask_prob.device)
    original_area = torch.zeros(n, dtype=torch.long, device=mask_prob.device)
    rows = max(1, _PANOPTIC_BAND_ELEMENTS // (n * w)) if mask_prob.device.type == "cpu" else h
    for r0 in range(0, h, rows):
        band = mask_prob[:, r0 : r0 + rows].index_select(0, kept)  # (n, rows, W)
        # max(0).indices = argmax(0) (first maximum on ties, documented for both), and on the
        # CPU about 2.5x faster for a reduction over the leading dimension.
        ids = (band * cur_scores.view(-1, 1, 1)).max(0).indices  # (rows, W)
        cur_mask_ids[r0 : r0 + rows] = ids
        winner_fg[r0 : r0 + rows] = band.gather(0, ids[None])[0] >= 0.5
        original_area += (band >= 0.5).flatten(1).sum(1)
    flat_ids, flat_fg = cur_mask_ids.flatten(), winner_fg.flatten()
    mask_area = torch.bincount(flat_ids, minlength=n)  # pixels each query won
    final_area = torch.bincount(flat_ids[flat_fg], minlength=n)

    # Decide segment ids per query (a loop over at most Q scalars, in query order).
    segment_of_query = [0] * n
    stuff_memory: dict[int, int] = {}
    current_segment_id = 0
    for k, (pred_class, m_area, o_area, f_area) in enumerate(
        zip(cur_classes.tolist(), mask_area.tolist(), original_area.tolist(), final_area.tolist())
    ):
        isthing = pred_class in thing_ids
        if not (m_area > 0 and o_area > 0 and f_area > 0):
            continue
        if m_area / o_area < overlap_threshold:
            continue
        if not isthing:  # merge all segments of one stuff class
            if pred_class in stuff_memory:
                segment_of_query[k] = stuff_memory[pred_class]
                continue
            stuff_memory[pred_class] = current_segment_id + 1
        current_segment_id += 1
        segment_of_query[k] = current_segment_id
        segments_info.append(
            {"id": current_segment_id, "isthing": bool(isthing), "category_id": int(pred_class)}
        )

    lut = torch.tensor(segment_of_query, dtype=torch.int32, device=mask_prob.device)
    panoptic_seg = torch.where(winner_fg, lut[cur_mask_ids], panoptic_seg)
    return panoptic_seg, segments_info


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of binary (bool or 0/1 float) masks (N, H, W) -> (N, 4) float32;
    empty masks give zeros.

    Same convention as detectron2's `BitMasks.get_bounding_boxes` (x1, y1 exclusive: last + 1).
    """
    N, H, W = masks.shape
    if N == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    if masks.dtype == torch.bool:
        x_any = masks.any(dim=1)  # (N, W)
        y_any = masks.any(dim=2)  # (N, H)
    else:  # 0/1 float masks: float reductions are much faster than bool ones on the CPU
        x_any = masks.sum(dim=1) > 0
        y_any = masks.sum(dim=2) > 0
    xs = torch.arange(W, device=masks.device)
    ys = torch.arange(H, device=masks.device)
    x0 = torch.where(x_any, xs, W).amin(1)
    x1 = torch.where(x_any, xs, -1).amax(1) + 1
    y0 = torch.where(y_any, ys, H).amin(1)
    y1 = torch.where(y_any, ys, -1).amax(1) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    nonempty = x_any.any(1) & y_any.any(1)
    return boxes * nonempty[:, None]


class InstanceSelection(NamedTuple):
    """The top-k (query, class) pairs of one image, sorted by class probability."""

    scores: torch.Tensor  # (N,) class probabilities
    labels: torch.Tensor  # (N,) class indices
    queries: torch.Tensor  # (N,) query indices


def select_instances(
    mask_cls: torch.Tensor, *, num_classes: int, topk: int, thing_ids: set[int] | frozenset | None = None
) -> InstanceSelection:
    """Top-k (query, class) pairs of (Q, K+1) logits by class probability ("no object" excluded);
    with `thing_ids` (panoptic models) pairs of stuff classes are dropped afterwards."""
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]  # (Q, K)
    topk = min(topk, scores.numel())
    scores_per_image, topk_indices = scores.flatten(0, 1).topk(topk, sorted=True)
    labels = topk_indices % num_classes
    queries = topk_indices // num_classes
    if thing_ids is not None:
        things = torch.tensor(sorted(thing_ids), dtype=labels.dtype, device=labels.device)
        keep = torch.isin(labels, things)
        scores_per_image, labels, queries = scores_per_image[keep], labels[keep], queries[keep]
    return InstanceSelection(scores_per_image, labels, queries)


def binary_masks(mask_logits: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """(Q, H, W) mask logits, (N,) query indices -> (N, H, W) float32 masks `logit > 0` (0/1),
    written row by row straight from the logits (no bool temporary); a query that appears in
    several rows is thresholded once and copied."""
    out = torch.empty((queries.numel(), *mask_logits.shape[-2:]), dtype=torch.float32,
                      device=mask_logits.device)
    first_row = _first_rows(queries)
    for i, q in enumerate(queries.tolist()):
        if first_row[q] == i:
            torch.gt(mask_logits[q], 0, out=out[i])
        else:
            out[i].copy_(out[first_row[q]])
    return out


def _first_rows(queries: torch.Tensor) -> dict[int, int]:
    """Distinct query index -> the first row it appears in (in order of first appearance)."""
    first: dict[int, int] = {}
    for i, q in enumerate(queries.tolist()):
        first.setdefault(q, i)
    return first


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    num_classes: int,
    topk: int,
    thing_ids: set[int] | frozenset | None = None,
    mask_prob: torch.Tensor | None = None,
    selection: InstanceSelection | None = None,
    pred_masks: torch.Tensor | None = None,
) -> Instances:
    """Top-k (query, class) pairs by class probability (Sec. 4.1 "Post-processing").

    score = p(class) * mean mask probability inside the binary mask (logit > 0). With
    `thing_ids` (panoptic models), pairs of stuff classes are dropped. Masks are 0/1 float
    (H, W); boxes are the tight boxes of the binary masks. Instances are sorted by class
    probability. Precomputed pieces may be passed: `mask_prob` = sigmoid(mask_pred),
    `selection` = `select_instances(...)` and `pred_masks` = `binary_masks(mask_pred,
    selection.queries)` (this lets a caller threshold the logits, then take the sigmoid in
    place); `mask_pred` then only provides the shape.
    """
    image_size = mask_pred.shape[-2:]
    if selection is None:
        selection = select_instances(mask_cls, num_classes=num_classes, topk=topk, thing_ids=thing_ids)
    scores_per_image, labels_per_image, query_indices = selection
    if pred_masks is None:
        pred_masks = binary_masks(mask_pred, query_indices)  # (N, H, W) 0/1 float

    # Statistics once per distinct query u (its first output row r), gathered back to the N
    # rows: area, probability mass inside the mask, tight box.
    N = query_indices.numel()
    first_row = _first_rows(query_indices)
    slot = {q: u for u, q in enumerate(first_row)}  # distinct query -> its statistics' index
    inverse = torch.tensor([slot[q] for q in query_indices.tolist()], dtype=torch.long,
                           device=query_indices.device)
    area, inside, boxes = [], [], []
    for q, r in first_row.items():
        row = pred_masks[r].reshape(-1)
        prob_q = mask_prob[q] if mask_prob is not None else mask_pred[q].sigmoid()
        area.append(row.sum())
        inside.append(torch.dot(prob_q.reshape(-1).to(torch.float32), row))
        boxes.append(boxes_from_masks(pred_masks[r : r + 1])[0])
    if N == 0:
        mask_scores = torch.zeros(0, device=pred_masks.device)
        boxes = torch.zeros((0, 4), device=pred_masks.device)
    else:  # mean mask probability inside the binary mask
        mask_scores = (torch.stack(inside) / (torch.stack(area) + 1e-6))[inverse]
        boxes = torch.stack(boxes)[inverse]  # (N, 4)
    result = Instances(image_size)
    result.pred_masks = pred_masks  # (N, H, W) 0/1 float
    result.pred_boxes = Boxes(boxes)
    result.scores = scores_per_image * mask_scores
    result.pred_classes = labels_per_image
    return result
