"""SemSegEvaluator against the metric definitions (float64, written here) and detectron2 v0.6's
own `SemSegEvaluator`, for datasets registered with `register_semantic_dataset` and
`register_panoptic_dataset` (with semantic PNGs, and without: ground truth from the panoptic
PNGs). mIoU, fwIoU, mACC, pACC and per-class IoU/ACC to 0.01, in both mIoU conventions
(TEST.MIOU_CONVENTION). Data: tests/evaluation/crosscheck_data.py; "dog" and "water" are only
predicted, so the two conventions differ."""

import os
import shutil

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator as D2SemSegEvaluator

from mask2former.config import add_maskformer2_config
from mask2former.data.datasets.custom import register_panoptic_dataset, register_semantic_dataset
from mask2former.evaluation import SemSegEvaluator, build_evaluator

from . import crosscheck_data as X

NAMES = [c["name"] for c in X.CATEGORIES]
K = len(NAMES)


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
        register_semantic_dataset(name, data["flat_images"], data["flat_semantic"], NAMES)
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
    return X.semseg_definition(gts, preds, K, NAMES, gt_classes_only)


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
