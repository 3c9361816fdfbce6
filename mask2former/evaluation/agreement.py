"""Do two runs of a model predict the same things? Per-image agreement of two results.

Compares two `MaskFormer` results for one image (dicts with "sem_seg", "panoptic_seg",
"instances", as the model returns them): the reference (usually fp32 eager) and another run of the
same weights (bf16 inference, an exported graph). Used by tools/check_precision.py and, through
`mask2former.deploy.verify`, by tools/deploy/verify_export.py.

Instances are compared by what a user of the ranked list sees, not by an exact ordering: the
detections of either run with score >= `min_score` among its `top_k` must each have a partner of
the same class in the other run's `top_k` (greedy, in score order, by mask IoU). Below that score
the ranking of a Mask2Former is a long tail of near-equal probabilities (K+1-way softmax times a
mask score; a 20-query demo model has most of its top 20 under 0.01) whose order a rounding
difference of 1e-3 changes; `strict_classes_equal` also reports the exact top-k class sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "headline_metrics",
    "instance_agreement",
    "InstanceAgreement",
    "panoptic_agreement",
    "panoptic_categories",
    "pooled_iou",
    "print_metrics",
    "print_verdict",
    "semantic_agreement",
]


def panoptic_categories(panoptic_seg: tuple[torch.Tensor, list[dict]]) -> torch.Tensor:
    """(segment-id map (H, W), segments_info) -> (H, W) int64: category id + 1, 0 where void."""
    seg_map, segments = panoptic_seg
    lut = torch.zeros(max([s["id"] for s in segments], default=0) + 1, dtype=torch.int64)
    for s in segments:
        lut[s["id"]] = s["category_id"] + 1
    return lut[seg_map.long()]


def semantic_agreement(a: dict, b: dict) -> float:
    """Share of pixels where the "sem_seg" (C, H, W) scores of both results have the same argmax."""
    return float((a["sem_seg"].argmax(0) == b["sem_seg"].argmax(0)).float().mean())


def panoptic_agreement(a: dict, b: dict) -> float:
    """Share of pixels with the same panoptic category (void counts as a category)."""
    same = panoptic_categories(a["panoptic_seg"]) == panoptic_categories(b["panoptic_seg"])
    return float(same.float().mean())


@dataclass
class InstanceAgreement:
    """Instance agreement of one image (see the module docstring).

    Attributes:
        classes_equal: every detection with score >= min_score in either run found a partner of
            its class in the other run's top k.
        overlaps: (intersection, union) in pixels of each reference detection with score >=
            min_score and its partner ((0, its area) where it has none), in score order.
        unmatched: detections with score >= min_score, in either run, without a partner.
        strict_classes_equal: the top-k class sequences, in score order, are identical.
    """

    classes_equal: bool
    overlaps: list[tuple[int, int]]
    unmatched: int
    strict_classes_equal: bool

    @property
    def ious(self) -> list[float]:
        """Mask IoU per entry of `overlaps` (1.0 for two empty masks)."""
        return [i / u if u else 1.0 for i, u in self.overlaps]


def pooled_iou(overlaps: list[tuple[int, int]]) -> float:
    """Sum of intersections / sum of unions: each pixel counts once, so a 9-pixel mask that loses
    two pixels weighs as little as it covers. 1.0 when there is nothing to compare."""
    union = sum(u for _, u in overlaps)
    return sum(i for i, _ in overlaps) / union if union else 1.0


def _top(instances, top_k: int):
    order = instances.scores.argsort(descending=True, stable=True)[:top_k]
    masks = instances.pred_masks[order].bool().flatten(1)
    return instances.pred_classes[order], instances.scores[order], masks


def _match(
    classes: torch.Tensor, scores: torch.Tensor, masks: torch.Tensor, other, min_score: float
) -> list[tuple[int, int] | None]:
    """(intersection, union) of each detection with score >= min_score (in order) with its
    partner in `other` (classes, masks): the unused detection of the same class with the largest
    IoU; None when there is none."""
    o_classes, o_masks = other
    used = torch.zeros(len(o_classes), dtype=torch.bool)
    pairs = []
    for c, s, m in zip(classes.tolist(), scores.tolist(), masks):
        if s < min_score:
            continue
        candidates = (o_classes == c) & ~used
        if not candidates.any():
            pairs.append(None)
            continue
        inter = (o_masks & m).sum(1)
        union = (o_masks | m).sum(1)
        iou = torch.where(union > 0, inter.double() / union.clamp(min=1), 1.0)  # two empty: same
        iou[~candidates] = -1.0
        best = int(iou.argmax())
        used[best] = True
        pairs.append((int(inter[best]), int(union[best])))
    return pairs


def instance_agreement(
    a: dict, b: dict, top_k: int = 20, min_score: float = 0.1
) -> InstanceAgreement:
    """Agreement of the "instances" of reference `a` and `b` (Instances with scores,
    pred_classes, pred_masks (N, H, W)); see `InstanceAgreement`."""
    ca, sa, ma = _top(a["instances"], top_k)
    cb, sb, mb = _top(b["instances"], top_k)
    forward = _match(ca, sa, ma, (cb, mb), min_score)
    backward = _match(cb, sb, mb, (ca, ma), min_score)
    unmatched = sum(pair is None for pair in forward + backward)
    areas = ma[sa >= min_score].sum(1).tolist()
    return InstanceAgreement(
        classes_equal=unmatched == 0,
        overlaps=[pair or (0, max(area, 1)) for pair, area in zip(forward, areas)],
        unmatched=unmatched,
        strict_classes_equal=torch.equal(ca, cb),
    )


def headline_metrics(results: dict) -> dict[str, float]:
    """{"panoptic_seg PQ": ..., "segm AP": ..., "sem_seg mIoU": ...} from evaluator results:
    PQ/SQ/RQ, AP/AP50 and mIoU of the tasks present."""
    wanted = {"panoptic_seg": ("PQ", "SQ", "RQ"), "segm": ("AP", "AP50"), "sem_seg": ("mIoU",)}
    return {
        f"{task} {key}": float(results[task][key])
        for task, keys in wanted.items()
        if task in results
        for key in keys
        if key in results[task]
    }


def print_metrics(reference: dict[str, float], other: dict[str, float], names: tuple[str, str]):
    """Print `headline_metrics` of two runs side by side (columns titled by `names`)."""
    print(f"\n  {'metric':<24} {names[0]:>9} {names[1]:>9}")
    for key, value in reference.items():
        print(f"  {key:<24} {value:>9.2f} {other.get(key, float('nan')):>9.2f}")


def print_verdict(failed: list[str]) -> int:
    """Print each failed check (or that all passed); return the exit status (1 if any failed)."""
    for line in failed:
        print(f"FAILED: {line}")
    if not failed:
        print("OK: every check passed")
    return 1 if failed else 0
