"""Semantic segmentation metrics (mIoU, fwIoU, mACC, pACC, per-class IoU/ACC) on NumPy >= 1.24.

Same numbers as detectron2's `SemSegEvaluator` (http://cocodataset.org/#stuff-eval), and also:

* ground truth from 8-bit PNGs, 16-bit PNG/TIFF label files (ADE20K-full: `.tif`, ignore 65535),
  or, for records without `sem_seg_file_name`, computed from the panoptic PNG
  (`pan_seg_file_name` + `segments_info` with contiguous `category_id`, as detectron2's panoptic
  loaders produce): every segment's pixels get its class, everything else is `ignore_label`;
* clear errors for labels outside [0, K) that are not `ignore_label`, and for predictions whose
  size differs from the ground truth's;
* results gathered across processes with `all_gather` on the confusion matrix only.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import OrderedDict

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "MIOU_CONVENTIONS",
    "SemSegEvaluator",
    "load_semantic_gt",
    "read_label_file",
    "semseg_metrics",
]


def read_label_file(path: str) -> np.ndarray:
    """(H, W) int64 labels from an 8/16-bit PNG or TIFF (TIFF via tifffile when available)."""
    local = PathManager.get_local_path(path)
    if local.lower().endswith((".tif", ".tiff")):
        try:
            import tifffile

            arr = tifffile.imread(local)
        except ImportError:  # Pillow reads uncompressed 16-bit TIFFs too
            arr = np.asarray(Image.open(local))
    else:
        with Image.open(local) as img:
            arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(
            f"{path}: expected a single-channel label image (H, W), got shape {arr.shape}. "
            "Semantic ground truth must hold one class index per pixel (colour-coded label "
            "images have to be converted first, e.g. with the dataset's prepare_* script)."
        )
    return arr.astype(np.int64)


def load_semantic_gt(record: dict, ignore_label: int) -> np.ndarray:
    """(H, W) int64 semantic labels of one dataset record (see module docstring)."""
    if record.get("sem_seg_file_name"):
        return read_label_file(record["sem_seg_file_name"])
    if record.get("pan_seg_file_name") and "segments_info" in record:
        from ..data.datasets.panoptic import semantic_from_panoptic_record

        return semantic_from_panoptic_record(record, ignore_label).astype(np.int64)
    raise ValueError(
        f"record {record.get('file_name')!r} has neither 'sem_seg_file_name' nor "
        "'pan_seg_file_name' + 'segments_info': no semantic ground truth to evaluate against."
    )


MIOU_CONVENTIONS = ("v0.6", "gt_classes")


def check_miou_convention(miou_convention: str) -> str:
    if miou_convention not in MIOU_CONVENTIONS:
        raise ValueError(
            f"mIoU convention {miou_convention!r} (TEST.MIOU_CONVENTION): expected one of "
            f"{MIOU_CONVENTIONS}: 'v0.6' = detectron2 v0.6 and the paper (a class only predicted "
            "counts as IoU 0), 'gt_classes' = newer detectron2 (mean over classes with ground "
            "truth only)."
        )
    return miou_convention


def semseg_metrics(
    conf: np.ndarray, class_names: list[str], miou_convention: str = "v0.6"
) -> OrderedDict[str, float]:
    """Metrics (in %) from a (K, K) confusion matrix `conf[pred, gt]` of valid pixels.

    Same conventions as detectron2 v0.6: per-class IoU/ACC is NaN for classes absent from the
    ground truth; mIoU averages over classes present in the ground truth *or* the prediction (a
    class only predicted counts as IoU 0); fwIoU weights by ground-truth frequency. With
    `miou_convention="gt_classes"` mIoU averages over classes present in the ground truth only
    (detectron2 after v0.6).
    """
    check_miou_convention(miou_convention)
    tp = conf.diagonal().astype(float)
    pos_gt = conf.sum(axis=0).astype(float)
    pos_pred = conf.sum(axis=1).astype(float)
    k = len(class_names)
    acc = np.full(k, np.nan)
    iou = np.full(k, np.nan)
    acc_valid = pos_gt > 0
    iou_valid = acc_valid if miou_convention == "gt_classes" else (pos_gt + pos_pred) > 0
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    union = pos_gt + pos_pred - tp
    iou[acc_valid] = tp[acc_valid] / union[acc_valid]
    total = pos_gt.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        macc = np.sum(acc[acc_valid]) / np.sum(acc_valid) if acc_valid.any() else np.nan
        miou = np.sum(iou[acc_valid]) / np.sum(iou_valid) if iou_valid.any() else np.nan
        fiou = np.sum(iou[acc_valid] * pos_gt[acc_valid] / total) if total else np.nan
        pacc = tp.sum() / total if total else np.nan
    res = OrderedDict()
    res["mIoU"] = 100 * miou
    res["fwIoU"] = 100 * fiou
    for i, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100 * iou[i]
    res["mACC"] = 100 * macc
    res["pACC"] = 100 * pacc
    for i, name in enumerate(class_names):
        res[f"ACC-{name}"] = 100 * acc[i]
    return res


class SemSegEvaluator(DatasetEvaluator):
    """mIoU, fwIoU, mACC, pACC and per-class IoU/ACC from `output["sem_seg"]` (K, H, W) scores.

    `miou_convention` ("v0.6" or "gt_classes", see `semseg_metrics`) decides which classes the
    mean IoU averages over. Metadata used: `stuff_classes` (K names), `ignore_label`, and optionally
    `stuff_dataset_id_to_contiguous_id` (for the dataset ids written to
    `sem_seg_predictions.json`, which `tools/evaluate_pq_for_semantic_segmentation.py` reads).
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        dataset_records: list[dict] | None = None,
        save_predictions_json: bool = True,
        miou_convention: str = "v0.6",
    ):
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._save_json = save_predictions_json
        self._miou_convention = check_miou_convention(miou_convention)
        meta = MetadataCatalog.get(dataset_name)
        missing = [k for k in ("stuff_classes", "ignore_label") if not hasattr(meta, k)]
        if missing:
            raise ValueError(
                f"SemSegEvaluator({dataset_name!r}): metadata lacks {missing}; register the "
                "dataset with stuff_classes=[...] (one name per class index) and ignore_label."
            )
        self._class_names = list(meta.stuff_classes)
        self._num_classes = len(self._class_names)
        self._ignore_label = int(meta.ignore_label)
        c2d = getattr(meta, "stuff_dataset_id_to_contiguous_id", None)
        self._contiguous_id_to_dataset_id = {v: k for k, v in c2d.items()} if c2d else None
        records = (
            dataset_records if dataset_records is not None else DatasetCatalog.get(dataset_name)
        )
        self._records = {r["file_name"]: r for r in records}

    def reset(self):
        k = self._num_classes
        self._conf_matrix = np.zeros((k, k), dtype=np.int64)
        self._predictions = []

    def process(self, inputs, outputs):
        k = self._num_classes
        for inp, out in zip(inputs, outputs):
            pred = out["sem_seg"].argmax(dim=0).to(torch.device("cpu")).numpy().astype(np.int64)
            record = self._records.get(inp["file_name"])
            if record is None:
                raise KeyError(
                    f"{inp['file_name']} is not an image of dataset {self._dataset_name!r}"
                )
            gt = load_semantic_gt(record, self._ignore_label)
            if gt.shape != pred.shape:
                raise ValueError(
                    f"{inp['file_name']}: prediction is {tuple(pred.shape)} but the ground truth "
                    f"is {tuple(gt.shape)}; the model must return sem_seg at the input's "
                    "'height' x 'width' (the original image size)."
                )
            valid = gt != self._ignore_label
            bad = valid & ((gt < 0) | (gt >= k))
            if bad.any():
                raise ValueError(
                    f"{record.get('sem_seg_file_name') or record.get('pan_seg_file_name')}: "
                    f"labels {np.unique(gt[bad])[:10].tolist()} are outside [0, {k}) and are not "
                    f"ignore_label={self._ignore_label}. Fix the dataset's ignore_label or its "
                    "label files (they must hold contiguous class indices)."
                )
            self._conf_matrix += np.bincount(k * pred[valid] + gt[valid], minlength=k * k).reshape(
                k, k
            )
            if self._save_json and self._output_dir:
                self._predictions.extend(self.encode_json_sem_seg(pred, inp["file_name"]))

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            conf = comm.all_gather(self._conf_matrix)
            preds = comm.gather(self._predictions)
            if not comm.is_main_process():
                return None
            self._conf_matrix = np.sum(conf, axis=0)
            self._predictions = list(itertools.chain(*preds))

        if self._output_dir and self._save_json:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "sem_seg_predictions.json")
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(self._predictions))

        res = semseg_metrics(self._conf_matrix, self._class_names, self._miou_convention)
        if self._output_dir:
            path = os.path.join(self._output_dir, "sem_seg_evaluation.pth")
            with PathManager.open(path, "wb") as f:
                torch.save(dict(res), f)
        results = OrderedDict({"sem_seg": res})
        logger.info(
            f"Semantic segmentation on {self._dataset_name}: mIoU {res['mIoU']:.2f}, "
            f"fwIoU {res['fwIoU']:.2f}, mACC {res['mACC']:.2f}, pACC {res['pACC']:.2f}"
        )
        return results

    def encode_json_sem_seg(self, sem_seg: np.ndarray, input_file_name: str) -> list[dict]:
        """One COCO-stuff-format RLE per predicted class (category_id = dataset id)."""
        out = []
        for label in np.unique(sem_seg):
            label = int(label)
            if self._contiguous_id_to_dataset_id is not None:
                if label not in self._contiguous_id_to_dataset_id:
                    raise ValueError(
                        f"predicted class {label} is not in stuff_dataset_id_to_contiguous_id of "
                        f"{self._dataset_name!r}"
                    )
                dataset_id = self._contiguous_id_to_dataset_id[label]
            else:
                dataset_id = label
            rle = mask_util.encode(np.asfortranarray((sem_seg == label).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("utf-8")
            out.append(
                {"file_name": input_file_name, "category_id": dataset_id, "segmentation": rle}
            )
        return out
