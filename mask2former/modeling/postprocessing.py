"""Inference: turn (class logits, mask logits) pairs into semantic, panoptic and instance outputs.

Semantics follow the published implementation exactly (upstream_inventory.md Sec. 9; the paper's
Sec. 4.1 "Post-processing"), with two improvements: every step is vectorised over queries (no
per-segment pass over the image), and instances get real boxes computed from their masks.

Per image: `upsample_masks` to the padded input, `masks_at_output_size` (crop the padding, resize
to the output size), then one sigmoid shared by `semantic_inference`, `panoptic_inference` and
`instance_inference` (whose `select_instances` and `binary_masks` read the logits, before the
sigmoid). Functions that make a full-size tensor take `buffers`, the one place CPU memory is
reused (`CpuBuffers`).

Shapes: Q queries, K classes (the last of the K+1 logits is "no object"), (H, W) output size.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Boxes, Instances

from ..utils.output_pool import OutputPool


class CpuBuffers:
    """Memory for the full-size CPU tensors of post-processing, reused from image to image.

    The upsampled mask logits (Q, Hp, Wp), the semantic scores (K, H, W) and the instance masks
    (N, H, W) are several hundred MB each at COCO sizes. A fresh CPU allocation that large is
    mapped page by page on first write, which costs about as much as computing it. Each comes
    from an `OutputPool`, which hands a tensor's memory out again only once nothing uses it any
    more (intermediates are dropped at the end of each image; outputs when the caller drops
    them). CUDA has its own caching allocator, and out= ops do not record gradients: `empty`
    returns None there, and the op allocates its result itself.
    """

    def __init__(self):
        self.pool = OutputPool()

    def empty(self, like: torch.Tensor, shape, dtype: torch.dtype | None = None):
        """Uninitialised (shape) tensor on `like`'s CPU, or None (off the CPU, or with grad)."""
        if like.device.type != "cpu" or like.requires_grad:
            return None
        return self.pool.empty(shape, dtype or like.dtype)

    def begin_round(self) -> None:
        """One call per forward: caps the memory kept at what the latest forward used."""
        self.pool.begin_round()

    def clear(self) -> None:
        """Give the kept memory back (tensors still in use are unaffected)."""
        self.pool.clear()


def _empty(buffers: CpuBuffers | None, like: torch.Tensor, shape, dtype=None):
    return buffers.empty(like, shape, dtype) if buffers is not None else None


def _bilinear_into(x: torch.Tensor, size, out: torch.Tensor) -> torch.Tensor:
    """(C, h, w) -> (C, *size) into `out`: F.interpolate's bilinear, align_corners=False."""
    return torch.ops.aten.upsample_bilinear2d.out(
        x[None], list(size), False, None, None, out=out[None]
    )[0]


def upsample_masks(
    mask_logits: torch.Tensor, size, buffers: CpuBuffers | None = None
) -> torch.Tensor:
    """(Q, h, w) mask logits -> (Q, *size) (the padded input size), bilinear."""
    out = _empty(buffers, mask_logits, (mask_logits.shape[0], *size))
    if out is None:
        return F.interpolate(mask_logits[None], size=size, mode="bilinear", align_corners=False)[0]
    return _bilinear_into(mask_logits, size, out)


def crop_and_resize(
    x: torch.Tensor, image_size, output_size, buffers: CpuBuffers | None = None
) -> torch.Tensor:
    """detectron2's `sem_seg_postprocess`: crop the padding of (C, Hp, Wp) to `image_size`,
    resize bilinearly to (C, *output_size). An identity resize is skipped (same result): the
    crop, a view, is returned."""
    crop = x[:, : image_size[0], : image_size[1]]
    if tuple(image_size) == tuple(output_size):
        return crop
    out = _empty(buffers, x, (x.shape[0], *output_size))
    if out is None:
        return sem_seg_postprocess(x, image_size, *output_size)
    return _bilinear_into(crop, output_size, out)


def masks_at_output_size(
    mask_logits: torch.Tensor, image_size, output_size, buffers: CpuBuffers | None = None
) -> torch.Tensor:
    """(Q, Hp, Wp) -> (Q, *output_size) by `crop_and_resize`, made contiguous (as the published
    resize always returns: the semantic fusion's summation order depends on it)."""
    masks = crop_and_resize(mask_logits, image_size, output_size, buffers)
    if masks.is_contiguous():
        return masks
    out = _empty(buffers, masks, masks.shape)
    return out.copy_(masks) if out is not None else masks.contiguous()


