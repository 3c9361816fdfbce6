"""Semantic evaluation: hand-worked mIoU/fwIoU/mACC/pACC, 8- and 16-bit labels, ignore_label,
ground truth from panoptic PNGs, and the semantic-PQ tool."""

import importlib.util
import json
import logging
import math
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator as D2SemSegEvaluator
from PIL import Image

from mask2former.config import add_maskformer2_config
from mask2former.data.datasets.custom import register_panoptic_dataset, register_semantic_dataset
from mask2former.evaluation import SemSegEvaluator, build_evaluator
from mask2former.evaluation.sem_seg_evaluation import (
    check_miou_convention,
    load_semantic_gt,
    read_label_file,
    semseg_metrics,
)
from tests.evaluation.world import run_evaluator

from . import crosscheck_data as X

IGN = 255  # ignore
GT = [
    np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, IGN, IGN], [2, 2, IGN, IGN]]),
    np.array([[0, 0, 0, 0], [3, 3, 3, 3], [3, 3, 3, 3], [3, 3, 3, 3]]),
]
PRED = [
    np.array([[0, 0, 0, 1], [0, 0, 1, 1], [2, 1, 3, 3], [2, 2, 3, 3]]),
    np.array([[0, 0, 3, 3], [3, 3, 3, 3], [3, 3, 3, 3], [3, 3, 2, 2]]),
]
NAMES = ["a", "b", "c", "d"]
# By hand: tp = (6, 3, 3, 10), GT pixels = (8, 4, 4, 12),
# predicted pixels on valid GT = (7, 4, 5, 12)
IOU = np.array([6 / 9, 3 / 5, 3 / 6, 10 / 14])
ACC = np.array([6 / 8, 3 / 4, 3 / 4, 10 / 12])
EXPECTED = {
    "mIoU": 100 * IOU.mean(),
    "fwIoU": 100 * (IOU * np.array([8, 4, 4, 12]) / 28).sum(),
    "mACC": 100 * ACC.mean(),
    "pACC": 100 * 22 / 28,
}


def _scores(labels):
    """(K, H, W) one-hot scores whose argmax is `labels`."""
    return torch.nn.functional.one_hot(torch.from_numpy(labels), 4).permute(2, 0, 1).float()


def _register(name, tmp_path, ignore=IGN, writer=None):
    records = []
    for i, gt in enumerate(GT):
        gt = np.where(gt == IGN, ignore, gt)
        path = writer(tmp_path, i, gt) if writer else str(tmp_path / f"{name}_{i}.png")
        if not writer:
            Image.fromarray(gt.astype(np.uint8)).save(path)
        records.append(
            dict(file_name=f"{name}/{i}.jpg", sem_seg_file_name=path, image_id=i, height=4, width=4)
        )
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=NAMES, ignore_label=ignore, evaluator_type="sem_seg"
    )
    return records


def _check(res):
    for k, v in EXPECTED.items():
        assert res[k] == pytest.approx(v), k
    for i, n in enumerate(NAMES):
        assert res[f"IoU-{n}"] == pytest.approx(100 * IOU[i])
        assert res[f"ACC-{n}"] == pytest.approx(100 * ACC[i])


def test_hand_worked_miou_8bit(tmp_path):
    recs = _register("_eval_sem8", tmp_path)
    ev = SemSegEvaluator("_eval_sem8", output_dir=str(tmp_path / "out"))
    res = run_evaluator(ev, recs, {i: {"sem_seg": _scores(p)} for i, p in enumerate(PRED)})
    _check(res["sem_seg"])
    assert (tmp_path / "out" / "sem_seg_predictions.json").exists()


