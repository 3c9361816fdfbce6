"""Panoptic quality (PQ, SQ, RQ; all / things / stuff) with panopticapi's matching rules.

Detectron2's `COCOPanopticEvaluator` runs `panopticapi.evaluation.pq_compute`, which on this stack
(panopticapi-lite 0.2.0) works but: starts one process per CPU core even for a handful of images,
divides by zero when a split has no stuff (or no thing) category with ground truth, mutates the
model's `segments_info`, and prints to stdout. This evaluator keeps the exact per-image matching
of panopticapi (`pq_compute_single_core`: IoU > 0.5 with VOID pixels removed from the union, crowd
regions and mostly-VOID predictions ignored) and fixes those points. Prediction PNGs are named by
`image_id` (detectron2 uses the image's basename, so two images with one basename in different
folders overwrote each other). Per-class PQ/SQ/RQ and `predictions.json` (COCO panoptic format,
like detectron2's) are written to `output_dir`.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import re
import tempfile
from collections import OrderedDict

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "COCOPanopticEvaluator",
    "check_unique_file_names",
    "compute_pq",
    "pq_from_stat",
    "prediction_file_name",
]

# Below this many images the matching runs in-process (a pool costs more than it saves).
_MIN_IMAGES_PER_WORKER = 64


def prediction_file_name(image_id) -> str:
    """The PNG name of an image's panoptic prediction: its `image_id` (unique in a panoptic
    json), with characters other than letters, digits, "-", "_" and "." replaced by "_".

    Not the image's basename, as detectron2 does: "cam0/frame.jpg" and "cam1/frame.jpg" would
    both write "frame.png", and the second would overwrite the first."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(image_id)) + ".png"


def check_unique_file_names(pairs, dataset_name: str) -> None:
    """Raise if two of `pairs` = [(prediction file name, image)] would write one file."""
    seen = {}
    for name, image in pairs:
        if name in seen:
            same = seen[name] == image
            raise ValueError(
                f"{dataset_name}: "
                + (
                    f"image {image!r} was evaluated twice"
                    if same
                    else f"images {seen[name]!r} and {image!r} both map to prediction file {name!r}"
                )
                + "; each image needs its own prediction file. Give every image of the dataset "
                "a distinct image_id and evaluate each image once."
            )
        seen[name] = image


