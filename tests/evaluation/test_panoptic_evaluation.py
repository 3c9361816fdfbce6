"""COCOPanopticEvaluator against panopticapi's `pq_compute` on the same predictions, for a
dataset registered with `register_panoptic_dataset` (with and without semantic / instance
files): PQ, SQ, RQ (all / things / stuff) and per class, to 0.01. The data
(tests/evaluation/crosscheck_data.py) has out-of-order category ids, VOID, a crowd segment, a
predicted-only thing, an unannotated stuff class and two images with one basename."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.evaluation import PQStat
from PIL import Image

from mask2former.data.datasets.custom import register_panoptic_dataset
from mask2former.evaluation import COCOPanopticEvaluator
from mask2former.evaluation.panoptic_evaluation import (
    check_unique_file_names,
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


def test_prediction_files_are_named_by_image_id():
    assert prediction_file_name(7) == "7.png"
    assert prediction_file_name("cam0/frame 1") == "cam0_frame_1.png"


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


# ----------------------------------------------------------------------------------------------
# The evaluator end to end on the hand-worked image above, both output formats, its files, log and
# errors; PQ's edge cases (mutation testing, issue 26).

GT_SEGMENTS = [
    {"id": 1, "category_id": 2, "iscrowd": 0, "area": 50},
    {"id": 2, "category_id": 1, "iscrowd": 0, "area": 15},
    {"id": 3, "category_id": 1, "iscrowd": 0, "area": 15},
]


@pytest.fixture
def hand_dataset(tmp_path):
    """The image of `test_compute_pq_end_to_end_with_fp_and_fn` as a registered dataset: cat
    (thing, dataset id 1, contiguous 0), sky (stuff, dataset id 2, contiguous 1)."""
    gt = np.zeros((10, 10), np.int64)
    gt[0:5] = 1
    gt[5:8, 0:5] = 2
    gt[5:8, 5:10] = 3
    (tmp_path / "gt").mkdir()
    _png(tmp_path / "gt" / "im.png", gt)
    gt_json = {
        "categories": [
            {"id": 1, "name": "cat", "isthing": 1},
            {"id": 2, "name": "sky", "isthing": 0},
        ],
        "annotations": [{"image_id": 5, "file_name": "im.png", "segments_info": GT_SEGMENTS}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt_json))
    name = X.fresh_name("_test_panoptic_hand")
    MetadataCatalog.get(name).set(
        panoptic_json=str(tmp_path / "gt.json"),
        panoptic_root=str(tmp_path / "gt"),
        thing_dataset_id_to_contiguous_id={1: 0},
        stuff_dataset_id_to_contiguous_id={2: 1},
        label_divisor=1000,
    )
    return name


def _hand_prediction() -> np.ndarray:
    """Segment ids 11 (sky), 12 (cat A'), 13 (cat on VOID), 14 (cat D); see the test above."""
    pred = np.zeros((10, 10), np.int64)
    pred[0:5] = 11
    pred[5:8, 0:4] = 12
    pred[8:10] = 13
    pred[6:8, 5:7] = 14
    return pred


# cat: PQ 0.4, SQ 0.8, RQ 0.5; sky: 1, 1, 1.
HAND_RESULT = {
    "PQ": 70.0, "SQ": 90.0, "RQ": 75.0,
    "PQ_th": 40.0, "SQ_th": 80.0, "RQ_th": 50.0,
    "PQ_st": 100.0, "SQ_st": 100.0, "RQ_st": 100.0,
    "PQ-cat": 40.0, "SQ-cat": 80.0, "RQ-cat": 50.0,
    "PQ-sky": 100.0, "SQ-sky": 100.0, "RQ-sky": 100.0,
}  # fmt: skip

HAND_LOG_TABLE = """\
|        |      PQ |      SQ |      RQ |   #categories |
|:-------|--------:|--------:|--------:|--------------:|
| All    |  70.000 |  90.000 |  75.000 |             2 |
| Things |  40.000 |  80.000 |  50.000 |             1 |
| Stuff  | 100.000 | 100.000 | 100.000 |             1 |"""


def _capture_log():
    messages = []
    handler = logging.Handler()
    handler.emit = lambda r: messages.append(r.getMessage())
    return messages, handler


def test_evaluator_hand_worked_files_and_log(hand_dataset, tmp_path, monkeypatch):
    """COCO format with contiguous ids (numpy ints, as a model may give), on a simulated second
    process: this one saw nothing, the other one the image."""
    from detectron2.utils import comm

    pred = _hand_prediction()
    segments = [
        {"id": np.int64(11), "category_id": 1, "isthing": False},
        {"id": np.int64(12), "category_id": 0, "isthing": True},
        {"id": np.int64(13), "category_id": 0, "isthing": True},
        {"id": np.int64(14), "category_id": 0, "isthing": True},
    ]
    given = [dict(s) for s in segments]
    other = COCOPanopticEvaluator(hand_dataset, distributed=False)
    other.reset()
    other.process([{"image_id": 5}], [{"panoptic_seg": (torch.from_numpy(pred), segments)}])
    assert segments == given  # the model's output is not modified
    out = tmp_path / "out"
    ev = COCOPanopticEvaluator(hand_dataset, str(out))  # distributed by default
    ev.reset()
    monkeypatch.setattr(comm, "synchronize", lambda: None)
    monkeypatch.setattr(comm, "gather", lambda x: [x, other._predictions])
    logger = logging.getLogger("mask2former.evaluation.panoptic_evaluation")
    messages, handler = _capture_log()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        res = ev.evaluate()["panoptic_seg"]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert dict(res) == pytest.approx(HAND_RESULT)
    assert list(res)[:9] == ["PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"]
    assert messages == [f"Panoptic evaluation results on {hand_dataset}:\n{HAND_LOG_TABLE}"]
    written = json.loads((out / "predictions.json").read_text())
    assert [a["file_name"] for a in written["annotations"]] == ["5.png"]
    assert written["annotations"][0]["segments_info"] == [
        {"id": 11, "category_id": 2},
        {"id": 12, "category_id": 1},
        {"id": 13, "category_id": 1},
        {"id": 14, "category_id": 1},
    ]
    assert written["categories"] == json.loads((tmp_path / "gt.json").read_text())["categories"]
    per_class = json.loads((out / "panoptic_per_class.json").read_text())
    assert per_class["cat"] == pytest.approx({"pq": 0.4, "sq": 0.8, "rq": 0.5})
    assert per_class["sky"] == pytest.approx({"pq": 1.0, "sq": 1.0, "rq": 1.0})
    assert list(per_class) == ["cat", "sky"]
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    assert ev.evaluate() is None  # only the main process reports


def test_evaluator_label_divisor_format(hand_dataset):
    """segments_info None: category * label_divisor + instance, -1 = VOID (Panoptic-DeepLab)."""
    ids = {0: -1, 11: 1 * 1000, 12: 0 * 1000 + 1, 13: 0 * 1000 + 2, 14: 0 * 1000 + 3}
    pred = np.vectorize(ids.get)(_hand_prediction())
    pred[9, 9] = -1
    ev = COCOPanopticEvaluator(hand_dataset, distributed=False)
    ev.reset()
    ev.process([{"image_id": 5}], [{"panoptic_seg": (pred.tolist(), None)}])
    assert ev._predictions[0]["segments_info"] == [
        {"id": 2, "category_id": 1},
        {"id": 3, "category_id": 1},
        {"id": 4, "category_id": 1},
        {"id": 1001, "category_id": 2},
    ]
    assert dict(ev.evaluate()["panoptic_seg"]) == pytest.approx(HAND_RESULT)


def test_evaluator_errors(hand_dataset, tmp_path):
    name = X.fresh_name("_test_panoptic_no_json")
    MetadataCatalog.get(name).set(panoptic_root=str(tmp_path))
    with pytest.raises(ValueError) as err:
        COCOPanopticEvaluator(name)
    assert str(err.value) == (
        f"COCOPanopticEvaluator('{name}'): metadata lacks ['panoptic_json'] (the COCO panoptic "
        "ground-truth json and PNG folder)."
    )
    ev = COCOPanopticEvaluator(hand_dataset, distributed=False)
    ev.reset()
    pred = torch.zeros(10, 10, dtype=torch.int32)
    for isthing, kind, valid in ((True, "thing", [0]), (False, "stuff", [1])):
        with pytest.raises(ValueError) as err:
            segs = [{"id": 1, "category_id": 7, "isthing": isthing}]
            ev.process([{"image_id": 5}], [{"panoptic_seg": (pred, segs)}])
        assert str(err.value) == (
            f"{hand_dataset}: a {kind} segment has contiguous category 7, not in the {kind}"
            f"_dataset_id_to_contiguous_id of the metadata (valid: {valid})."
        )


def test_duplicate_prediction_file_messages():
    with pytest.raises(ValueError) as err:
        check_unique_file_names([("a_b.png", "a/b"), ("a_b.png", "a_b")], "ds")
    assert str(err.value) == (
        "ds: images 'a/b' and 'a_b' both map to prediction file 'a_b.png'; each image needs its "
        "own prediction file. Give every image of the dataset a distinct image_id and evaluate "
        "each image once."
    )
    with pytest.raises(ValueError) as err:
        check_unique_file_names([("7.png", 7), ("8.png", 8), ("7.png", 7)], "ds")
    assert str(err.value).startswith("ds: image 7 was evaluated twice; each image needs")


def test_compute_pq_missing_predictions_message(tmp_path):
    gt_json = {"categories": [], "annotations": [{"image_id": i} for i in range(7)]}
    with pytest.raises(ValueError) as err:
        compute_pq(gt_json, [{"image_id": 6}], str(tmp_path), str(tmp_path))
    assert str(err.value) == (
        "no panoptic prediction for 6 ground-truth image(s), e.g. image_id [0, 1, 2, 3, 4]; "
        "evaluate on the whole split (every image of panoptic_json)."
    )


def test_pq_from_stat_edges():
    # Listed first: a class without segments (skipped, NaN); then TP = FP and FP = FN classes,
    # which have segments (not NaN).
    cats = {3: {"isthing": 1}, 1: {"isthing": 1}, 2: {"isthing": 1}}
    stat = _stat(c1=(1, 1, 0, 0.75), c2=(0, 1, 1, 0.0))
    res, per_class = pq_from_stat(stat, cats, None)
    assert set(per_class[3]) == {"pq", "sq", "rq"}
    assert all(math.isnan(v) for v in per_class[3].values())
    assert per_class[1] == pytest.approx({"pq": 0.75 / 1.5, "sq": 0.75, "rq": 1 / 1.5})
    assert per_class[2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert res == pytest.approx({"pq": 0.25, "sq": 0.375, "rq": 1 / 3, "n": 2})
    empty, _ = pq_from_stat(stat, cats, False)
    assert set(empty) == {"pq", "sq", "rq", "n"} and empty["n"] == 0
    assert all(math.isnan(empty[m]) for m in ("pq", "sq", "rq"))


def test_compute_pq_runs_in_process_for_few_images(tmp_path, monkeypatch):
    """Fewer than 2 x 64 images: one worker, no process pool (its start costs more than it
    saves). 65 tiny images, each a perfect sky segment."""
    import multiprocessing

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started")

    monkeypatch.setattr(multiprocessing, "get_context", no_pool)
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    anns, preds = [], []
    for i in range(65):
        _png(tmp_path / "gt" / f"{i}.png", np.ones((1, 1), np.int64))
        _png(tmp_path / "pred" / f"{i}.png", np.ones((1, 1), np.int64))
        seg = [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 1}]
        anns.append({"image_id": i, "file_name": f"{i}.png", "segments_info": seg})
        preds.append({"image_id": i, "file_name": f"{i}.png", "segments_info": seg[:1]})
    gt_json = {"categories": [{"id": 1, "name": "sky", "isthing": 0}], "annotations": anns}
    for workers in (None, 1):
        res = compute_pq(gt_json, preds, str(tmp_path / "gt"), str(tmp_path / "pred"), workers)
        assert res["All"]["pq"] == 1.0 and res["per_class"][1]["rq"] == 1.0


# ---- against panopticapi on the crosscheck data (slower: last, so that a mutation run's `-x`
# stops at the quick hand-worked tests above when they fail) ------------------------------------
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


def test_compute_pq_with_two_worker_processes(tmp_path, monkeypatch):
    """The pool path (two spawned workers, one image each) sums both workers' statistics."""
    import multiprocessing

    contexts = []
    real = multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda m: contexts.append(m) or real(m))
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    anns, preds = [], []
    for i, pred_id in ((1, 1), (2, 0)):  # image 2: nothing predicted (an FN)
        _png(tmp_path / "gt" / f"{i}.png", np.ones((2, 2), np.int64))
        _png(tmp_path / "pred" / f"{i}.png", np.full((2, 2), pred_id, np.int64))
        seg = [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 4}]
        anns.append({"image_id": i, "file_name": f"{i}.png", "segments_info": seg})
        pred_segs = [{"id": 1, "category_id": 1}] if pred_id else []
        preds.append({"image_id": i, "file_name": f"{i}.png", "segments_info": pred_segs})
    gt_json = {"categories": [{"id": 1, "name": "sky", "isthing": 0}], "annotations": anns}
    res = compute_pq(gt_json, preds, str(tmp_path / "gt"), str(tmp_path / "pred"), 2)
    assert res["per_class"][1] == pytest.approx({"pq": 1 / 1.5, "sq": 1.0, "rq": 1 / 1.5})
    assert contexts == ["spawn"]  # a pool of spawned processes did the matching


def test_evaluator_passes_num_workers_on(hand_dataset, monkeypatch):
    from mask2former.evaluation import panoptic_evaluation

    seen = []
    real = panoptic_evaluation.compute_pq
    monkeypatch.setattr(
        panoptic_evaluation, "compute_pq", lambda *a: seen.append(a[-1]) or real(*a[:-1], 1)
    )
    ev = COCOPanopticEvaluator(hand_dataset, distributed=False, num_workers=3)
    ev.reset()
    ev.process([{"image_id": 5}], [{"panoptic_seg": (torch.zeros(10, 10), [])}])
    ev.evaluate()
    assert seen == [3]
