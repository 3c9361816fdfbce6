"""Cityscapes evaluators (official cityscapesscripts) on a generated Cityscapes-layout split:
one 64 x 128 image of frankfurt with road, one car and one person, and a void strip."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BitMasks, Instances
from PIL import Image

from mask2former.config import add_maskformer2_config
from mask2former.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOPanopticEvaluator,
    build_evaluator,
)
from tests.evaluation.world import run_evaluator

from . import crosscheck_data as X

pytest.importorskip("cityscapesscripts")
from cityscapesscripts.helpers.labels import id2label, labels  # noqa: E402

H, W = 64, 128
NAME = "frankfurt_000000_000019"
THINGS = [lb.name for lb in labels if lb.hasInstances and not lb.ignoreInEval]
STUFF = [lb.name for lb in sorted(labels, key=lambda x: x.trainId) if 0 <= lb.trainId < 255]
CAR = (slice(10, 30), slice(30, 60))  # 600 px (cityscapes ignores instances < 100 px)
PERSON = (slice(35, 60), slice(70, 90))


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    gt_dir = root / "gtFine" / "val"
    (gt_dir / "frankfurt").mkdir(parents=True)
    ids = np.full((H, W), 7, np.uint8)  # road
    ids[:, :20] = 0  # unlabeled (ignored in evaluation)
    ids[CAR], ids[PERSON] = 26, 24
    inst = ids.astype(np.uint16)
    inst[CAR], inst[PERSON] = 26000, 24000
    Image.fromarray(ids).save(gt_dir / "frankfurt" / f"{NAME}_gtFine_labelIds.png")
    Image.fromarray(inst).save(gt_dir / "frankfurt" / f"{NAME}_gtFine_instanceIds.png")
    image = root / "leftImg8bit" / "val" / "frankfurt" / f"{NAME}_leftImg8bit.png"
    record = {"file_name": str(image), "image_id": NAME, "height": H, "width": W}
    train_ids = np.vectorize(lambda i: id2label[int(i)].trainId)(ids)
    return {
        "gt_dir": str(gt_dir),
        "record": record,
        "train_ids": np.where(train_ids == 255, 0, train_ids),
    }


def _register(name, split, evaluator_type, **extra):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [split["record"]])
    MetadataCatalog.get(name).set(
        gt_dir=split["gt_dir"],
        thing_classes=THINGS,
        stuff_classes=STUFF,
        ignore_label=255,
        evaluator_type=evaluator_type,
        **extra,
    )
    return [split["record"]]


def _cfg(tmp_path):
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    test = cfg.MODEL.MASK_FORMER.TEST
    test.PANOPTIC_ON = test.INSTANCE_ON = test.SEMANTIC_ON = True
    return cfg


def _sem(train_ids):
    return torch.nn.functional.one_hot(torch.from_numpy(train_ids), 19).permute(2, 0, 1).float()


def _instances(items):
    inst = Instances((H, W))
    masks = torch.zeros(len(items), H, W, dtype=torch.bool)
    for i, (region, _, _) in enumerate(items):
        masks[i][region] = True
    inst.pred_masks = masks
    inst.pred_boxes = BitMasks(masks).get_bounding_boxes()
    inst.scores = torch.tensor([s for _, _, s in items])
    inst.pred_classes = torch.tensor([THINGS.index(c) for _, c, _ in items])
    return inst


def test_semantic_perfect_and_hand_worked(split, tmp_path):
    recs = _register("_eval_cs_sem", split, "cityscapes_sem_seg")
    ev = build_evaluator(_cfg(tmp_path), "_eval_cs_sem")
    assert [type(e) for e in ev.evaluators] == [CityscapesSemSegEvaluator]
    res = run_evaluator(ev, recs, {NAME: {"sem_seg": _sem(split["train_ids"])}})
    assert res["sem_seg"]["IoU"] == pytest.approx(100)
    # The car predicted as truck: IoU road 1, person 1, car 0, truck 0 (predicted only) -> 50.
    wrong = split["train_ids"].copy()
    wrong[CAR] = id2label[27].trainId
    res = run_evaluator(
        build_evaluator(_cfg(tmp_path), "_eval_cs_sem"), recs, {NAME: {"sem_seg": _sem(wrong)}}
    )
    assert res["sem_seg"]["IoU"] == pytest.approx(50)


def test_instance_perfect_and_missed_car(split, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recs = _register("_eval_cs_inst", split, "cityscapes_instance")
    ev = build_evaluator(_cfg(tmp_path), "_eval_cs_inst")
    assert [type(e) for e in ev.evaluators] == [CityscapesInstanceEvaluator]
    perfect = _instances([(CAR, "car", 0.9), (PERSON, "person", 0.8)])
    res = run_evaluator(ev, recs, {NAME: {"instances": perfect}})
    assert res["segm"]["AP"] == pytest.approx(100) and res["segm"]["AP50"] == pytest.approx(100)
    # Car missed: AP car 0, person 1; cityscapes averages over classes with ground truth -> 50.
    res = run_evaluator(
        build_evaluator(_cfg(tmp_path), "_eval_cs_inst"),
        recs,
        {NAME: {"instances": _instances([(PERSON, "person", 0.8)])}},
    )
    assert res["segm"]["AP"] == pytest.approx(50)
    assert not (tmp_path / "matches.json").exists()  # the script's dump stays out of the cwd


def test_panoptic_type_selects_three_evaluators(split, tmp_path):
    _register(
        "_eval_cs_pan",
        split,
        "cityscapes_panoptic_seg",
        panoptic_json="unused.json",
        panoptic_root="unused",
        thing_dataset_id_to_contiguous_id={26: 13},
        stuff_dataset_id_to_contiguous_id={7: 0},
        label_divisor=1000,
    )
    ev = build_evaluator(_cfg(tmp_path), "_eval_cs_pan")
    assert [type(e) for e in ev.evaluators] == [
        COCOPanopticEvaluator,
        CityscapesSemSegEvaluator,
        CityscapesInstanceEvaluator,
    ]


def test_trainer_gives_each_test_set_its_own_folder(split, tmp_path):
    from mask2former.engine.trainer import Trainer

    for name in ("_eval_cs_a", "_eval_cs_b"):
        _register(name, split, "sem_seg")  # SemSegEvaluator: writes sem_seg_predictions.json there
    cfg = _cfg(tmp_path)
    dirs = [
        Trainer.build_evaluator(cfg, n).evaluators[0]._output_dir
        for n in ("_eval_cs_a", "_eval_cs_b")
    ]
    assert dirs == [
        str(tmp_path / "inference" / "_eval_cs_a"),
        str(tmp_path / "inference" / "_eval_cs_b"),
    ]


def test_two_inputs_with_one_basename_is_an_error(tmp_path):
    name = X.fresh_name("_xcheck_cityscapes_basename")
    MetadataCatalog.get(name).set(gt_dir=str(tmp_path), thing_classes=["car"])
    ev = CityscapesSemSegEvaluator(name)
    ev.reset()
    out = {"sem_seg": torch.zeros(19, 4, 8)}
    stem = "aachen_000000_000019_leftImg8bit.png"
    for city in ("a", "b"):
        ev.process([{"file_name": str(tmp_path / city / stem), "image_id": city}], [out])
    with pytest.raises(ValueError, match="both map to prediction file"):
        ev.evaluate()
