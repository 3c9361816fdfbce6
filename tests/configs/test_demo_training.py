"""The demo config learns: a few dozen iterations on demo_shapes cut the loss substantially."""

import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_demo_config_loss_falls(tmp_path, demo_shapes):
    from mask2former.config import load_config
    from mask2former.data.datasets.register_demo_shapes import register_demo_shapes
    from mask2former.engine import Trainer

    splits = {"train": (16, 0)}
    demo_shapes.prepare_demo_shapes(str(tmp_path / "data"), splits=splits, workers=1)
    names = register_demo_shapes(str(tmp_path / "data"), prefix="_test_train", splits=splits)
    try:
        cfg = load_config(
            os.path.join(REPO, "configs", "demo", "panoptic.yaml"),
            [
                "DATASETS.TRAIN",
                "('_test_train_panoptic_train',)",
                "DATASETS.TEST",
                "()",
                "MODEL.DEVICE",
                "cpu",
                "SOLVER.IMS_PER_BATCH",
                "4",
                "SOLVER.MAX_ITER",
                "40",
                "SOLVER.BASE_LR",
                "0.001",
                "SOLVER.WARMUP_ITERS",
                "5",
                "TEST.EVAL_PERIOD",
                "0",
                "INPUT.IMAGE_SIZE",
                "128",
                "INPUT.MIN_SCALE",
                "0.5",
                "INPUT.MAX_SCALE",
                "0.5",
                "DATALOADER.NUM_WORKERS",
                "0",
                "OUTPUT_DIR",
                str(tmp_path / "out"),
            ],
        )
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    assert len(losses) == 40 and np.isfinite(losses).all()
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.6 * first, f"loss fell from {first:.2f} to only {last:.2f}"