def test_16bit_tif_and_png_with_ignore_65535(tmp_path):
    """ADE20K-full style: 16-bit labels (.tif, and a 16-bit .png), ignore_label 65535."""
    import tifffile

    def writer(root, i, gt):
        if i == 0:
            path = str(root / "full_0.tif")
            tifffile.imwrite(path, gt.astype(np.uint16))
        else:
            path = str(root / "full_1.png")
            Image.fromarray(gt.astype(np.uint16)).save(path)
        return path

    recs = _register("_eval_sem16", tmp_path, ignore=65535, writer=writer)
    ev = SemSegEvaluator("_eval_sem16")
    _check(
        run_evaluator(ev, recs, {i: {"sem_seg": _scores(p)} for i, p in enumerate(PRED)})["sem_seg"]
    )


def test_perfect_is_100_and_labels_out_of_range_raise(tmp_path):
    recs = _register("_eval_sem_perfect", tmp_path)
    perfect = {i: {"sem_seg": _scores(np.where(g == IGN, 0, g))} for i, g in enumerate(GT)}
    res = run_evaluator(SemSegEvaluator("_eval_sem_perfect"), recs, perfect)["sem_seg"]
    assert res["mIoU"] == res["fwIoU"] == res["mACC"] == res["pACC"] == 100.0

    MetadataCatalog.remove("_eval_sem_perfect")  # now 255 is an invalid label, not "ignore"
    MetadataCatalog.get("_eval_sem_perfect").set(stuff_classes=NAMES, ignore_label=254)
    with pytest.raises(ValueError, match="outside"):
        run_evaluator(SemSegEvaluator("_eval_sem_perfect"), recs, perfect)


def test_semantic_gt_from_panoptic_pngs(tmp_path):
    """Records without sem_seg_file_name: GT computed from pan_seg_file_name + segments_info."""
    from panopticapi.utils import id2rgb

    records = []
    for i, gt in enumerate(GT):
        pan = np.zeros(gt.shape, np.int32)
        infos = []
        for seg_id, c in enumerate(np.unique(gt[gt != IGN]), start=1):
            pan[gt == c] = seg_id * 7  # arbitrary ids
            infos.append({"id": seg_id * 7, "category_id": int(c), "iscrowd": 0})
        path = str(tmp_path / f"pan{i}.png")
        Image.fromarray(id2rgb(pan)).save(path)
        records.append(
            dict(
                file_name=f"p/{i}.jpg",
                pan_seg_file_name=path,
                segments_info=infos,
                image_id=i,
                height=4,
                width=4,
            )
        )
    name = "_eval_sem_from_pan"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=NAMES, ignore_label=IGN)
    res = run_evaluator(
        SemSegEvaluator(name), records, {i: {"sem_seg": _scores(p)} for i, p in enumerate(PRED)}
    )
    _check(res["sem_seg"])


def test_semantic_pq_tool_hand_worked(tmp_path):
    """Each class one segment. By hand (IoU > 0.5 matches):
    image 1: a IoU 4/5, b 3/5, c 3/4 (TPs); d lies on VOID only (ignored).
    image 2: a IoU 2/4 = 0.5 (not > 0.5: FN + FP), d 10/14 (TP), c predicted only (FP).
    """
    recs = _register("_eval_sem_pq", tmp_path)
    out = tmp_path / "out"
    run_evaluator(
        SemSegEvaluator("_eval_sem_pq", output_dir=str(out)),
        recs,
        {i: {"sem_seg": _scores(p)} for i, p in enumerate(PRED)},
    )
    pq = {"a": 0.8 / 2, "b": 0.6, "c": 0.75 / 1.5, "d": 10 / 14}
    sq = {"a": 0.8, "b": 0.6, "c": 0.75, "d": 10 / 14}
    rq = {"a": 0.5, "b": 1.0, "c": 1 / 1.5, "d": 1.0}

    spec = importlib.util.spec_from_file_location(
        "evaluate_pq_for_semantic_segmentation",
        os.path.join(
            os.path.dirname(__file__),
            "..",
            "..",
            "tools",
            "evaluate_pq_for_semantic_segmentation.py",
        ),
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    res = tool.main(
        ["--dataset-name", "_eval_sem_pq", "--json-file", str(out / "sem_seg_predictions.json")]
    )
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100 * np.mean(list(pq.values())))
    assert res["panoptic_seg"]["SQ"] == pytest.approx(100 * np.mean(list(sq.values())))
    assert res["panoptic_seg"]["RQ"] == pytest.approx(100 * np.mean(list(rq.values())))
    for n in NAMES:
        assert res["panoptic_seg"][f"PQ-{n}"] == pytest.approx(100 * pq[n])
    _check(res["sem_seg"])
    assert "| PQ | SQ | RQ |" in (out / "results.md").read_text()
    assert json.loads((out / "results.json").read_text())["sem_seg"]["mIoU"] == pytest.approx(
        EXPECTED["mIoU"]
    )


