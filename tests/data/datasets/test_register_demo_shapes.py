"""The demo_shapes registration: where the files are, metadata without files, nothing generated or
written by registering or reading metadata, a clear error when the files are missing."""

import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from mask2former.data.datasets import register_demo_shapes as demo
from mask2former.data.datasets._utils import MissingDatasetError


def test_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("MASK2FORMER_DEMO_DIR", raising=False)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert demo.demo_shapes_root() == str(tmp_path / "demo_shapes")
    monkeypatch.setenv("MASK2FORMER_DEMO_DIR", str(tmp_path / "x"))
    assert demo.demo_shapes_root() == str(tmp_path / "x")


def test_registration_writes_nothing_and_uses_the_helpers(tmp_path, demo_shapes):
    root = str(tmp_path / "lazy")
    splits = {"val": (3, 1)}
    names = demo.register_demo_shapes(root, prefix="_test_lazy", splits=splits)
    try:
        assert sorted(names) == [
            "_test_lazy_instance_val",
            "_test_lazy_panoptic_val",
            "_test_lazy_sem_seg_val",
        ]
        meta = MetadataCatalog.get("_test_lazy_panoptic_val")  # class metadata needs no files
        assert meta.stuff_classes == [c["name"] for c in demo.DEMO_CATEGORIES]
        assert meta.evaluator_type == "coco_panoptic_seg"
        assert MetadataCatalog.get("_test_lazy_instance_val").thing_classes == [
            "circle",
            "triangle",
            "square",
            "star",
        ]
        assert os.listdir(tmp_path) == []  # registering and reading metadata write nothing
        # Loading before generation: an error naming the folder and the command that creates it.
        for name in names:
            with pytest.raises(MissingDatasetError) as e:
                DatasetCatalog.get(name)
            assert f"'{root}' have not been generated" in str(e.value)
            assert "tools/generate_demo_shapes.py" in str(e.value)
        assert os.listdir(tmp_path) == []
        assert demo.demo_shapes_sources(["other", *names]) == [(os.path.abspath(root), splits)]

        demo_shapes.prepare_demo_shapes(root, splits=splits, workers=1)  # what train_net does
        records = DatasetCatalog.get("_test_lazy_panoptic_val")
        assert len(records) == 3 and os.path.exists(os.path.join(root, "VERSION"))
        assert os.path.isfile(records[0]["pan_seg_file_name"])
        assert len(DatasetCatalog.get("_test_lazy_sem_seg_val")) == 3
        inst = DatasetCatalog.get("_test_lazy_instance_val")
        assert {a["category_id"] for r in inst for a in r["annotations"]} <= {0, 1, 2, 3}
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_default_splits_error_gives_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MASK2FORMER_DEMO_DIR", str(tmp_path / "d"))
    names = demo.register_demo_shapes(prefix="_test_cmd")
    try:
        with pytest.raises(MissingDatasetError, match="have not been generated") as e:
            DatasetCatalog.get("_test_cmd_sem_seg_val")
        assert (
            f"`make demo`, or `python tools/generate_demo_shapes.py --root {tmp_path / 'd'}`"
            in (str(e.value))
        )
        os.makedirs(tmp_path / "d")
        (tmp_path / "d" / "VERSION").write_text('{"generator_version": 3}')
        with pytest.raises(MissingDatasetError, match="from another generator version"):
            DatasetCatalog.get("_test_cmd_sem_seg_val")
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_builtin_names_are_registered():
    for task in ("panoptic", "instance", "sem_seg"):
        for split in ("train", "val"):
            assert f"demo_shapes_{task}_{split}" in DatasetCatalog.list()
