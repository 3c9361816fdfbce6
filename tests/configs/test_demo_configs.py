"""The instance and semantic variants of the demo config train (2 iterations) on demo_shapes data."""

import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory, demo_shapes):
    from mask2former.data.datasets.register_demo_shapes import register_demo_shapes

    root = str(tmp_path_factory.mktemp("demo_cfg") / "data")
    splits = {"train": (4, 0)}
    demo_shapes.prepare_demo_shapes(root, splits=splits, workers=1)
    names = register_demo_shapes(root, prefix="_test_cfg", splits=splits)
    yield
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant,dataset",
    [("instance", "_test_cfg_instance_train"), ("semantic", "_test_cfg_sem_seg_train")],
)
def test_demo_variant_trains(tiny_demo, tmp_path, variant, dataset):
    from mask2former.config import load_config
    from mask2former.engine import Trainer

    cfg = load_config(
        os.path.join(REPO, "configs", "demo", f"{variant}.yaml"),
        [
            "DATASETS.TRAIN",
            f"('{dataset}',)",
            "DATASETS.TEST",
            "()",
            "MODEL.DEVICE",
            "cpu",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.MAX_ITER",
            "2",
            "TEST.EVAL_PERIOD",
            "0",
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
    assert len(losses) == 2 and np.isfinite(losses).all()
