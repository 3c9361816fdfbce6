"""build_evaluator on a generated panoptic dataset: PQ, instance AP (+ Boundary AP) and mIoU of
perfect, hand-worked and empty predictions; two processes (Gloo, CPU) give the same metrics as one."""

import json
import math

import pytest
import torch.multiprocessing as mp
from detectron2.config import get_cfg

from mask2former.config import add_maskformer2_config
from mask2former.evaluation import (
    COCOPanopticEvaluator,
    InstanceSegEvaluator,
    SemSegEvaluator,
    build_evaluator,
)
from tests.evaluation import world as T


def make_cfg(out, panoptic=True, instance=True, semantic=True, boundary=False):
    """The full config (every key at its default) with the outputs and Boundary AP chosen."""
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.OUTPUT_DIR = str(out)
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = panoptic
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = instance
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = semantic
    cfg.TEST.BOUNDARY_AP = boundary
    return cfg


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return T.make_panoptic_world(str(tmp_path_factory.mktemp("panoptic_world")))


@pytest.mark.parametrize(
    "evaluator_type", ["coco_panoptic_seg", "ade20k_panoptic_seg", "mapillary_vistas_panoptic_seg"]
)
def test_perfect_predictions_give_100(world, tmp_path, evaluator_type):
    records = T.register_panoptic_world("_eval_world", world, evaluator_type)
    ev = build_evaluator(make_cfg(tmp_path, boundary=True), "_eval_world")
    kinds = {type(e) for e in ev.evaluators}
    assert kinds == {COCOPanopticEvaluator, InstanceSegEvaluator, SemSegEvaluator}
    res = T.run_evaluator(ev, records, T.perfect_outputs())
    for group in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert res["panoptic_seg"][group] == pytest.approx(100)
    for task in ("segm", "bbox", "boundary"):
        assert res[task]["AP"] == pytest.approx(100), task
    assert res["sem_seg"]["mIoU"] == pytest.approx(100)
    out = tmp_path / "inference" / "_eval_world"
    for f in (
        "results.md",
        "results.csv",
        "results.json",
        "predictions.json",
        "coco_instances_results.json",
        "sem_seg_predictions.json",
    ):
        assert (out / f).exists(), f
    # instance results are written with the dataset's category ids, not contiguous ones
    assert {
        r["category_id"] for r in json.loads((out / "coco_instances_results.json").read_text())
    } == {7, 12}
    assert "dataset,task,metric,value" in (out / "results.csv").read_text()


def test_hand_worked_partial_case(world, tmp_path):
    """Per class (panopticapi rules; a prediction's pixels on VOID leave the union):
      sky:   image 1 IoU 2900/3000 (a dog FP covers 100 px), image 2 IoU 1   -> PQ = SQ = 0.98333
      grass: image 1 IoU 2000/3000, image 2 IoU 1                          -> PQ = SQ = 0.83333
      cat:   image 1 IoU 810/(900+900-810-90) = 0.9, image 2 1240/1600     -> PQ = SQ = 0.8375
      dog:   one FN (missed) + one FP                                      -> PQ = SQ = RQ = 0
    Instance AP (COCO masks, no VOID rule): cat IoUs 810/990 = 0.818 (score 0.9) and 0.775
    (score 0.7): AP 1 at thresholds 0.50-0.75, at 0.80 only the first matches (precision 1 up
    to recall 0.5: 51/101), 0 above -> AP_cat = (6 + 51/101) / 10; dog: one FP, AP 0.
    """
    records = T.register_panoptic_world("_eval_world", world)
    res = T.run_evaluator(
        build_evaluator(make_cfg(tmp_path), "_eval_world"), records, T.partial_outputs()
    )
    sky, grass, cat, dog = (2900 / 3000 + 1) / 2, (2000 / 3000 + 1) / 2, (0.9 + 0.775) / 2, 0.0
    p = res["panoptic_seg"]
    assert p["PQ"] == pytest.approx(100 * (sky + grass + cat + dog) / 4)
    assert p["SQ"] == pytest.approx(100 * (sky + grass + cat + dog) / 4)
    assert p["RQ"] == pytest.approx(75)
    assert p["PQ_th"] == pytest.approx(100 * (cat + dog) / 2)
    assert p["RQ_th"] == pytest.approx(50)
    assert p["PQ_st"] == pytest.approx(100 * (sky + grass) / 2)
    for name, v in (("sky", sky), ("grass", grass), ("cat", cat), ("dog", dog)):
        assert p[f"PQ-{name}"] == pytest.approx(100 * v)
    assert p["RQ-dog"] == 0 and p["RQ-cat"] == 100
    ap_cat = (6 + 51 / 101) / 10
    assert res["segm"]["AP-cat"] == pytest.approx(100 * ap_cat)
    assert res["segm"]["AP-dog"] == pytest.approx(0)
    assert res["segm"]["AP"] == pytest.approx(100 * ap_cat / 2)
    assert res["segm"]["AP50"] == pytest.approx(50)


