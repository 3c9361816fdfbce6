"""The datasets registered on `import mask2former`: names and metadata as published, clear errors
for missing files, and records read from tiny datasets written in the official ADE20K, COCO
panoptic, Cityscapes and Mapillary Vistas layouts, through to the training mappers."""

import contextlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.datasets import builtin as d2_builtin
from PIL import Image

import mask2former  # noqa: F401  (registers the datasets)
from mask2former.data.dataset_mappers import (
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)
from mask2former.data.datasets import (
    _utils,
    register_ade20k_instance,
    register_ade20k_panoptic,
    register_cityscapes,
    register_coco_panoptic_annos_semseg,
    register_mapillary_vistas,
    register_mapillary_vistas_panoptic,
)

REPO = Path(__file__).resolve().parents[3]


# ---- names and metadata --------------------------------------------------------------------
EXPECTED = {  # name: (evaluator_type, ignore_label, #stuff_classes)
    "coco_2017_train_panoptic_with_sem_seg": ("coco_panoptic_seg", 255, 133),
    "coco_2017_val_panoptic_with_sem_seg": ("coco_panoptic_seg", 255, 133),
    "ade20k_panoptic_train": ("ade20k_panoptic_seg", 255, 150),
    "ade20k_panoptic_val": ("ade20k_panoptic_seg", 255, 150),
    "ade20k_instance_train": ("coco", None, None),
    "ade20k_instance_val": ("coco", None, None),
    "ade20k_full_sem_seg_train": ("sem_seg", 65535, None),
    "ade20k_full_sem_seg_val": ("sem_seg", 65535, None),
    "mapillary_vistas_sem_seg_train": ("sem_seg", 65, 65),
    "mapillary_vistas_sem_seg_val": ("sem_seg", 65, 65),
    "mapillary_vistas_panoptic_train": ("mapillary_vistas_panoptic_seg", 65, 65),
    "mapillary_vistas_panoptic_val": ("mapillary_vistas_panoptic_seg", 65, 65),
    "ade20k_sem_seg_train": ("sem_seg", 255, 150),
    "cityscapes_fine_sem_seg_train": ("cityscapes_sem_seg", 255, 19),
    "cityscapes_fine_instance_seg_train": ("cityscapes_instance", None, 19),
    "cityscapes_fine_panoptic_train": ("cityscapes_panoptic_seg", 255, 19),
    "coco_2017_train_panoptic": ("coco_panoptic_seg", None, 133),
    "coco_2017_train": ("coco", None, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_names_and_metadata(name):
    assert name in DatasetCatalog.list()
    evaluator, ignore, n_stuff = EXPECTED[name]
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == evaluator
    if ignore is not None:
        assert meta.ignore_label == ignore
    if n_stuff is not None:
        assert len(meta.stuff_classes) == n_stuff
    if "panoptic" in name and "with_sem_seg" in name or name.startswith("ade20k_panoptic"):
        assert meta.label_divisor == 1000


def test_coco_panoptic_metadata_as_published():
    meta = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert len(meta.thing_classes) == 80 and meta.thing_classes[0] == "person"
    assert meta.stuff_classes[132] == "rug-merged"
    assert len(meta.stuff_dataset_id_to_contiguous_id) == 133  # all classes
    assert meta.thing_dataset_id_to_contiguous_id[1] == 0
    assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == list(range(80))
    assert meta.sem_seg_root.endswith("coco/panoptic_semseg_val2017")
    assert meta.json_file.endswith("coco/annotations/instances_val2017.json")
    assert len(MetadataCatalog.get("coco_2017_val_panoptic").thing_classes) == 80


def test_ade20k_and_mapillary_static_metadata():
    ade = MetadataCatalog.get("ade20k_panoptic_val")
    assert ade.stuff_classes[:3] == ["wall", "building", "sky"] and ade.stuff_classes[7] == "bed "
    assert ade.stuff_colors[0] == [120, 120, 120]
    assert ade.stuff_dataset_id_to_contiguous_id == {i: i for i in range(150)}
    assert len(MetadataCatalog.get("ade20k_sem_seg_val").stuff_colors) == 150
    mv = MetadataCatalog.get("mapillary_vistas_sem_seg_val")
    assert mv.stuff_classes[0] == "Bird" and "Unlabeled" not in mv.stuff_classes


def test_missing_files_error_names_path_and_step():
    with pytest.raises(FileNotFoundError, match=r"ADEChallengeData2016.*Download"):
        DatasetCatalog.get("ade20k_panoptic_val")
    with pytest.raises(FileNotFoundError, match=r"ADE20K_2021_17_01.*prepare_ade20k_full"):
        DatasetCatalog.get("ade20k_full_sem_seg_val")


# ---- official layouts ----------------------------------------------------------------------
@contextlib.contextmanager
def registered_under(root: Path, names, *register_fns):
    """Re-register `names` with files under `root` for the duration of the block."""
    saved = {}
    for n in names:
        saved[n] = (
            DatasetCatalog[n] if n in DatasetCatalog.list() else None,
            MetadataCatalog.get(n) if n in MetadataCatalog.list() else None,
            _utils._LAZY_FIELDS.pop(n, None),
        )
        if saved[n][0] is not None:
            DatasetCatalog.remove(n)
        if saved[n][1] is not None:
            MetadataCatalog.remove(n)
    try:
        for fn in register_fns:
            fn(str(root))
        yield
    finally:
        for n, (loader, meta, lazy) in saved.items():
            if n in DatasetCatalog.list():
                DatasetCatalog.remove(n)
            if n in MetadataCatalog.list():
                MetadataCatalog.remove(n)
            _utils._LAZY_FIELDS.pop(n, None)
            if loader is not None:
                DatasetCatalog.register(n, loader)
            if meta is not None:
                MetadataCatalog[n] = meta
            if lazy is not None:
                _utils._LAZY_FIELDS[n] = lazy


def _split_names(prefix):
    return [f"{prefix}_train", f"{prefix}_val"]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "datasets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _sem_mapper(ignore=255):
    return MaskFormerSemanticDatasetMapper(
        True,
        augmentations=[T.RandomFlip(prob=1.0)],
        image_format="RGB",
        ignore_label=ignore,
        size_divisibility=32,
    )


def test_ade20k_layout(tmp_path):
    from tests.datasets.layouts import STEM, write_ade20k

    write_ade20k(tmp_path)
    for script in ("prepare_ade20k_sem_seg", "prepare_ade20k_pan_seg", "prepare_ade20k_ins_seg"):
        _load_script(script).main(["--root", str(tmp_path), "--workers", "1"])

    names = (
        _split_names("ade20k_sem_seg")
        + _split_names("ade20k_panoptic")
        + _split_names("ade20k_instance")
    )
    with registered_under(
        tmp_path,
        names,
        d2_builtin.register_all_ade20k,
        register_ade20k_panoptic.register_all_ade20k_panoptic,
        register_ade20k_instance.register_all_ade20k_instance,
    ):
        meta = MetadataCatalog.get("ade20k_panoptic_train")  # things from the category table
        assert meta.thing_classes == ["bed ", "person"]
        assert meta.thing_dataset_id_to_contiguous_id == {7: 7, 12: 12}

        (sem_rec,) = DatasetCatalog.get("ade20k_sem_seg_train")
        out = _sem_mapper()(sem_rec)
        assert out["instances"].gt_classes.tolist() == [0, 3, 7]
        assert out["image"].shape == (3, 32, 32)

        (pan_rec,) = DatasetCatalog.get("ade20k_panoptic_train")
        assert pan_rec["image_id"] == STEM and pan_rec["file_name"].endswith(f"{STEM}.jpg")
        assert pan_rec["sem_seg_file_name"].endswith(f"annotations_detectron2/training/{STEM}.png")
        mapper = MaskFormerPanopticDatasetMapper(
            True,
            augmentations=[T.ResizeShortestEdge(12, 100)],
            image_format="RGB",
            ignore_label=255,
            size_divisibility=-1,
        )
        out = mapper(pan_rec)
        assert sorted(out["instances"].gt_classes.tolist()) == [0, 3, 7, 12]
        assert out["instances"].gt_masks.shape == (4, 12, 16)
        assert sorted(out["instances"].gt_masks.sum((1, 2)).tolist()) == [32, 32, 48, 48]

        (ins_rec,) = DatasetCatalog.get("ade20k_instance_train")
        assert MetadataCatalog.get("ade20k_instance_train").thing_classes == ["bed", "person"]
        mapper = MaskFormerInstanceDatasetMapper(
            True, augmentations=[T.RandomFlip(prob=1.0)], image_format="RGB", size_divisibility=-1
        )
        out = mapper(ins_rec)
        assert out["instances"].gt_classes.tolist() == [0, 1]  # contiguous: bed 0, person 1
        expected = np.zeros((6, 8), bool)
        expected[1:5, 1:3] = True  # the person, flipped
        assert np.array_equal(out["instances"].gt_masks[1].numpy(), expected)


def test_coco_panoptic_layout(tmp_path):
    from tests.datasets.layouts import write_coco_panoptic

    ids = write_coco_panoptic(tmp_path, "train2017")
    names = [
        "coco_2017_train_panoptic_with_sem_seg",
        "coco_2017_val_panoptic_with_sem_seg",
    ] + _split_names("coco_2017_panoptic")
    register = register_coco_panoptic_annos_semseg.register_all_coco_panoptic_annos_sem_seg
    with registered_under(tmp_path, names, register):
        with pytest.raises(
            FileNotFoundError,
            match=r"panoptic_semseg_train2017.*Run `python "
            r"datasets/prepare_coco_semantic_annos_from_panoptic_annos.py`",
        ):
            DatasetCatalog.get("coco_2017_train_panoptic_with_sem_seg")
        _load_script("prepare_coco_semantic_annos_from_panoptic_annos").main(
            ["--root", str(tmp_path), "--splits", "train2017", "--workers", "1"]
        )
        (rec,) = DatasetCatalog.get("coco_2017_train_panoptic_with_sem_seg")
        assert rec["file_name"].endswith("coco/train2017/000000000001.jpg")
        assert [(s["category_id"], s["isthing"]) for s in rec["segments_info"]] == [
            (0, True),
            (2, True),
            (132, False),
        ]
        mapper = MaskFormerPanopticDatasetMapper(
            True, augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=8
        )
        out = mapper(rec)
        assert out["instances"].gt_classes.tolist() == [0, 132]  # the crowd car is skipped
        assert np.array_equal(out["instances"].gt_masks[1, :4, :5].numpy(), ids == 70000)
        assert out["sem_seg"].shape == (8, 8) and out["sem_seg"][0, 3] == 132
        assert (out["sem_seg"][4:] == 255).all()


def test_cityscapes_layout(tmp_path):
    city = "aachen"
    base = "aachen_000000_000019_"
    img_dir = tmp_path / "cityscapes/leftImg8bit/train" / city
    gt_dir = tmp_path / "cityscapes/gtFine/train" / city
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    h, w = 16, 24
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(img_dir / f"{base}leftImg8bit.png")
    train_ids = np.full((h, w), 0, np.uint8)  # road
    train_ids[4:10, 6:14] = 13  # car
    train_ids[0, :] = 255
    Image.fromarray(train_ids).save(gt_dir / f"{base}gtFine_labelTrainIds.png")
    Image.fromarray(np.zeros((h, w), np.uint8)).save(gt_dir / f"{base}gtFine_labelIds.png")
    Image.fromarray(np.zeros((h, w), np.uint16)).save(gt_dir / f"{base}gtFine_instanceIds.png")
    polygons = {
        "imgHeight": h,
        "imgWidth": w,
        "objects": [
            {"label": "road", "polygon": [[0, 0], [23, 0], [23, 15], [0, 15]]},
            {"label": "car", "polygon": [[6, 4], [14, 4], [14, 10], [6, 10]]},
        ],
    }
    (gt_dir / f"{base}gtFine_polygons.json").write_text(json.dumps(polygons))

    names = [
        f"cityscapes_fine_{t}_{s}"
        for t in ("sem_seg", "instance_seg")
        for s in ("train", "val", "test")
    ]
    with registered_under(
        tmp_path,
        names,
        d2_builtin.register_all_cityscapes,
        register_cityscapes.register_all_cityscapes_checks,
    ):
        (rec,) = DatasetCatalog.get("cityscapes_fine_sem_seg_train")
        out = _sem_mapper()(rec)
        assert out["instances"].gt_classes.tolist() == [0, 13]
        assert len(MetadataCatalog.get("cityscapes_fine_sem_seg_train").stuff_colors) == 19

        (rec,) = DatasetCatalog.get("cityscapes_fine_instance_seg_train")
        mapper = MaskFormerInstanceDatasetMapper(
            True, augmentations=[], image_format="RGB", size_divisibility=-1
        )
        out = mapper(rec)
        assert out["instances"].gt_classes.tolist() == [2]  # car = 3rd thing class
        mask = out["instances"].gt_masks[0]
        assert mask[5:9, 7:13].all() and mask.sum() <= 9 * 11
        with pytest.raises(FileNotFoundError, match="leftImg8bit/val"):
            DatasetCatalog.get("cityscapes_fine_sem_seg_val")


def test_mapillary_vistas_layout(tmp_path):
    h, w = 8, 10
    for split in ("training", "validation"):
        d = tmp_path / "mapillary_vistas" / split
        for sub in ("images", "labels", "panoptic"):
            (d / sub).mkdir(parents=True)
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(d / "images/img1.jpg")
        labels = np.full((h, w), 13, np.uint8)  # 'Road'
        labels[2:5, 2:5] = 19  # 'Person'
        labels[7, :] = 65  # unlabeled
        Image.fromarray(labels).save(d / "labels/img1.png")
        pan = np.where(labels == 19, 2000, np.where(labels == 13, 1000, 0))
        rgb = np.stack([pan % 256, pan // 256 % 256, pan // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(d / "panoptic/img1.png")
        # 65 categories, ids 1..65 (test names; the metadata names are the static v1.2 list)
        cats = [{"id": i + 1, "name": f"c{i}", "isthing": int(i == 19)} for i in range(65)]
        js = {
            "images": [{"id": "img1", "file_name": "img1.jpg", "height": h, "width": w}],
            "annotations": [
                {
                    "image_id": "img1",
                    "file_name": "img1.png",
                    "segments_info": [
                        {"id": 1000, "category_id": 14, "iscrowd": 0},
                        {"id": 2000, "category_id": 20, "iscrowd": 0},
                    ],
                }
            ],
            "categories": cats,
        }
        (d / "panoptic/panoptic_2018.json").write_text(json.dumps(js))

    names = _split_names("mapillary_vistas_sem_seg") + _split_names("mapillary_vistas_panoptic")
    with registered_under(
        tmp_path,
        names,
        register_mapillary_vistas.register_all_mapillary_vistas,
        register_mapillary_vistas_panoptic.register_all_mapillary_vistas_panoptic,
    ):
        (rec,) = DatasetCatalog.get("mapillary_vistas_sem_seg_train")
        out = _sem_mapper(ignore=65)(rec)
        assert out["instances"].gt_classes.tolist() == [13, 19]
        assert (out["sem_seg"][7] == 65).all() and (out["sem_seg"][h:] == 65).all()

        meta = MetadataCatalog.get("mapillary_vistas_panoptic_val")
        assert meta.thing_dataset_id_to_contiguous_id == {20: 19}
        assert meta.stuff_dataset_id_to_contiguous_id[14] == 13
        (rec,) = DatasetCatalog.get("mapillary_vistas_panoptic_val")
        assert rec["sem_seg_file_name"].endswith("validation/labels/img1.png")
        mapper = MaskFormerPanopticDatasetMapper(
            True, augmentations=[], image_format="RGB", ignore_label=65, size_divisibility=-1
        )
        out = mapper(rec)
        assert out["instances"].gt_classes.tolist() == [13, 19]
        assert out["instances"].gt_masks[1].sum() == 9