def semantic_inference(
    mask_cls: torch.Tensor, mask_prob: torch.Tensor, buffers: CpuBuffers | None = None
) -> torch.Tensor:
    """Sum over queries of p(class) * p(pixel in mask) (MaskFormer's semantic fusion).

    mask_cls (Q, K+1) logits, mask_prob (Q, H, W) mask probabilities (the sigmoid of the mask
    logits). Returns (K, H, W) unnormalised per-class scores.
    """
    cls_prob = F.softmax(mask_cls, dim=-1)[..., :-1]  # (Q, K), "no object" dropped
    out = _empty(buffers, mask_prob, (cls_prob.shape[-1], *mask_prob.shape[-2:]))
    if out is None:
        return torch.einsum("qc,qhw->chw", cls_prob, mask_prob)
    # The same product as the einsum (K, Q) @ (Q, H*W), written in place.
    torch.mm(
        cls_prob.t(), mask_prob.reshape(mask_prob.shape[0], -1), out=out.view(out.shape[0], -1)
    )
    return out


# Elements of the (n, rows, W) band temporaries of `panoptic_inference` on the CPU (1 M = 4 MB).
_PANOPTIC_BAND_ELEMENTS = 1 << 20
_EXACT_FLOAT_COUNT = 1 << 24  # float32 holds every whole number up to this exactly


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_prob: torch.Tensor,
    *,
    num_classes: int,
    thing_ids: set[int] | frozenset,
    object_mask_threshold: float,
    overlap_threshold: float,
) -> tuple[torch.Tensor, list[dict]]:
    """Non-overlapping segments from the confident queries of (Q, K+1) class logits and
    (Q, H, W) mask probabilities.

    Keep queries whose best class is not "no object" and whose probability exceeds
    `object_mask_threshold`; each pixel goes to the kept query with the highest
    score * mask probability; a query's segment is its pixels where its own mask probability
    is >= 0.5, dropped when (pixels it won) / (pixels of its mask) < `overlap_threshold`; all
    segments of one stuff class merge into one. Segment ids start at 1 (0 = void).

    Returns (panoptic_seg (H, W) int32, segments_info [{"id", "isthing", "category_id"}]).
    """
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)  # (Q,), (Q,)
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
    # ties) and whether the winner's own probability is >= 0.5, stored as one code
    # 2 * winner + foreground; per kept query: its mask area. Computed in bands of rows so that
    # the (n, rows, W) temporaries stay small and cache-hot instead of an (n, H, W) copy; the
    # results are those of the whole-image computation.
    device = mask_prob.device
    rows = max(1, _PANOPTIC_BAND_ELEMENTS // (n * w)) if device.type == "cpu" else h
    rows = max(1, min(rows, _EXACT_FLOAT_COUNT // w))  # float pixel counts per band stay exact
    code = torch.empty((h, w), dtype=torch.long, device=device)
    original_area = torch.zeros(n, dtype=torch.long, device=device)
    band_buf = torch.empty((n, min(rows, h), w), dtype=mask_prob.dtype, device=device)
    scratch = torch.empty((n, min(rows, h), w), dtype=torch.float32, device=device)
    for r0 in range(0, h, rows):
        rb = min(rows, h - r0)
        band = torch.index_select(
            mask_prob[:, r0 : r0 + rb], 0, kept, out=band_buf[:, :rb]
        )  # (n, rb, W)
        original_area += torch.ge(band, 0.5, out=scratch[:, :rb]).sum((1, 2)).long()
        # max(0).indices = argmax(0) (first maximum on ties, documented for both), and on the
        # CPU about 2.5x faster for a reduction over the leading dimension.
        prod = scratch[:, :rb] if band.dtype == scratch.dtype else None  # products in band's dtype
        ids = torch.mul(band, cur_scores.view(-1, 1, 1), out=prod).max(0).indices  # (rb, W)
        torch.add(band.gather(0, ids[None])[0] >= 0.5, ids, alpha=2, out=code[r0 : r0 + rb])
    counts = torch.bincount(code.flatten(), minlength=2 * n).view(
        n, 2
    )  # (won & < 0.5, won & >= 0.5)
    mask_area = counts.sum(1)  # pixels each query won
    final_area = counts[:, 1]  # ... where its own probability is >= 0.5

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

    lut = torch.zeros((n, 2), dtype=torch.int32, device=device)  # code -> segment id (0: void)
    lut[:, 1] = torch.tensor(segment_of_query, dtype=torch.int32, device=device)
    return lut.flatten()[code], segments_info


def _boxes_from_extent(x_any: torch.Tensor, y_any: torch.Tensor) -> torch.Tensor:
    """(N, W) columns and (N, H) rows holding mask pixels -> (N, 4) float32 tight XYXY boxes;
    empty masks give zeros. Same convention as detectron2's `BitMasks.get_bounding_boxes` (x1, y1
    exclusive: last + 1)."""
    N, W = x_any.shape
    H = y_any.shape[1]
    if N == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=x_any.device)
    xs = torch.arange(W, device=x_any.device)
    ys = torch.arange(H, device=x_any.device)
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
    mask_cls: torch.Tensor,
    *,
    num_classes: int,
    topk: int,
    thing_ids: set[int] | frozenset | None = None,
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


class BinaryMasks(NamedTuple):
    """Thresholded masks of selected queries, with the extent of each distinct query's mask."""

    masks: torch.Tensor  # (N, H, W) 0/1 float, one row per selected (query, class) pair
    first_rows: dict[int, int]  # distinct query -> its first row in `masks` (first-seen order)
    row_counts: torch.Tensor  # (U, H) mask pixels per image row, one line per distinct query
    col_counts: torch.Tensor  # (U, W) mask pixels per image column


def binary_masks(
    mask_logits: torch.Tensor, queries: torch.Tensor, buffers: CpuBuffers | None = None
) -> BinaryMasks:
    """(Q, H, W) mask logits, (N,) query indices -> (N, H, W) float32 masks `logit > 0` (0/1),
    written row by row straight from the logits (no bool temporary). A query that appears in
    several rows is thresholded once and copied; its pixel counts per image row and column are
    taken right after, while its mask is still in cache."""
    H, W = mask_logits.shape[-2:]
    out = _empty(buffers, mask_logits, (queries.numel(), H, W), torch.float32)
    if out is None:
        out = torch.empty((queries.numel(), H, W), dtype=torch.float32, device=mask_logits.device)
    first_rows = _first_rows(queries)
    row_counts = out.new_empty((len(first_rows), H))
    col_counts = out.new_empty((len(first_rows), W))
    u = 0  # index of the next distinct query
    for i, q in enumerate(queries.tolist()):
        r = first_rows[q]
        if r < i:
            out[i].copy_(out[r])
            continue
        torch.gt(mask_logits[q], 0, out=out[i])
        torch.sum(out[i], dim=1, out=row_counts[u])
        torch.sum(out[i], dim=0, out=col_counts[u])
        u += 1
    return BinaryMasks(out, first_rows, row_counts, col_counts)


def _first_rows(queries: torch.Tensor) -> dict[int, int]:
    """Distinct query index -> the first row it appears in (in order of first appearance)."""
    first: dict[int, int] = {}
    for i, q in enumerate(queries.tolist()):
        first.setdefault(q, i)
    return first


def instance_inference(
    mask_prob: torch.Tensor, selection: InstanceSelection, binary: BinaryMasks
) -> Instances:
    """Instances of the top-k (query, class) pairs (Sec. 4.1 "Post-processing").

    mask_prob (Q, H, W) mask probabilities; `selection` = `select_instances(...)` and `binary` =
    `binary_masks(mask logits, selection.queries)` (taken from the logits, `logit > 0`, before
    a caller replaces them by their sigmoid in place). score = p(class) * mean mask probability
    inside the binary mask. Masks are 0/1 float (N, H, W); boxes are the tight boxes of the
    binary masks. Instances are sorted by class probability.
    """
    scores_per_image, labels_per_image, query_indices = selection
    pred_masks, first_rows, row_counts, col_counts = binary

    # Statistics once per distinct query u (its first output row r), gathered back to the N
    # rows: area and tight box from the pixel counts, probability mass inside the mask.
    slot = {q: u for u, q in enumerate(first_rows)}  # distinct query -> its statistics' index
    inverse = torch.tensor(
        [slot[q] for q in query_indices.tolist()], dtype=torch.long, device=query_indices.device
    )
    inside = pred_masks.new_zeros(len(first_rows))  # (U,)
    for u, (q, r) in enumerate(first_rows.items()):
        prob_q = mask_prob[q].reshape(-1).to(torch.float32)
        inside[u] = torch.dot(prob_q, pred_masks[r].reshape(-1))
    area = row_counts.sum(1)  # whole numbers: exact in float32, in any order, below 2**24 pixels
    mask_scores = inside / (area + 1e-6)  # mean mask probability inside the binary mask
    boxes = _boxes_from_extent(col_counts > 0, row_counts > 0)  # (U, 4)
    result = Instances(mask_prob.shape[-2:])
    result.pred_masks = pred_masks  # (N, H, W) 0/1 float
    result.pred_boxes = Boxes(boxes[inverse])
    result.scores = scores_per_image * mask_scores[inverse]
    result.pred_classes = labels_per_image
    return result
