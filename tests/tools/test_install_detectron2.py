"""Detectron2 imports on this stack, and missing compiled ops fail with a clear message."""

import importlib
import logging

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer
from PIL import Image


def _has_compiled_ops() -> bool:
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


needs_pypi_build = pytest.mark.skipif(
    _has_compiled_ops(), reason="detectron2 with compiled ops is installed: nothing is missing"
)


@pytest.mark.parametrize(
    "module",
    [
        "detectron2.layers",
        "detectron2.engine",
        "detectron2.evaluation",
        "detectron2.data",
        "detectron2.modeling",
        "detectron2.model_zoo",
        "detectron2.utils.visualizer",
        "detectron2.projects.point_rend",
        "detectron2.projects.point_rend.point_features",
        "detectron2.projects.deeplab",
    ],
)
def test_module_imports(module):
    importlib.import_module(module)


@needs_pypi_build
def test_rotated_box_iou_raises_clear_error():
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    with pytest.raises(RuntimeError, match="compiled op 'box_iou_rotated' is not available"):
        pairwise_iou_rotated(torch.zeros(1, 5), torch.zeros(1, 5))


@needs_pypi_build
def test_rotated_nms_raises_clear_error():
    from detectron2.layers import nms_rotated

    with pytest.raises(RuntimeError, match="compiled op 'nms_rotated' is not available"):
        nms_rotated(torch.zeros(1, 5), torch.ones(1), 0.5)


@needs_pypi_build
def test_fast_coco_eval_raises_clear_error():
    from detectron2.evaluation import fast_eval_api

    with pytest.raises(RuntimeError, match="fast COCO evaluation are missing"):
        _ = fast_eval_api._C.COCOevalEvaluateImages


@needs_pypi_build
def test_cuda_deform_conv_raises_clear_error():
    from detectron2.layers import deform_conv

    with pytest.raises(RuntimeError, match="compiled op 'deform_conv_forward'"):
        _ = deform_conv._C.deform_conv_forward


def test_cpu_deform_conv_still_works_through_torchvision():
    from detectron2.layers import DeformConv

    conv = DeformConv(2, 3, kernel_size=3, padding=1)
    x = torch.randn(1, 2, 5, 5)
    offset = torch.zeros(1, 18, 5, 5)
    assert conv(x, offset).shape == (1, 3, 5, 5)


@needs_pypi_build
def test_coco_evaluator_falls_back_to_pycocotools(tmp_path, caplog):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import COCOEvaluator

    name = "_test_fallback_coco"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(json_file=str(tmp_path / "gt.json"))
    (tmp_path / "gt.json").write_text(
        '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}'
    )
    with caplog.at_level(logging.WARNING):
        evaluator = COCOEvaluator(name, output_dir=str(tmp_path))
    assert evaluator._use_fast_impl is False


def test_numpy_aliases_fixed_for_masks_and_semseg():
    from detectron2.structures.masks import polygons_to_bitmask

    mask = polygons_to_bitmask([np.array([0, 0, 4, 0, 4, 4, 0, 4], dtype=float)], 6, 6)
    assert mask.dtype == bool and mask.sum() > 0


def test_pillow10_transforms_import():
    from detectron2.data.transforms import ExtentTransform
    from PIL import Image

    assert ExtentTransform((0, 0, 1, 1), (2, 2)).interp == Image.BILINEAR


def test_builtin_lr_scheduler_state_is_checkpointed():
    from detectron2.engine.hooks import LRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=10)
    sched.step()
    hook = LRScheduler(opt, sched)
    assert hook.state_dict()  # empty before the fix on torch >= 2.0


# ---- a 2-iteration detectron2 DefaultTrainer run on a tiny generated dataset, on the CPU ----
def make_semseg_dataset(root, n=4, size=64):
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        label = np.zeros((size, size), dtype=np.uint8)
        label[size // 4 : size // 2, size // 4 : size // 2] = 1
        img_path, label_path = root / f"{i}.jpg", root / f"{i}.png"
        Image.fromarray(img).save(img_path)
        Image.fromarray(label).save(label_path)
        records.append(
            dict(
                file_name=str(img_path),
                sem_seg_file_name=str(label_path),
                height=size,
                width=size,
                image_id=i,
            )
        )
    return records


def test_default_trainer_two_iterations(tmp_path):
    records = make_semseg_dataset(tmp_path)
    name = "_smoke_semseg_train"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: records)
        MetadataCatalog.get(name).set(stuff_classes=["bg", "fg"], ignore_label=255)

    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATASETS.TEST = ()
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.001
    cfg.SOLVER.MAX_ITER = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.OUTPUT_DIR = str(tmp_path / "out")

    trainer = DefaultTrainer(cfg)
    trainer.train()
    assert trainer.iter == 2
    assert (tmp_path / "out" / "model_final.pth").exists()
