"""tools/train_net.py --eval-only refuses weights that leave the model random, and a
NUM_CLASSES that does not match the test dataset, before evaluating anything."""

import importlib.util
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from mask2former.checkpoint.checks import CheckpointMismatchError

ROOT = Path(__file__).resolve().parents[2]
NAME = "_train_net_checks_val"


def _train_net():
    spec = importlib.util.spec_from_file_location("train_net", ROOT / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dataset():
    DatasetCatalog.register(NAME, lambda: [])
    MetadataCatalog.get(NAME).set(stuff_classes=["a", "b", "c"], evaluator_type="sem_seg")
    yield NAME
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def _args(train_net, tmp_path, *extra, **opts):
    opts = {
        "MODEL.DEVICE": "cpu",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 3,
        "DATASETS.TEST": f"('{NAME}',)",
        "OUTPUT_DIR": str(tmp_path / "out"),
        **opts,
    }
    flat = [str(x) for kv in opts.items() for x in kv]
    config = str(ROOT / "configs" / "demo" / "semantic.yaml")
    return train_net.argument_parser().parse_args(["--config-file", config, *extra, *flat])


def test_eval_only_with_weights_of_another_model_is_an_error(tmp_path, dataset, monkeypatch):
    monkeypatch.setenv("MASK2FORMER_MSDA_BACKEND", "pytorch")
    train_net = _train_net()
    weights = tmp_path / "other.pth"
    torch.save({"model": {"backbone.stem.conv1.weight": torch.zeros(1)}}, weights)
    with pytest.raises(CheckpointMismatchError) as e:
        train_net.main(_args(train_net, tmp_path, "--eval-only", **{"MODEL.WEIGHTS": weights}))
    assert f"--eval-only: checkpoint {weights} filled only 0.0% of the model's values" in str(
        e.value
    )
    assert "--allow-partial-weights" in str(e.value)
    assert _args(train_net, tmp_path, "--allow-partial-weights").allow_partial_weights


def test_num_classes_must_match_the_test_dataset(tmp_path, dataset):
    train_net = _train_net()
    args = _args(train_net, tmp_path, "--eval-only", **{"MODEL.SEM_SEG_HEAD.NUM_CLASSES": 5})
    with pytest.raises(
        ValueError,
        match=r"NUM_CLASSES is 5 but dataset '_train_net_checks_val' \(DATASETS.TEST\) has 3",
    ):
        train_net.main(args)
