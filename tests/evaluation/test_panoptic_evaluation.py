"""COCOPanopticEvaluator against panopticapi's `pq_compute` on the same predictions, for a
dataset registered with `register_panoptic_dataset` (with and without semantic / instance
files): PQ, SQ, RQ (all / things / stuff) and per class, to 0.01. The data
(tests/evaluation/crosscheck_data.py) has out-of-order category ids, VOID, a crowd segment, a
predicted-only thing, an unannotated stuff class and two images with one basename."""

import math

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.evaluation import PQStat
from PIL import Image

from mask2former.data.datasets.custom import register_panoptic_dataset
from mask2former.evaluation import COCOPanopticEvaluator
from mask2former.evaluation.panoptic_evaluation import (
    compute_pq,
    pq_from_stat,
    prediction_file_name,
)

from . import crosscheck_data as X


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return X.write_dataset(str(tmp_path_factory.mktemp("crosscheck_panoptic")))


@pytest.fixture(scope="module")
def official(data, tmp_path_factory):
    return X.official_pq(data, str(tmp_path_factory.mktemp("official_pq")))


def _register(data, with_files: bool) -> str:
    name = X.fresh_name(f"_xcheck_panoptic_{int(with_files)}")
    register_panoptic_dataset(
        name,
        data["images"],
        data["panoptic"],
        data["panoptic_json"],
        sem_seg_root=data["semantic"] if with_files else None,
        instances_json=data["instances_json"] if with_files else None,
    )
    return name


@pytest.mark.parametrize("with_files", [True, False], ids=["with_sem_inst", "panoptic_only"])
def test_pq_equals_panopticapi(data, official, tmp_path, with_files):
    name = _register(data, with_files)
    meta = MetadataCatalog.get(name)
    records = DatasetCatalog.get(name)
    # two images share the basename "frame": their predictions must not overwrite each other
    assert len({r["file_name"].rsplit("/", 1)[-1] for r in records}) < len(records)
    res = X.run(
        COCOPanopticEvaluator(name, str(tmp_path)),
        records,
        lambda r: X.panoptic_output(r["image_id"], meta),
    )["panoptic_seg"]
    X.assert_all_close(res, official)
    # the cases the data was built for
    assert res["PQ-dog"] == pytest.approx(0.0)  # predicted once, no ground truth: a false positive
    assert res["PQ-water"] != res["PQ-water"]  # nobody annotates or predicts it: NaN
    assert 0 < res["PQ"] < 100


def test_prediction_files_are_named_by_image_id():
    assert prediction_file_name(7) == "7.png"
    assert prediction_file_name("cam0/frame 1") == "cam0_frame_1.png"


def test_two_inputs_on_one_file_is_an_error(data, tmp_path):
    name = _register(data, False)
    meta = MetadataCatalog.get(name)
    r = DatasetCatalog.get(name)[0]
    ev = COCOPanopticEvaluator(name, str(tmp_path))
    ev.reset()
    for image_id in ("a/b", "a_b"):  # distinct ids, one sanitised file name
        out = X.panoptic_output(r["image_id"], meta)
        ev.process([dict(r, image_id=image_id)], [out])
    with pytest.raises(ValueError, match="both map to prediction file 'a_b.png'"):
        ev.evaluate()
    ev.reset()
    for _ in range(2):
        ev.process([r], [X.panoptic_output(r["image_id"], meta)])
    with pytest.raises(ValueError, match="evaluated twice"):
        ev.evaluate()


# ----------------------------------------------------------------------------------------------
# PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2), hand-worked
# (evaluation/panoptic_evaluation.py; Kirillov et al. 2019, Eq. 1).


CATEGORIES = {1: {"id": 1, "isthing": 1}, 2: {"id": 2, "isthing": 0}, 3: {"id": 3, "isthing": 1}}


def _stat(**per_class) -> PQStat:
    stat = PQStat()
    for label, (tp, fp, fn, iou) in per_class.items():
        s = stat.pq_per_cat[int(label[1:])]
        s.tp, s.fp, s.fn, s.iou = tp, fp, fn, iou
    return stat


