"""Pieces that make a resumed run continue exactly, and the training loader's record checks
(mask2former/engine/resume.py)."""

import itertools
import logging
import random

import numpy as np
import pytest
import torch
from detectron2.data.samplers import TrainingSampler

from mask2former.data.validation import InvalidInputError, MissingFileError
from mask2former.engine.resume import IterationSeedHook, SkippableSampler, iteration_seed
from tests.data.dataset_mappers.records import write_image_and_labels


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_skippable_sampler_continues_the_stream():
    full = _take(TrainingSampler(10, seed=3), 40)
    s = SkippableSampler(TrainingSampler(10, seed=3))
    s.skip = 13  # e.g. iteration 13 with batch 1
    assert _take(s, 27) == full[13:]


def test_skippable_sampler_per_rank(monkeypatch):
    """With 2 ranks each rank takes stream[rank::2]; skipping 3 iterations x batch 4 global
    indices = 6 of each rank's."""
    from detectron2.utils import comm

    stream = _take(TrainingSampler(7, seed=1), 60)
    for rank in (0, 1):
        monkeypatch.setattr(comm, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(comm, "get_world_size", lambda: 2)
        s = SkippableSampler(TrainingSampler(7, seed=1), skip=3 * 4 // 2)
        assert _take(s, 10) == stream[rank::2][6:16]


class _FakeTrainer:
    iter = 0


def _draws():
    return (random.random(), float(np.random.rand()), float(torch.rand(())))


def test_iteration_seed_hook_is_a_function_of_the_iteration():
    hook = IterationSeedHook(base_seed=5)
    hook.trainer = _FakeTrainer()
    seen = {}
    for it in [0, 1, 2, 1, 0]:
        hook.trainer.iter = it
        hook.before_step()
        d = _draws()
        assert seen.setdefault(it, d) == d
    assert len({seen[i] for i in seen}) == 3
    assert iteration_seed(5, 1, 0) != iteration_seed(5, 1, 1) != iteration_seed(6, 1, 1)


def test_iteration_seed_hook_state_restores_a_random_base_seed():
    a = IterationSeedHook(base_seed=-1)  # SEED < 0: a random base seed ...
    b = IterationSeedHook(base_seed=-1)
    b.load_state_dict(a.state_dict())  # ... that the checkpoint carries to the resumed run
    assert b.base_seed == a.base_seed


S = 32


@pytest.fixture()
def files(tmp_path):
    return write_image_and_labels(tmp_path, S)


# ---- the training loader checks every record before training starts -----------------------------
def _cfg(name, num_classes):
    from mask2former.config import load_config

    return load_config(
        "",
        [
            "DATASETS.TRAIN",
            f"('{name}',)",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            str(num_classes),
            "INPUT.DATASET_MAPPER_NAME",
            "mask_former_instance",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.IMS_PER_BATCH",
            "1",
        ],
    )


def _register(name, records, classes):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=classes)


def _inst(files, annos):
    return dict(file_name=str(files / "img.png"), height=S, width=S, image_id=0, annotations=annos)


def test_train_loader_category_id_not_in_metadata(files):
    from mask2former.engine.resume import build_resumable_train_loader

    square = [8, 8, 16, 8, 16, 16, 8, 16]
    annos = [
        {
            "category_id": 0,
            "segmentation": [square],
            "iscrowd": 0,
            "bbox": [8, 8, 8, 8],
            "bbox_mode": 1,
        },
        {
            "category_id": 4,
            "segmentation": [square],
            "iscrowd": 0,
            "bbox": [8, 8, 8, 8],
            "bbox_mode": 1,
        },
    ]
    _register("_rel_badcat", [_inst(files, annos)], ["a", "b"])
    with pytest.raises(
        InvalidInputError,
        match=r"annotation #1 in .*img\.png has category_id 4.*valid ids: 0\.\.1 \(0=a, 1=b\)",
    ):
        build_resumable_train_loader(_cfg("_rel_badcat", 2), mapper=lambda d: d)


def test_train_loader_drops_short_polygons_with_a_count(files, caplog):
    from mask2former.engine.resume import build_resumable_train_loader

    square = [8, 8, 16, 8, 16, 16, 8, 16]
    annos = [
        {
            "category_id": 0,
            "segmentation": [square, [1, 1, 2, 2]],
            "iscrowd": 0,
            "bbox": [8, 8, 8, 8],
            "bbox_mode": 1,
        },
        {
            "category_id": 1,
            "segmentation": [[3, 3, 4, 4]],
            "iscrowd": 0,
            "bbox": [3, 3, 1, 1],
            "bbox_mode": 1,
        },
    ]
    _register("_rel_poly", [_inst(files, annos)], ["a", "b"])
    with caplog.at_level(logging.WARNING):
        loader = build_resumable_train_loader(_cfg("_rel_poly", 2), mapper=lambda d: d)
    assert "2 polygon(s) with fewer than 3 points were dropped" in caplog.text
    assert "1 instance(s) had no valid polygon left" in caplog.text
    batch = next(iter(loader))
    assert [a["segmentation"] for a in batch[0]["annotations"]] == [[square]]


def test_train_loader_missing_file_fails_at_start(files):
    from mask2former.engine.resume import build_resumable_train_loader

    _register(
        "_rel_missing", [dict(_inst(files, []), file_name=str(files / "lost.jpg"))], ["a", "b"]
    )
    cfg = _cfg("_rel_missing", 2)
    cfg.defrost()
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    with pytest.raises(MissingFileError, match=r"image .*lost\.jpg does not exist"):
        build_resumable_train_loader(cfg, mapper=lambda d: d)
