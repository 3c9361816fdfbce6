"""PQ of a semantic segmentation model: every class present in an image is one segment.

What `tools/evaluate_pq_for_semantic_segmentation.py` computes from the `sem_seg_predictions.json`
that `SemSegEvaluator` writes. The matching follows panopticapi (PQ, Kirillov et al. 2019): a
predicted and a ground-truth segment of the same class match if IoU > 0.5, where the prediction's
pixels on VOID (`ignore_label`) are removed from the union; an unmatched prediction lying more
than half on VOID is not a false positive. All classes count as stuff, so "All" = "Stuff". mIoU
and the other semantic metrics are computed from the same predictions.
"""

from __future__ import annotations

import json
from collections import OrderedDict, defaultdict

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog

from .panoptic_evaluation import pq_from_stat
from .sem_seg_evaluation import load_semantic_gt, semseg_metrics

__all__ = ["semantic_pq", "semantic_pq_stat", "decode_sem_seg_predictions"]


def semantic_pq_stat(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int, stat):
    """Add one image's PQ statistics (panopticapi `PQStat`, keyed by class) to `stat`."""
    void = (gt == ignore_label) | (gt < 0) | (gt >= num_classes)
    for c in np.union1d(np.unique(gt[~void]), np.unique(pred)):
        c = int(c)
        g = (gt == c) & ~void
        p = pred == c
        g_area, p_area = int(g.sum()), int(p.sum())
        inter = int((g & p).sum())
        p_void = int((p & void).sum())
        if g_area and p_area:
            iou = inter / (p_area + g_area - inter - p_void)
            if iou > 0.5:
                stat[c].tp += 1
                stat[c].iou += iou
                continue
        if g_area:
            stat[c].fn += 1
        if p_area and p_void / p_area <= 0.5:
            stat[c].fp += 1


def decode_sem_seg_predictions(
    predictions: list[dict], dataset_id_to_contiguous: dict | None
) -> dict[str, np.ndarray]:
    """sem_seg_predictions.json entries -> {file_name: (H, W) int64 labels (-1 = no class)}."""
    by_file = defaultdict(list)
    for p in predictions:
        by_file[p["file_name"]].append(p)
    out = {}
    for file_name, entries in by_file.items():
        h, w = entries[0]["segmentation"]["size"]
        sem = np.full((h, w), -1, dtype=np.int64)
        for e in entries:
            c = e["category_id"]
            if dataset_id_to_contiguous is not None:
                c = dataset_id_to_contiguous[c]
            sem[mask_util.decode(e["segmentation"]).astype(bool)] = c
        out[file_name] = sem
    return out


def semantic_pq(
    dataset_name: str, predictions: list[dict] | str, miou_convention: str = "v0.6"
) -> OrderedDict[str, dict]:
    """{"panoptic_seg": PQ/SQ/RQ (+ per class), "sem_seg": mIoU etc.} of a semantic model
    (`miou_convention`: see `semseg_metrics`).

    `predictions` is the content (or path) of `sem_seg_predictions.json`; the dataset's records
    give the ground truth (`sem_seg_file_name`, or the panoptic PNG, see `load_semantic_gt`).
    """
    from panopticapi.evaluation import PQStat

    if isinstance(predictions, str):
        with open(predictions) as f:
            predictions = json.load(f)
    meta = MetadataCatalog.get(dataset_name)
    names = list(meta.stuff_classes)
    k = len(names)
    ignore = int(meta.ignore_label)
    d2c = getattr(meta, "stuff_dataset_id_to_contiguous_id", None)
    preds = decode_sem_seg_predictions(predictions, d2c)
    records = {r["file_name"]: r for r in DatasetCatalog.get(dataset_name)}
    unknown = [f for f in preds if f not in records]
    if unknown:
        raise ValueError(f"predictions for images not in {dataset_name!r}, e.g. {unknown[:3]}")
    stat = PQStat()
    conf = np.zeros((k, k), dtype=np.int64)
    for file_name, pred in preds.items():
        gt = load_semantic_gt(records[file_name], ignore)
        if gt.shape != pred.shape:
            raise ValueError(f"{file_name}: prediction {pred.shape} vs ground truth {gt.shape}")
        semantic_pq_stat(gt, pred, k, ignore, stat)
        valid = (gt != ignore) & (pred >= 0)
        conf += np.bincount(k * pred[valid] + gt[valid], minlength=k * k).reshape(k, k)
    categories = {i: {"isthing": 0} for i in range(k)}
    summary, per_class = pq_from_stat(stat, categories, None)
    pq = OrderedDict((m.upper(), 100 * summary[m]) for m in ("pq", "sq", "rq"))
    pq["PQ_st"], pq["SQ_st"], pq["RQ_st"] = pq["PQ"], pq["SQ"], pq["RQ"]
    for i, name in enumerate(names):
        pq[f"PQ-{name}"] = 100 * per_class[i]["pq"]
    return OrderedDict(
        [("panoptic_seg", pq), ("sem_seg", semseg_metrics(conf, names, miou_convention))]
    )