def test_pq_sq_rq_from_counts():
    # class 1 (thing): 2 TP (IoU 0.9 + 0.6), 1 FP, 3 FN; class 2 (stuff): 1 TP IoU 0.8, 1 FN.
    stat = _stat(c1=(2, 1, 3, 1.5), c2=(1, 0, 1, 0.8))
    res, per_class = pq_from_stat(stat, CATEGORIES, None)
    assert per_class[1]["pq"] == pytest.approx(1.5 / (2 + 0.5 + 1.5))
    assert per_class[1]["sq"] == pytest.approx(0.75)
    assert per_class[1]["rq"] == pytest.approx(2 / 4)
    assert per_class[2]["pq"] == pytest.approx(0.8 / 1.5)
    assert per_class[2]["rq"] == pytest.approx(1 / 1.5)
    assert all(math.isnan(v) for v in per_class[3].values())  # no segment at all: not averaged
    assert res["n"] == 2
    assert res["pq"] == pytest.approx((1.5 / 4 + 0.8 / 1.5) / 2)
    assert res["sq"] == pytest.approx((0.75 + 0.8) / 2)
    assert res["rq"] == pytest.approx((0.5 + 1 / 1.5) / 2)
    things, _ = pq_from_stat(stat, CATEGORIES, True)
    stuff, _ = pq_from_stat(stat, CATEGORIES, False)
    assert things["n"] == 1 and things["pq"] == pytest.approx(1.5 / 4)
    assert stuff["n"] == 1 and stuff["pq"] == pytest.approx(0.8 / 1.5)


def test_only_false_positives_give_zero_and_an_empty_group_nan():
    stat = _stat(c1=(0, 2, 0, 0.0))
    res, per_class = pq_from_stat(stat, CATEGORIES, True)
    assert per_class[1] == {"pq": 0.0, "sq": 0.0, "rq": 0.0} and res["n"] == 1
    stuff, _ = pq_from_stat(stat, CATEGORIES, False)
    assert stuff["n"] == 0 and math.isnan(stuff["pq"])


def _png(path, ids: np.ndarray) -> None:
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def test_compute_pq_end_to_end_with_fp_and_fn(tmp_path):
    """One 10 x 10 image. Ground truth: stuff (id 1, class 2) = rows 0-4; cats (class 1) A = rows
    5-7 x cols 0-4 (15 px), B = rows 5-7 x cols 5-9 (15 px); rows 8-9 VOID.
    Prediction: stuff = rows 0-4 (IoU 1); A' = rows 5-7 x cols 0-3 (IoU 12/15 = 0.8);
    C = rows 8-9 x cols 0-9 (class 1, 20 px, on VOID: ignored); D = rows 6-7 x cols 5-6 (class 1,
    4 px of B: IoU 4/15, unmatched -> FP; B unmatched -> FN).
    cat: TP 1 (0.8), FP 1, FN 1 -> PQ = 0.8 / (1 + 0.5 + 0.5) = 0.4, RQ 0.5, SQ 0.8."""
    gt = np.zeros((10, 10), np.int64)
    gt[0:5] = 1
    gt[5:8, 0:5] = 2
    gt[5:8, 5:10] = 3
    pred = np.zeros((10, 10), np.int64)
    pred[0:5] = 11
    pred[5:8, 0:4] = 12
    pred[8:10] = 13
    pred[6:8, 5:7] = 14
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    _png(tmp_path / "gt" / "im.png", gt)
    _png(tmp_path / "pred" / "im.png", pred)
    gt_json = {
        "categories": [
            {"id": 1, "name": "cat", "isthing": 1},
            {"id": 2, "name": "sky", "isthing": 0},
        ],
        "annotations": [
            {
                "image_id": 5,
                "file_name": "im.png",
                "segments_info": [
                    {"id": 1, "category_id": 2, "iscrowd": 0, "area": 50},
                    {"id": 2, "category_id": 1, "iscrowd": 0, "area": 15},
                    {"id": 3, "category_id": 1, "iscrowd": 0, "area": 15},
                ],
            }
        ],
    }
    pred_ann = [
        {
            "image_id": 5,
            "file_name": "im.png",
            "segments_info": [
                {"id": 11, "category_id": 2},
                {"id": 12, "category_id": 1},
                {"id": 13, "category_id": 1},
                {"id": 14, "category_id": 1},
            ],
        }
    ]
    res = compute_pq(gt_json, pred_ann, str(tmp_path / "gt"), str(tmp_path / "pred"), 1)
    assert res["per_class"][1]["pq"] == pytest.approx(0.4)
    assert res["per_class"][1]["rq"] == pytest.approx(0.5)
    assert res["per_class"][1]["sq"] == pytest.approx(0.8)
    assert res["per_class"][2]["pq"] == pytest.approx(1.0)
    assert res["Things"]["pq"] == pytest.approx(0.4)
    assert res["Stuff"]["pq"] == pytest.approx(1.0)
    assert res["All"]["pq"] == pytest.approx(0.7) and res["All"]["n"] == 2


def test_compute_pq_requires_a_prediction_per_image(tmp_path):
    gt_json = {"categories": [], "annotations": [{"image_id": 9, "file_name": "x.png"}]}
    with pytest.raises(ValueError, match="image_id \\[9\\]"):
        compute_pq(gt_json, [], str(tmp_path), str(tmp_path))
