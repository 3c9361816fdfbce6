"""A 2-iteration detectron2 DefaultTrainer run on a tiny generated dataset, on the CPU."""

import numpy as np
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer
from PIL import Image


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
