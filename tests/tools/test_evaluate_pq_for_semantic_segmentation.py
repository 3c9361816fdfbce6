"""tools/evaluate_pq_for_semantic_segmentation.py against panopticapi's `pq_compute`: the
semantic ground truth and predictions are written here as COCO panoptic files (each class present
in an image is one segment, VOID = 0, every class "stuff") and scored by the official tool. PQ /
SQ / RQ and PQ per class, and the semantic metrics from their definitions, to 0.01; datasets
registered with `register_semantic_dataset` and `register_panoptic_dataset` (ground truth from
the panoptic PNGs)."""

import contextlib
import importlib.util
import io
import json
import math
import os
import sys

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image

from mask2former.data.datasets.custom import register_panoptic_dataset, register_semantic_dataset
from mask2former.evaluation import SemSegEvaluator

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name: str, path: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


X = _load("crosscheck_data", os.path.join(HERE, "..", "evaluation", "crosscheck_data.py"))
TOOL = os.path.join(HERE, "..", "..", "tools", "evaluate_pq_for_semantic_segmentation.py")
NAMES = [c["name"] for c in X.CATEGORIES]
K = len(NAMES)


def official_semantic_pq(work: str) -> dict:
    from panopticapi.evaluation import pq_compute_single_core

    cats = [{"id": c + 1, "name": n, "isthing": 0} for c, n in enumerate(NAMES)]
    files = {}
    for kind, labels_of in (("gt", X.semantic_gt), ("pred", X.semantic_prediction)):
        folder = os.path.join(work, kind)
        os.makedirs(folder)
        anns = []
        for image_id, _ in X.IMAGES:
            labels = labels_of(image_id)
            pan = np.where(labels == X.IGNORE, 0, labels + 1)  # segment id = category id
            Image.fromarray(X.id2rgb(pan)).save(os.path.join(folder, f"{image_id}.png"))
            infos = [
                {"id": int(c), "category_id": int(c), "iscrowd": 0, "area": int((pan == c).sum())}
                for c in np.unique(pan)
                if c
            ]
            anns.append(
                {"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": infos}
            )
        images = [
            {"id": i, "file_name": f"{i}.jpg", "height": X.H, "width": X.W} for i, _ in X.IMAGES
        ]
        files[kind] = os.path.join(work, f"{kind}.json")
        with open(files[kind], "w") as f:
            json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    # pq_compute itself divides by zero without a thing class: its per-image matching and
    # averaging, called directly
    with open(files["gt"]) as f:
        gt_anns = json.load(f)["annotations"]
    with open(files["pred"]) as f:
        pred_anns = json.load(f)["annotations"]
    categories = {c["id"]: c for c in cats}
    with contextlib.redirect_stdout(io.StringIO()):
        stat = pq_compute_single_core(
            0,
            list(zip(gt_anns, pred_anns)),
            os.path.join(work, "gt"),
            os.path.join(work, "pred"),
            categories,
        )
    res = {}
    res["All"], res["per_class"] = stat.pq_average(categories, isthing=None)
    res["Stuff"], _ = stat.pq_average(categories, isthing=False)
    out = {m.upper(): 100 * res["All"][m] for m in ("pq", "sq", "rq")}
    out.update({f"{m.upper()}_st": 100 * res["Stuff"][m] for m in ("pq", "sq", "rq")})
    out.update({f"PQ-{NAMES[c - 1]}": 100 * v["pq"] for c, v in res["per_class"].items()})
    return out


def _image_id(record) -> int:
    stem = os.path.splitext(record["file_name"])[0]
    return next(i for i, s in X.IMAGES if stem.endswith((s, s.replace("/", "_"))))


@pytest.mark.parametrize("how", ["semantic", "panoptic_only"])
def test_semantic_pq_equals_panopticapi(tmp_path, how):
    data = X.write_dataset(str(tmp_path / "data"))
    name = X.fresh_name(f"_xcheck_sem_pq_{how}")
    if how == "semantic":
        for key, ext in (("images", ".jpg"), ("semantic", ".png")):
            os.makedirs(tmp_path / f"flat_{key}")
            for _, stem in X.IMAGES:
                os.link(
                    os.path.join(data[key], stem + ext),
                    tmp_path / f"flat_{key}" / (stem.replace("/", "_") + ext),
                )
        register_semantic_dataset(
            name, str(tmp_path / "flat_images"), str(tmp_path / "flat_semantic"), NAMES
        )
    else:
        register_panoptic_dataset(name, data["images"], data["panoptic"], data["panoptic_json"])
    out = tmp_path / "out"
    X.run(
        SemSegEvaluator(name, output_dir=str(out)),
        DatasetCatalog.get(name),
        lambda r: X.sem_seg_output(X.semantic_prediction(_image_id(r)), K),
    )
    tool = _load("evaluate_pq_for_semantic_segmentation", TOOL)
    res = tool.main(["--dataset-name", name, "--json-file", str(out / "sem_seg_predictions.json")])
    official = official_semantic_pq(str(tmp_path / "official"))
    X.assert_all_close(res["panoptic_seg"], official)
    ids = [i for i, _ in X.IMAGES]
    X.assert_all_close(
        res["sem_seg"],
        X.semseg_definition(
            [X.semantic_gt(i) for i in ids], [X.semantic_prediction(i) for i in ids], K, NAMES
        ),
    )
    assert not math.isnan(res["panoptic_seg"]["PQ"]) and 0 < res["panoptic_seg"]["PQ"] < 100
    assert (out / "results.md").exists()