def pq_from_stat(pq_stat, categories: dict, isthing: bool | None) -> tuple[dict, dict]:
    """panopticapi's `PQStat.pq_average`, but with NaN instead of ZeroDivisionError when no
    category of the group has a ground-truth or predicted segment (and NaN, not 0, as the
    per-class value of such a category)."""
    pq = sq = rq = 0.0
    n = 0
    per_class = {}
    for label, info in categories.items():
        if isthing is not None and (info["isthing"] == 1) != isthing:
            continue
        s = pq_stat[label]
        if s.tp + s.fp + s.fn == 0:
            per_class[label] = {"pq": float("nan"), "sq": float("nan"), "rq": float("nan")}
            continue
        n += 1
        denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
        per_class[label] = {
            "pq": s.iou / denom,
            "sq": s.iou / s.tp if s.tp else 0.0,
            "rq": s.tp / denom,
        }
        pq += per_class[label]["pq"]
        sq += per_class[label]["sq"]
        rq += per_class[label]["rq"]
    if n == 0:
        return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}, per_class
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def compute_pq(
    gt_json: dict,
    pred_annotations: list[dict],
    gt_folder: str,
    pred_folder: str,
    num_workers: int | None = None,
) -> dict:
    """PQ of COCO-panoptic predictions (PNG files in `pred_folder`) against `gt_json`.

    Returns {"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}, "per_class": {cat_id: {...}}}.
    """
    from panopticapi.evaluation import PQStat, pq_compute_single_core

    categories = {c["id"]: c for c in gt_json["categories"]}
    preds = {a["image_id"]: a for a in pred_annotations}
    missing = [a["image_id"] for a in gt_json["annotations"] if a["image_id"] not in preds]
    if missing:
        raise ValueError(
            f"no panoptic prediction for {len(missing)} ground-truth image(s), e.g. image_id "
            f"{missing[:5]}; evaluate on the whole split (every image of panoptic_json)."
        )
    pairs = [(a, preds[a["image_id"]]) for a in gt_json["annotations"]]
    if num_workers is None:
        num_workers = min(multiprocessing.cpu_count(), max(1, len(pairs) // _MIN_IMAGES_PER_WORKER))
    pq_stat = PQStat()
    with contextlib.redirect_stdout(io.StringIO()):  # panopticapi prints per-core progress
        if num_workers <= 1:
            pq_stat += pq_compute_single_core(0, pairs, gt_folder, pred_folder, categories)
        else:
            chunks = [pairs[i::num_workers] for i in range(num_workers)]
            # "spawn": forking a process whose thread pools have run can deadlock the children.
            with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
                jobs = [
                    pool.apply_async(
                        pq_compute_single_core, (i, c, gt_folder, pred_folder, categories)
                    )
                    for i, c in enumerate(chunks)
                ]
                for job in jobs:
                    pq_stat += job.get()
    results = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = pq_from_stat(pq_stat, categories, isthing)
        if name == "All":
            results["per_class"] = per_class
    return results


class COCOPanopticEvaluator(DatasetEvaluator):
    """PQ/SQ/RQ of `output["panoptic_seg"] = (panoptic_img (H, W) int, segments_info)`.

    `segments_info` entries hold `id`, `isthing` and contiguous `category_id`, mapped back to
    dataset ids through `thing_dataset_id_to_contiguous_id` / `stuff_dataset_id_to_contiguous_id`.
    With `segments_info=None`, `panoptic_img` holds `category * label_divisor + instance` with -1
    for VOID (Panoptic-DeepLab's format). Metadata used: `panoptic_json`, `panoptic_root`.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        distributed: bool = True,
        num_workers: int | None = None,
    ):
        self._dataset_name = dataset_name
        self._metadata = meta = MetadataCatalog.get(dataset_name)
        missing = [k for k in ("panoptic_json", "panoptic_root") if not hasattr(meta, k)]
        if missing:
            raise ValueError(
                f"COCOPanopticEvaluator({dataset_name!r}): metadata lacks {missing} (the COCO "
                "panoptic ground-truth json and PNG folder)."
            )
        self._thing_c2d = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
        self._stuff_c2d = {
            v: k for k, v in getattr(meta, "stuff_dataset_id_to_contiguous_id", {}).items()
        }
        self._output_dir = output_dir
        self._distributed = distributed
        self._num_workers = num_workers

    def reset(self):
        self._predictions = []

    def _convert_segment(self, seg: dict) -> dict:
        seg = dict(seg)  # never mutate the model's output
        isthing = seg.pop("isthing", None)
        if isthing is None:  # category_id is already a dataset id
            return seg
        table = self._thing_c2d if isthing else self._stuff_c2d
        c = int(seg["category_id"])
        if c not in table:
            kind = "thing" if isthing else "stuff"
            raise ValueError(
                f"{self._dataset_name}: a {kind} segment has contiguous category {c}, not in the "
                f"{kind}_dataset_id_to_contiguous_id of the metadata (valid: {sorted(table)})."
            )
        seg["category_id"] = table[c]
        seg["id"] = int(seg["id"])
        return seg

    def process(self, inputs, outputs):
        from panopticapi.utils import id2rgb

        for inp, out in zip(inputs, outputs):
            panoptic_img, segments_info = out["panoptic_seg"]
            if hasattr(panoptic_img, "cpu"):
                panoptic_img = panoptic_img.cpu().numpy()
            panoptic_img = np.asarray(panoptic_img).astype(np.int64)
            if segments_info is None:
                segments_info = self._segments_from_label_divisor(panoptic_img)
                panoptic_img = panoptic_img + 1  # panopticapi uses 0 for VOID
            file_name = prediction_file_name(inp["image_id"])
            with io.BytesIO() as buf:
                Image.fromarray(id2rgb(panoptic_img)).save(buf, format="PNG")
                png = buf.getvalue()
            self._predictions.append(
                {
                    "image_id": inp["image_id"],
                    "file_name": file_name,
                    "png_string": png,
                    "segments_info": [self._convert_segment(s) for s in segments_info],
                }
            )

    def _segments_from_label_divisor(self, panoptic_img: np.ndarray) -> list[dict]:
        divisor = self._metadata.label_divisor
        things = set(self._metadata.thing_dataset_id_to_contiguous_id.values())
        segs = []
        for label in np.unique(panoptic_img):
            if label == -1:
                continue
            cls = int(label) // divisor
            segs.append({"id": int(label) + 1, "category_id": cls, "isthing": cls in things})
        return segs

    def evaluate(self):
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions)))
            if not comm.is_main_process():
                return None

        gt_json_file = PathManager.get_local_path(self._metadata.panoptic_json)
        gt_folder = PathManager.get_local_path(self._metadata.panoptic_root)
        with open(gt_json_file) as f:
            gt_json = json.load(f)

        check_unique_file_names(
            [(p["file_name"], p["image_id"]) for p in predictions], self._dataset_name
        )
        with tempfile.TemporaryDirectory(prefix="panoptic_eval") as pred_dir:
            annotations = []
            for p in predictions:
                with open(os.path.join(pred_dir, p["file_name"]), "wb") as f:
                    f.write(p["png_string"])
                annotations.append({k: v for k, v in p.items() if k != "png_string"})
            if self._output_dir:
                PathManager.mkdirs(self._output_dir)
                out = dict(gt_json, annotations=annotations)
                path = os.path.join(self._output_dir, "predictions.json")
                with PathManager.open(path, "w") as f:
                    json.dump(out, f)
            pq_res = compute_pq(gt_json, annotations, gt_folder, pred_dir, self._num_workers)

        res = OrderedDict()
        for key, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
            for m in ("pq", "sq", "rq"):
                res[m.upper() + key] = 100 * pq_res[group][m]
        names = {c["id"]: c["name"] for c in gt_json["categories"]}
        per_class = {names.get(k, str(k)): v for k, v in pq_res["per_class"].items()}
        for name, v in per_class.items():  # "-" keys: per-class, not printed by print_csv_format
            for m in ("pq", "sq", "rq"):
                res[f"{m.upper()}-{name}"] = 100 * v[m]
        if self._output_dir:
            path = os.path.join(self._output_dir, "panoptic_per_class.json")
            with PathManager.open(path, "w") as f:
                json.dump(per_class, f, indent=1)
        self._log(pq_res)
        return OrderedDict({"panoptic_seg": res})

    def _log(self, pq_res):
        from tabulate import tabulate

        rows = [
            [g] + [100 * pq_res[g][m] for m in ("pq", "sq", "rq")] + [pq_res[g]["n"]]
            for g in ("All", "Things", "Stuff")
        ]
        table = tabulate(
            rows, headers=["", "PQ", "SQ", "RQ", "#categories"], tablefmt="pipe", floatfmt=".3f"
        )
        logger.info(f"Panoptic evaluation results on {self._dataset_name}:\n{table}")