XNAMES = [c["name"] for c in X.CATEGORIES]
K = len(XNAMES)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("crosscheck_semseg"))
    data = X.write_dataset(root)
    # register_semantic_dataset pairs files of one flat folder by name
    for key, ext in (("images", ".jpg"), ("semantic", ".png")):
        flat = os.path.join(root, f"flat_{key}")
        os.makedirs(flat)
        for _, stem in X.IMAGES:
            src = os.path.join(data[key], stem + ext)
            shutil.copy(src, os.path.join(flat, stem.replace("/", "_") + ext))
        data[f"flat_{key}"] = flat
    return data


def _image_id(record) -> int:
    stem = os.path.splitext(record["file_name"])[0]
    return next(i for i, s in X.IMAGES if stem.endswith(s) or stem.endswith(s.replace("/", "_")))


def register(data, how: str) -> str:
    name = X.fresh_name(f"_xcheck_semseg_{how}")
    if how == "semantic":
        register_semantic_dataset(name, data["flat_images"], data["flat_semantic"], XNAMES)
    else:
        register_panoptic_dataset(
            name,
            data["images"],
            data["panoptic"],
            data["panoptic_json"],
            sem_seg_root=data["semantic"] if how == "panoptic_files" else None,
        )
    return name


def expected(gt_classes_only: bool) -> dict:
    ids = [i for i, _ in X.IMAGES]
    gts = [X.semantic_gt(i) for i in ids]
    preds = [X.semantic_prediction(i) for i in ids]
    return X.semseg_definition(gts, preds, K, XNAMES, gt_classes_only)


def output_of(record):
    return X.sem_seg_output(X.semantic_prediction(_image_id(record)), K)


@pytest.mark.parametrize("convention", ["v0.6", "gt_classes"])
@pytest.mark.parametrize("how", ["semantic", "panoptic_files", "panoptic_only"])
def test_metrics_equal_definition(data, tmp_path, how, convention):
    name = register(data, how)
    records = DatasetCatalog.get(name)
    assert len(records) == 3
    ev = SemSegEvaluator(name, output_dir=str(tmp_path), miou_convention=convention)
    res = X.run(ev, records, output_of)["sem_seg"]
    X.assert_all_close(res, expected(gt_classes_only=convention == "gt_classes"))


@pytest.mark.parametrize("how", ["semantic", "panoptic_files"])
def test_v06_equals_detectron2_v06(data, tmp_path, how):
    """detectron2 v0.6's SemSegEvaluator (needs semantic PNGs) is the official v0.6 convention."""
    name = register(data, how)
    records = DatasetCatalog.get(name)
    ours = X.run(SemSegEvaluator(name, output_dir=str(tmp_path)), records, output_of)
    official = X.run(D2SemSegEvaluator(name, distributed=False), records, output_of)
    X.assert_all_close(ours["sem_seg"], dict(official["sem_seg"]))


