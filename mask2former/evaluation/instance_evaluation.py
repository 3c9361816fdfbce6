"""COCO-style instance AP for any dataset (category ids need not be 0..N-1), plus Boundary AP.

Detectron2's `COCOEvaluator` asserts that `thing_dataset_id_to_contiguous_id` maps onto exactly
0..N-1 *and* that predicted classes index it; ADE20K-instance (ids 7, 8, 10, ...) and Mapillary
keep their own ids. `InstanceSegEvaluator` reverse-maps contiguous -> dataset ids through the
metadata, checks membership only, and optionally adds a "boundary" task (Boundary AP, see
`boundary.py`). Box and mask AP are computed with faster-coco-eval when installed (it is a
dependency; same numbers as pycocotools, see `coco_backend.py`), else detectron2's compiled
COCOeval_opt if present, else pycocotools; the log says which. Per-class AP is named by category
id through the metadata (`thing_names_by_category_id`), never by position.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
from collections import Counter

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.file_io import PathManager
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from .boundary import BOUNDARY_IOU_MODES
from .coco_backend import choose_backend, describe, evaluate_on_coco

_SAID_NO_FAST_EVAL = []


def thing_names_by_category_id(metadata, coco_api) -> dict[int, str]:
    """{dataset category id: class name} for every category of the ground-truth COCO json.

    The name comes from the metadata through `thing_dataset_id_to_contiguous_id`: `thing_classes`
    either lists the thing classes only, in contiguous-id order (panoptic registrations, custom
    instance datasets), or every class indexed by contiguous id (Mapillary, detectron2's
    "standard" panoptic metadata). A category the metadata does not know keeps the json's name.
    Never by position: COCOeval orders categories by id, `thing_classes` need not be. A name
    that several categories share gets its id, "car (id 3)", so that no "AP-<name>" result
    overwrites another.
    """
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None) or {}
    classes = list(metadata.get("thing_classes", None) or [])
    contiguous = sorted(set(mapping.values()))
    if classes and len(classes) == len(contiguous):  # things only, in contiguous order
        index = {c: i for i, c in enumerate(contiguous)}
    elif contiguous and len(classes) > contiguous[-1]:  # indexed by contiguous id
        index = {c: c for c in contiguous}
    else:
        index = {}
    names = {}
    for cat in coco_api.loadCats(coco_api.getCatIds()):
        contiguous_id = mapping.get(cat["id"])
        names[cat["id"]] = (
            classes[index[contiguous_id]] if contiguous_id in index else str(cat["name"])
        )
    shared = {n for n, count in Counter(names.values()).items() if count > 1}
    return {i: f"{n} (id {i})" if n in shared else n for i, n in names.items()}


def fast_coco_eval_available() -> bool:
    """Whether detectron2's compiled fast COCOeval (`_C`) is installed; says once if it is not.

    (`InstanceSegEvaluator` gets the same fallback from detectron2's `COCOEvaluator`.)"""
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        if not _SAID_NO_FAST_EVAL:
            _SAID_NO_FAST_EVAL.append(True)
            logging.getLogger(__name__).warning(
                "detectron2's compiled fast COCO evaluation is not installed; using the official "
                "pycocotools COCOeval (same numbers, slower)."
            )
        return False
    return True


class InstanceSegEvaluator(COCOEvaluator):
    """COCO AP ("bbox", "segm" and, with `boundary_ap=True`, "boundary") for datasets whose
    metadata has `json_file` (COCO-format GT; without it, but with `panoptic_json` and
    `panoptic_root`, the GT is derived from the panoptic annotations) and
    `thing_dataset_id_to_contiguous_id`.

    Predictions are `output["instances"]` (pred_masks (N, H, W), pred_boxes, scores,
    pred_classes contiguous). Metrics are in [0, 100]; with no predictions at all AP is 0 where
    there is ground truth (and NaN where there is none), instead of detectron2's NaN everywhere.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks=None,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        max_dets_per_image: int | None = None,
        use_fast_impl: bool = True,
        boundary_ap: bool = False,
        dilation_ratio: float = 0.02,
        boundary_iou_mode: str = "min",
    ):
        if boundary_iou_mode not in BOUNDARY_IOU_MODES:
            raise ValueError(
                f"boundary_iou_mode={boundary_iou_mode!r}: expected one of {BOUNDARY_IOU_MODES}"
            )
        meta = MetadataCatalog.get(dataset_name)
        if not hasattr(meta, "json_file") and hasattr(meta, "panoptic_json"):
            # No instance json (e.g. Mapillary Vistas): the thing segments of the panoptic
            # annotations, instead of detectron2's conversion of the records (no instances).
            from ..data.datasets.panoptic import instances_json_from_panoptic

            meta.json_file = instances_json_from_panoptic(meta.panoptic_json, meta.panoptic_root)
        self._backend = choose_backend(use_fast_impl)
        super().__init__(
            dataset_name,
            tasks=tasks,
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
            use_fast_impl=self._backend == "detectron2",
        )
        self._dataset_name = dataset_name
        self._boundary_ap = boundary_ap
        self._dilation_ratio = dilation_ratio
        self._boundary_iou_mode = boundary_iou_mode

    # ---- category ids ---------------------------------------------------------------------
    def _reverse_map(self, coco_results: list[dict]) -> None:
        """Contiguous class -> dataset category id, in place, with a clear error if unknown."""
        mapping = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if mapping is None:
            return
        reverse = {v: k for k, v in mapping.items()}
        for result in coco_results:
            c = result["category_id"]
            if c not in reverse:
                raise ValueError(
                    f"{self._dataset_name}: a prediction has contiguous class {c}, which is not a "
                    f"value of thing_dataset_id_to_contiguous_id (valid: {sorted(reverse)}). "
                    "Check MODEL.SEM_SEG_HEAD.NUM_CLASSES and that the model was trained on this "
                    "dataset's classes; for panoptic models, only thing classes may be returned "
                    "as instances."
                )
            result["category_id"] = reverse[c]

    # ---- evaluation -----------------------------------------------------------------------
    def _eval_predictions(self, predictions, img_ids=None):
        self._logger.info("Preparing results for COCO format ...")
        coco_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = set(self._tasks or self._tasks_from_predictions(coco_results))
        if not coco_results:
            tasks |= {"segm"}  # nothing predicted: still report mask AP (= 0)
        if self._boundary_ap:
            tasks.add("boundary")
        self._reverse_map(coco_results)

        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {path}")
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(coco_results))

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        self._logger.info(f"Evaluating predictions with {describe(self._backend)}")
        names = thing_names_by_category_id(self._metadata, self._coco_api)
        for task in sorted(tasks):
            if not coco_results:
                self._results[task] = self._empty_results(task, names, img_ids)
                continue
            if task == "boundary":
                coco_eval = self._evaluate_boundary(coco_results, img_ids)
                res = self._derive_coco_results(coco_eval, "segm")
            else:
                coco_eval = evaluate_on_coco(
                    self._coco_api,
                    coco_results,
                    task,
                    backend=self._backend,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                    img_ids=img_ids,
                    max_dets_per_image=self._max_dets_per_image,
                )
                res = self._derive_coco_results(coco_eval, task)
            res.update(self._per_class_ap(coco_eval, task, names))
            self._results[task] = res

    def _per_class_ap(self, coco_eval, task: str, names: dict) -> dict:
        """{"AP-<name>": AP} for every category COCOeval evaluated (NaN where it has no ground
        truth). COCOeval's category axis is `params.catIds` (sorted dataset ids); each is named
        through `names`, never by position in `thing_classes`."""
        cat_ids = list(coco_eval.params.catIds)
        if len(cat_ids) <= 1:  # as detectron2: no per-class table for a single class
            return {}
        precision = coco_eval.eval["precision"]  # (iou, recall, category, area, max dets)
        assert precision.shape[2] == len(cat_ids)
        res = {}
        for k, cat_id in enumerate(cat_ids):
            p = precision[:, :, k, 0, -1]  # area "all", the largest max-dets
            p = p[p > -1]
            res[f"AP-{names[int(cat_id)]}"] = float(np.mean(p) * 100) if p.size else float("nan")
        table = tabulate(
            [(n, v) for n, v in res.items()], headers=["category", "AP"], floatfmt=".3f"
        )
        self._logger.info(f"Per-category {task} AP:\n{table}")
        return res

    def _evaluate_boundary(self, coco_results, img_ids):
        iou = "min(mask IoU, Boundary IoU)" if self._boundary_iou_mode == "min" else "Boundary IoU"
        self._logger.info(f"Boundary AP: dilation ratio {self._dilation_ratio}, IoU = {iou}")
        return evaluate_on_coco(
            self._coco_api,
            coco_results,
            "boundary",
            backend=self._backend,
            img_ids=img_ids,
            max_dets_per_image=self._max_dets_per_image,
            dilation_ratio=self._dilation_ratio,
            boundary_iou_mode=self._boundary_iou_mode,
        )

    def _empty_results(self, task, names, img_ids):
        """Metrics when the model predicted nothing: 0 where GT exists, NaN where none does."""
        coco = self._coco_api
        ids = set(img_ids) if img_ids is not None else None
        anns = [
            a
            for a in coco.dataset.get("annotations", [])
            if not a.get("iscrowd", 0) and (ids is None or a["image_id"] in ids)
        ]
        params = COCOeval(iouType="segm").params
        area = dict(zip(params.areaRngLbl, params.areaRng))
        ann_areas = np.array([a["area"] for a in anns], dtype=float)

        def has_gt(lo, hi):
            return bool(np.any((ann_areas >= lo) & (ann_areas <= hi)))

        res = {m: (0.0 if anns else float("nan")) for m in ("AP", "AP50", "AP75")}
        for metric, label in (("APs", "small"), ("APm", "medium"), ("APl", "large")):
            res[metric] = 0.0 if has_gt(*area[label]) else float("nan")
        if task == "keypoints":
            res.pop("APs")
        self._logger.warning(f"No {task} predictions from the model: AP is 0.")
        cat_ids = sorted(coco.getCatIds())
        if len(cat_ids) > 1:  # per class, named by category id as in `_per_class_ap`
            cat_with_gt = {a["category_id"] for a in anns}
            for cat in cat_ids:
                res[f"AP-{names[cat]}"] = 0.0 if cat in cat_with_gt else float("nan")
        return copy.deepcopy(res)
