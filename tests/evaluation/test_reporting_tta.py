"""results.json says whether the results come from test-time augmentation (reporting.py +
Trainer.test_with_TTA)."""

import json
import os

from detectron2.evaluation import DatasetEvaluator

from mask2former import load_config
from mask2former.engine.trainer import Trainer
from mask2former.evaluation.reporting import EvaluatorGroup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Fixed(DatasetEvaluator):
    def evaluate(self):
        return {"sem_seg": {"mIoU": 50.0}}


def test_plain_evaluation_is_marked_not_tta(tmp_path):
    group = EvaluatorGroup([_Fixed()], "d", str(tmp_path))
    group.reset()
    assert group.evaluate() == {"sem_seg": {"mIoU": 50.0}}  # the returned results are unchanged
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["sem_seg"]["mIoU"] == 50.0
    assert data["_run"] == {"test_time_augmentation": False}


def test_tta_evaluation_is_marked(tmp_path, monkeypatch):
    cfg = load_config(
        os.path.join(REPO, "configs", "demo", "semantic.yaml"), ["OUTPUT_DIR", str(tmp_path)]
    )
    monkeypatch.setattr(
        Trainer,
        "build_evaluator",
        classmethod(
            lambda cls, cfg, name, output_folder=None: EvaluatorGroup(
                [_Fixed()], name, output_folder
            )
        ),
    )

    def test(cls, cfg, model, evaluators):
        for e in evaluators:
            e.reset()
            e.evaluate()
        return {}

    monkeypatch.setattr(Trainer, "test", classmethod(test))
    Trainer.test_with_TTA(cfg, model=object())
    name = cfg.DATASETS.TEST[0]
    out = tmp_path / "inference_TTA" / name
    run = json.loads((out / "results.json").read_text())["_run"]
    assert run == {
        "test_time_augmentation": True,
        "min_sizes": [192, 256, 320],
        "max_size": 640,
        "flip": True,
    }
    assert "test-time augmentation" in (out / "results.md").read_text()