def test_config_key_selects_the_convention(data, tmp_path):
    name = register(data, "semantic")
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    assert cfg.TEST.MIOU_CONVENTION == "v0.6"
    records = DatasetCatalog.get(name)
    res = {}
    for convention in ("v0.6", "gt_classes"):
        cfg.TEST.MIOU_CONVENTION = convention
        cfg.OUTPUT_DIR = str(tmp_path / convention)
        res[convention] = X.run(build_evaluator(cfg, name), records, output_of)["sem_seg"]["mIoU"]
    assert res["v0.6"] == pytest.approx(expected(False)["mIoU"], abs=0.01)
    assert res["gt_classes"] == pytest.approx(expected(True)["mIoU"], abs=0.01)
    assert res["gt_classes"] > res["v0.6"] + 1  # dog and water: predicted only
    cfg.TEST.MIOU_CONVENTION = "newest"
    with pytest.raises(ValueError, match="TEST.MIOU_CONVENTION"):
        build_evaluator(cfg, name)
    assert MetadataCatalog.get(name).evaluator_type == "sem_seg"


# ----------------------------------------------------------------------------------------------
# Semantic metrics at their conventions' edges, hand-worked (evaluation/sem_seg_evaluation.py).
#
# mIoU averages over classes present in the ground truth OR the prediction: a class that is only
# predicted counts with IoU 0 (detectron2's convention); prediction pixels on VOID (ignore_label)
# are not scored.


CLASS_NAMES3 = ["a", "b", "c"]


def test_metrics_with_a_class_that_is_only_predicted():
    # conf[pred, gt]: gt a = 4 px (3 -> a, 1 -> c), gt b = 4 px (2 -> b, 2 -> a); c never in gt.
    conf = np.array([[3, 2, 0], [0, 2, 0], [1, 0, 0]])
    res = semseg_metrics(conf, CLASS_NAMES3)
    # IoU a = 3 / (4 + 5 - 3) = 0.5, IoU b = 2 / (4 + 2 - 2) = 0.5, c: NaN but counted as 0.
    assert res["IoU-a"] == pytest.approx(50) and res["IoU-b"] == pytest.approx(50)
    assert math.isnan(res["IoU-c"]) and math.isnan(res["ACC-c"])
    assert res["mIoU"] == pytest.approx(100 * (0.5 + 0.5) / 3)
    assert res["fwIoU"] == pytest.approx(100 * (0.5 * 4 / 8 + 0.5 * 4 / 8))
    assert res["ACC-a"] == pytest.approx(75) and res["ACC-b"] == pytest.approx(50)
    assert res["mACC"] == pytest.approx(100 * (0.75 + 0.5) / 2)  # only classes in the gt
    assert res["pACC"] == pytest.approx(100 * 5 / 8)
    assert list(res)[:2] == ["mIoU", "fwIoU"]


def test_metrics_of_a_class_absent_from_both_do_not_count():
    conf = np.array([[3, 0, 0], [1, 4, 0], [0, 0, 0]])
    res = semseg_metrics(conf, CLASS_NAMES3)
    iou_a, iou_b = 3 / (3 + 4 - 3), 4 / (4 + 5 - 4)
    assert res["mIoU"] == pytest.approx(100 * (iou_a + iou_b) / 2)
    assert math.isnan(res["IoU-c"])


def test_empty_confusion_matrix_gives_nan():
    res = semseg_metrics(np.zeros((3, 3), dtype=np.int64), CLASS_NAMES3)
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert math.isnan(res[key]), key


def test_evaluator_skips_void_pixels_and_counts_a_predicted_only_class(tmp_path):
    """gt (1 x 8): a a a a VOID VOID b b; prediction: a a a a c c b a. The two c pixels lie on
    VOID (not scored), the last pixel is b predicted as a."""
    gt = np.array([[0, 0, 0, 0, 255, 255, 1, 1]], dtype=np.uint8)
    Image.fromarray(gt).save(tmp_path / "gt.png")
    name = "_test_semseg_void_predicted_only"
    MetadataCatalog.get(name).set(stuff_classes=CLASS_NAMES3, ignore_label=255)
    records = [{"file_name": "im.jpg", "sem_seg_file_name": str(tmp_path / "gt.png")}]
    ev = SemSegEvaluator(name, distributed=False, dataset_records=records)
    ev.reset()
    pred = torch.tensor([0, 0, 0, 0, 2, 2, 1, 0])
    scores = torch.nn.functional.one_hot(pred, 3).T.float().view(3, 1, 8)
    ev.process([{"file_name": "im.jpg"}], [{"sem_seg": scores}])
    res = ev.evaluate()["sem_seg"]
    iou_a, iou_b = 4 / (4 + 5 - 4), 1 / (2 + 1 - 1)
    assert res["IoU-a"] == pytest.approx(100 * iou_a) and res["IoU-b"] == pytest.approx(50)
    assert math.isnan(res["IoU-c"])  # c only on VOID: neither in gt nor scored
    assert res["mIoU"] == pytest.approx(100 * (iou_a + iou_b) / 2)
    assert res["pACC"] == pytest.approx(100 * 5 / 6)
    assert ev._conf_matrix.sum() == 6