def test_instance_gt_from_panoptic_when_no_instance_json(world, tmp_path, monkeypatch):
    """Mapillary Vistas has no instance json: the thing segments of the panoptic PNGs are used."""
    monkeypatch.setenv("MASK2FORMER_CACHE", str(tmp_path / "cache"))
    records = T.register_panoptic_world(
        "_eval_world", world, "mapillary_vistas_panoptic_seg", instance_json=False
    )
    res = T.run_evaluator(
        build_evaluator(make_cfg(tmp_path, True, True, False), "_eval_world"),
        records,
        T.partial_outputs(),
    )
    assert res["segm"]["AP-cat"] == pytest.approx(100 * (6 + 51 / 101) / 10)
    assert res["segm"]["AP-dog"] == pytest.approx(0)


def test_empty_predictions_give_0(world, tmp_path):
    records = T.register_panoptic_world("_eval_world", world)
    res = T.run_evaluator(
        build_evaluator(make_cfg(tmp_path, boundary=True), "_eval_world"),
        records,
        T.empty_outputs(),
    )
    assert res["panoptic_seg"]["PQ"] == 0 and res["panoptic_seg"]["PQ_st"] == 0
    for task in ("segm", "boundary"):
        assert res[task]["AP"] == 0 and res[task]["AP50"] == 0
        assert res[task]["AP-cat"] == 0 and res[task]["AP-dog"] == 0


def test_selection_follows_test_flags(world, tmp_path):
    T.register_panoptic_world("_eval_world", world, "coco_panoptic_seg")
    only_pq = build_evaluator(make_cfg(tmp_path, True, False, False), "_eval_world")
    assert [type(e) for e in only_pq.evaluators] == [COCOPanopticEvaluator]
    with pytest.raises(ValueError, match="PANOPTIC_ON"):
        build_evaluator(make_cfg(tmp_path, False, False, False), "_eval_world")
    T.register_panoptic_world("_eval_world", world, "coco")
    assert [type(e) for e in build_evaluator(make_cfg(tmp_path), "_eval_world").evaluators] == [
        InstanceSegEvaluator
    ]
    T.register_panoptic_world("_eval_world", world, "sem_seg")
    assert [type(e) for e in build_evaluator(make_cfg(tmp_path), "_eval_world").evaluators] == [
        SemSegEvaluator
    ]


def test_unknown_evaluator_type_lists_valid_ones(world, tmp_path):
    T.register_panoptic_world("_eval_world", world, "pascal_voc")
    with pytest.raises(ValueError, match="coco_panoptic_seg.*cityscapes_instance"):
        build_evaluator(make_cfg(tmp_path), "_eval_world")


def test_unknown_predicted_class_is_a_clear_error(world, tmp_path):
    records = T.register_panoptic_world("_eval_world", world, "coco")
    outputs = T.perfect_outputs()
    outputs[1]["instances"].pred_classes[:] = 0  # "sky" is not a thing class
    with pytest.raises(ValueError, match="thing_dataset_id_to_contiguous_id"):
        T.run_evaluator(build_evaluator(make_cfg(tmp_path), "_eval_world"), records, outputs)


def test_no_stuff_category_gives_nan_not_a_crash(tmp_path):
    """panopticapi's pq_average divides by zero when a group has no category; here it is NaN."""
    world = T.make_panoptic_world(str(tmp_path / "data"))
    with open(world["panoptic_json"]) as f:
        pj = json.load(f)
    pj["categories"] = [dict(c, isthing=1) for c in pj["categories"]]
    with open(world["panoptic_json"], "w") as f:
        json.dump(pj, f)
    records = T.register_panoptic_world("_eval_world_things", world)
    outputs = T.partial_outputs()
    before = [dict(s) for s in outputs[1]["panoptic_seg"][1]]
    res = T.run_evaluator(COCOPanopticEvaluator("_eval_world_things"), records, outputs)
    p = res["panoptic_seg"]
    assert p["PQ"] == pytest.approx(p["PQ_th"]) and p["PQ_st"] != p["PQ_st"]  # NaN
    assert outputs[1]["panoptic_seg"][1] == before  # the model's segments_info is not mutated


def _same(a, b):
    assert a.keys() == b.keys()
    for task in a:
        assert a[task].keys() == b[task].keys(), task
        for k, v in a[task].items():
            w = b[task][k]
            assert (v is None and w is None) or (
                v is not None
                and w is not None
                and (math.isnan(v) and math.isnan(w) or math.isclose(v, w, abs_tol=1e-9))
            ), (task, k, v, w)


@pytest.mark.timeout(300)
def test_two_gloo_processes_match_one(tmp_path):
    world = T.make_panoptic_world(str(tmp_path / "data"))
    records = T.register_panoptic_world("_eval_dist_world", world)
    single = T.run_evaluator(
        build_evaluator(make_cfg("", boundary=True), "_eval_dist_world", str(tmp_path / "single")),
        records,
        T.partial_outputs(),
    )
    out = tmp_path / "dist"
    out.mkdir()
    # spawn (not fork: forked children of a process that has used torch's thread pool can hang)
    mp.spawn(
        T.distributed_worker,
        nprocs=2,
        join=True,
        args=(2, str(tmp_path / "init"), world, make_cfg("", boundary=True), str(out)),
    )
    dist = json.loads((out / "results.json").read_text())
    single = json.loads(json.dumps(single))  # same NaN/float handling as the worker's file
    assert set(single) == {"panoptic_seg", "bbox", "segm", "boundary", "sem_seg"}
    _same(single, dist)
    assert (out / "rank0" / "results.md").exists() and not (out / "rank1" / "results.md").exists()