# ----------------------------------------------------------------------------------------------
# Label files, error messages, dataset ids, outputs and the gather across processes
# (mutation testing, issue 26).


def test_metrics_count_a_class_with_one_pixel():
    # c: one gt pixel (predicted as a); d: predicted on one pixel only (gt b).
    conf = np.array([[2, 0, 1, 0], [0, 3, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    res = semseg_metrics(conf, ["a", "b", "c", "d"])
    assert res["IoU-c"] == 0.0 and res["ACC-c"] == 0.0  # in the gt: counted, IoU 0
    assert math.isnan(res["IoU-d"])  # only predicted: NaN per class, but counted in mIoU
    iou_a, iou_b = 2 / (2 + 3 - 2), 3 / (4 + 3 - 3)
    assert res["mIoU"] == pytest.approx(100 * (iou_a + iou_b) / 4)
    assert res["mACC"] == pytest.approx(100 * (1 + 3 / 4 + 0) / 3)


def test_read_label_file_tiff_png_and_errors(tmp_path, monkeypatch):
    import tifffile

    labels = np.array([[0, 1, 300], [65535, 2, 3]], dtype=np.uint16)
    calls = []
    real = tifffile.imread
    monkeypatch.setattr(tifffile, "imread", lambda p: calls.append(p) or real(p))
    for name in ("a.tif", "b.TIFF"):
        tifffile.imwrite(str(tmp_path / name), labels)
        out = read_label_file(str(tmp_path / name))
        assert out.dtype == np.int64 and out.tolist() == labels.tolist()
    assert len(calls) == 2  # TIFFs are read with tifffile
    # Without tifffile Pillow reads the (uncompressed) 16-bit TIFF.
    monkeypatch.setitem(sys.modules, "tifffile", None)
    assert read_label_file(str(tmp_path / "a.tif")).tolist() == labels.tolist()
    # A colour image is refused with the fix.
    path = str(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(path)
    with pytest.raises(ValueError) as err:
        read_label_file(path)
    assert str(err.value) == (
        f"{path}: expected a single-channel label image (H, W), got shape (2, 3, 3). "
        "Semantic ground truth must hold one class index per pixel (colour-coded label "
        "images have to be converted first, e.g. with the dataset's prepare_* script)."
    )


def test_load_semantic_gt_without_a_label_file():
    for record in ({"file_name": "x.jpg"}, {"file_name": "x.jpg", "segments_info": []}):
        with pytest.raises(ValueError) as err:
            load_semantic_gt(record, 255)
        assert str(err.value) == (
            "record 'x.jpg' has neither 'sem_seg_file_name' nor 'pan_seg_file_name' + "
            "'segments_info': no semantic ground truth to evaluate against."
        )


def test_unknown_miou_convention_message():
    with pytest.raises(ValueError) as err:
        check_miou_convention("newest")
    assert str(err.value) == (
        "mIoU convention 'newest' (TEST.MIOU_CONVENTION): expected one of ('v0.6', "
        "'gt_classes'): 'v0.6' = detectron2 v0.6 and the paper (a class only predicted counts "
        "as IoU 0), 'gt_classes' = newer detectron2 (mean over classes with ground truth only)."
    )


def _one_image_dataset(tmp_path, gt, name="_test_semseg_one_image", **meta):
    path = str(tmp_path / f"{name}.png")
    Image.fromarray(np.asarray(gt, dtype=np.uint8)).save(path)
    records = [{"file_name": "im.jpg", "sem_seg_file_name": path}]
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(**meta)
    return name, records, path


def _scores3(pred) -> torch.Tensor:
    pred = torch.as_tensor(pred)
    return torch.nn.functional.one_hot(pred, 3).permute(2, 0, 1).float()


def test_evaluator_errors_name_the_problem(tmp_path):
    name = "_test_semseg_errors"
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(ignore_label=255)
    with pytest.raises(ValueError) as err:
        SemSegEvaluator(name, dataset_records=[])
    assert str(err.value) == (
        f"SemSegEvaluator('{name}'): metadata lacks ['stuff_classes']; register the dataset "
        "with stuff_classes=[...] (one name per class index) and ignore_label."
    )
    # 11 labels >= K = 3 that are not ignore_label: the message lists the first 10.
    gt = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 255]]
    name, records, path = _one_image_dataset(
        tmp_path, gt, stuff_classes=CLASS_NAMES3, ignore_label=255
    )
    ev = SemSegEvaluator(name, distributed=False, dataset_records=records)
    ev.reset()
    with pytest.raises(KeyError) as err:
        ev.process([{"file_name": "other.jpg"}], [{"sem_seg": _scores3([[0]])}])
    assert err.value.args[0] == f"other.jpg is not an image of dataset '{name}'"
    with pytest.raises(ValueError) as err:
        ev.process([{"file_name": "im.jpg"}], [{"sem_seg": _scores3([[0, 1]])}])
    assert str(err.value) == (
        "im.jpg: prediction is (1, 2) but the ground truth is (1, 15); the model must return "
        "sem_seg at the input's 'height' x 'width' (the original image size)."
    )
    with pytest.raises(ValueError) as err:
        ev.process([{"file_name": "im.jpg"}], [{"sem_seg": _scores3([[0] * 15])}])
    assert str(err.value) == (
        f"{path}: labels [3, 4, 5, 6, 7, 8, 9, 10, 11, 12] are outside [0, 3) and are not "
        "ignore_label=255. Fix the dataset's ignore_label or its label files (they must hold "
        "contiguous class indices)."
    )


def test_evaluator_writes_dataset_ids_results_and_log(tmp_path):
    name, records, _ = _one_image_dataset(
        tmp_path,
        [[0, 0, 1, 2]],
        stuff_classes=CLASS_NAMES3,
        ignore_label=255,
        stuff_dataset_id_to_contiguous_id={10: 0, 20: 1, 30: 2},
    )
    logger = logging.getLogger("mask2former.evaluation.sem_seg_evaluation")
    messages = []
    handler = logging.Handler()
    handler.emit = lambda r: messages.append(r.getMessage())
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        ev = SemSegEvaluator(name, output_dir=str(tmp_path), dataset_records=records)
        ev.reset()
        ev.process([{"file_name": "im.jpg"}], [{"sem_seg": _scores3([[0, 1, 1, 2]])}])
        res = ev.evaluate()["sem_seg"]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    written = json.loads((tmp_path / "sem_seg_predictions.json").read_text())
    assert sorted((p["file_name"], p["category_id"]) for p in written) == [
        ("im.jpg", 10),
        ("im.jpg", 20),
        ("im.jpg", 30),
    ]
    saved = torch.load(tmp_path / "sem_seg_evaluation.pth", weights_only=False)  # numpy floats
    assert saved == pytest.approx(dict(res), nan_ok=True)
    assert messages == [
        f"Semantic segmentation on {name}: mIoU {res['mIoU']:.2f}, fwIoU {res['fwIoU']:.2f}, "
        f"mACC {res['mACC']:.2f}, pACC {res['pACC']:.2f}"
    ]


def test_a_predicted_class_without_a_dataset_id(tmp_path):
    name, records, _ = _one_image_dataset(
        tmp_path,
        [[0, 0, 1, 2]],
        name="_test_semseg_no_id",
        stuff_classes=CLASS_NAMES3,
        ignore_label=255,
        stuff_dataset_id_to_contiguous_id={10: 0, 20: 1},
    )
    pred = [{"sem_seg": _scores3([[0, 1, 1, 2]])}]
    ev = SemSegEvaluator(name, output_dir=str(tmp_path), dataset_records=records)
    ev.reset()
    with pytest.raises(ValueError) as err:
        ev.process([{"file_name": "im.jpg"}], pred)
    assert str(err.value) == (
        f"predicted class 2 is not in stuff_dataset_id_to_contiguous_id of '{name}'"
    )
    # Without a predictions file to write, the ids are never needed.
    for kw in ({"output_dir": str(tmp_path), "save_predictions_json": False}, {}):
        ev = SemSegEvaluator(name, dataset_records=records, **kw)
        ev.reset()
        ev.process([{"file_name": "im.jpg"}], pred)
        assert ev.evaluate()["sem_seg"]["IoU-c"] == pytest.approx(100)


def test_evaluator_sums_the_confusion_matrices_of_all_processes(tmp_path, monkeypatch):
    """Two processes simulated: this one's matrix and predictions, plus another's."""
    from detectron2.utils import comm

    name, records, _ = _one_image_dataset(
        tmp_path,
        [[0, 0, 1, 1]],
        name="_test_semseg_gather",
        stuff_classes=CLASS_NAMES3,
        ignore_label=255,
    )
    other_conf = np.zeros((3, 3), dtype=np.int64)
    other_conf[2, 2] = 2  # the other process saw 2 pixels of c, predicted c
    other_pred = {"file_name": "other.jpg", "category_id": 2, "segmentation": {}}
    monkeypatch.setattr(comm, "synchronize", lambda: None)
    monkeypatch.setattr(comm, "all_gather", lambda x: [x, other_conf])
    monkeypatch.setattr(comm, "gather", lambda x: [x, [other_pred]])
    ev = SemSegEvaluator(name, output_dir=str(tmp_path), dataset_records=records)  # distributed
    ev.reset()
    ev.process([{"file_name": "im.jpg"}], [{"sem_seg": _scores3([[0, 0, 1, 0]])}])
    res = ev.evaluate()["sem_seg"]
    assert res["IoU-c"] == pytest.approx(100) and res["IoU-b"] == pytest.approx(50)
    assert res["pACC"] == pytest.approx(100 * 5 / 6)
    written = json.loads((tmp_path / "sem_seg_predictions.json").read_text())
    assert [p["file_name"] for p in written] == ["im.jpg", "im.jpg", "other.jpg"]
    # Only the main process returns results.
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    assert ev.evaluate() is None


def test_bad_labels_of_a_panoptic_record_name_its_png(tmp_path):
    """Ground truth from a panoptic PNG: the message names that PNG."""
    from panopticapi.utils import id2rgb

    path = str(tmp_path / "pan.png")
    Image.fromarray(id2rgb(np.array([[1, 1, 2]], dtype=np.int32))).save(path)
    infos = [{"id": 1, "category_id": 0, "iscrowd": 0}, {"id": 2, "category_id": 5, "iscrowd": 0}]
    records = [{"file_name": "p.jpg", "pan_seg_file_name": path, "segments_info": infos}]
    name = "_test_semseg_bad_pan"
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    MetadataCatalog.get(name).set(stuff_classes=CLASS_NAMES3, ignore_label=255)
    ev = SemSegEvaluator(name, distributed=False, dataset_records=records)
    ev.reset()
    with pytest.raises(ValueError, match=f"^{path}: labels \\[5\\] are outside"):
        ev.process([{"file_name": "p.jpg"}], [{"sem_seg": _scores3([[0, 0, 0]])}])
