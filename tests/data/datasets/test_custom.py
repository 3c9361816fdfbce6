"""The one-call registration helpers for user data, end to end: files on disk -> registration ->
records and metadata -> a training mapper (and detectron2's train loader)."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.projects.deeplab import add_deeplab_config
from PIL import Image

from mask2former import add_maskformer2_config
from mask2former.data.dataset_mappers import MAPPERS
from mask2former.data.datasets import (
    register_instance_dataset,
    register_panoptic_dataset,
    register_semantic_dataset,
    semantic_from_panoptic_record,
    write_semantic_from_panoptic,
)

H, W = 24, 32


@pytest.fixture
def unique_name(request):
    names = []

    def make(kind):
        name = f"_test_custom_{kind}_{request.node.name}_{len(names)}"
        names.append(name)
        return name

    yield make
    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
        if n in MetadataCatalog.list():
            MetadataCatalog.remove(n)


def _cfg(name, mapper, **overrides):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.DATASETS.TRAIN = (name,)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper
    cfg.INPUT.MIN_SIZE_TRAIN = (32,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (16, 16)
    cfg.INPUT.COLOR_AUG_SSD = True
    cfg.INPUT.SIZE_DIVISIBILITY = 32
    cfg.INPUT.IMAGE_SIZE = 32
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def _mapper(cfg):
    return MAPPERS[cfg.INPUT.DATASET_MAPPER_NAME](cfg, True)


def _write_images(folder, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / f"im{i}.jpg")


def _box_mask(y0, y1, x0, x1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


# ---- (a) COCO instance JSON + images ---------------------------------------------------------
def test_register_instance_dataset(tmp_path, unique_name):
    _write_images(tmp_path / "images")
    rle = mask_util.encode(np.asfortranarray(_box_mask(2, 20, 2, 30)))
    rle["counts"] = rle["counts"].decode()
    anns = []
    for i in range(2):
        anns.append(
            {
                "id": 2 * i + 1,
                "image_id": i,
                "category_id": 17,
                "iscrowd": 0,
                "bbox": [4, 4, 10, 8],
                "area": 80,
                "segmentation": [[4, 4, 14, 4, 14, 12, 4, 12]],
            }
        )
        anns.append(
            {
                "id": 2 * i + 2,
                "image_id": i,
                "category_id": 42,
                "iscrowd": 0,
                "bbox": [2, 2, 28, 18],
                "area": 504,
                "segmentation": rle,
            }
        )
    js = {
        "images": [{"id": i, "file_name": f"im{i}.jpg", "height": H, "width": W} for i in range(2)],
        "annotations": anns,
        "categories": [{"id": 42, "name": "dog"}, {"id": 17, "name": "cat"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(js))

    name = unique_name("ins")
    register_instance_dataset(name, tmp_path / "instances.json", tmp_path / "images")
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco"
    assert meta.thing_classes == ["cat", "dog"]  # sorted by category id, before any loading
    assert meta.thing_dataset_id_to_contiguous_id == {17: 0, 42: 1}
    records = DatasetCatalog.get(name)
    assert len(records) == 2

    for mapper_name in ("mask_former_instance", "coco_instance_lsj"):
        cfg = _cfg(name, mapper_name)
        out = _mapper(cfg)(records[0])
        inst = out["instances"]
        assert set(inst.gt_classes.tolist()) <= {0, 1} and len(inst) >= 1
        assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 32, 32)
    loader = build_detection_train_loader(cfg, mapper=_mapper(cfg))
    batch = next(iter(loader))
    assert len(batch) == 2 and all("instances" in b for b in batch)
    with pytest.raises(ValueError, match="already registered"):
        register_instance_dataset(name, tmp_path / "instances.json", tmp_path / "images")


# ---- (b) COCO panoptic JSON + PNGs (+ semantic PNGs) -----------------------------------------
def _write_panoptic(root):
    _write_images(root / "images")
    (root / "panoptic").mkdir()
    ids = np.full((H, W), 7, np.int64)  # "grass" (stuff, id 9)
    ids[4:12, 4:12] = 300  # "ball" (thing, id 3)
    ids[14:20, 20:30] = 301  # another ball
    ids[0, :] = 0  # unlabeled
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    anns = []
    for i in range(2):
        Image.fromarray(rgb).save(root / "panoptic" / f"im{i}.png")
        anns.append(
            {
                "image_id": i,
                "file_name": f"im{i}.png",
                "segments_info": [
                    {"id": 7, "category_id": 9, "iscrowd": 0},
                    {"id": 300, "category_id": 3, "iscrowd": 0},
                    {"id": 301, "category_id": 3, "iscrowd": 0},
                ],
            }
        )
    js = {
        "images": [{"id": i, "file_name": f"im{i}.jpg", "height": H, "width": W} for i in range(2)],
        "annotations": anns,
        "categories": [
            {"id": 3, "name": "ball", "isthing": 1, "color": [250, 0, 0]},
            {"id": 9, "name": "grass", "isthing": 0},
        ],
    }
    (root / "panoptic.json").write_text(json.dumps(js))
    return ids


@pytest.mark.parametrize("with_semantic_pngs", [False, True])
def test_register_panoptic_dataset(tmp_path, unique_name, monkeypatch, with_semantic_pngs):
    monkeypatch.setenv("MASK2FORMER_CACHE", str(tmp_path / "cache"))
    ids = _write_panoptic(tmp_path)
    name = unique_name("pan")
    sem_root = None
    if with_semantic_pngs:  # written with the helper, from the panoptic PNGs
        tmp_name = unique_name("pan_tmp")
        register_panoptic_dataset(
            tmp_name, tmp_path / "images", tmp_path / "panoptic", tmp_path / "panoptic.json"
        )
        sem_root = tmp_path / "semantic"
        write_semantic_from_panoptic(DatasetCatalog.get(tmp_name), str(sem_root))
    register_panoptic_dataset(
        name,
        tmp_path / "images",
        tmp_path / "panoptic",
        tmp_path / "panoptic.json",
        sem_seg_root=sem_root,
        instances_json=tmp_path / "given.json" if with_semantic_pngs else None,
    )
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert (meta.ignore_label, meta.label_divisor) == (255, 1000)
    assert meta.stuff_classes == ["ball", "grass"] and meta.thing_classes == ["ball"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0}
    assert meta.stuff_dataset_id_to_contiguous_id == {3: 0, 9: 1}  # covers all classes
    assert meta.stuff_colors[0] == [250, 0, 0] and len(meta.stuff_colors[1]) == 3
    if with_semantic_pngs:
        assert meta.json_file.endswith("given.json")
    else:  # instance ground truth written from the panoptic PNGs by the instance evaluator
        assert not hasattr(meta, "json_file")  # reading the metadata writes nothing
        assert not (tmp_path / "cache").exists()
        from mask2former.evaluation.instance_evaluation import InstanceSegEvaluator

        InstanceSegEvaluator(name, distributed=False)
        assert meta.json_file.startswith(str(tmp_path / "cache"))
        gt = json.loads(open(meta.json_file).read())
        assert gt["categories"] == [{"id": 3, "name": "ball", "isthing": 1, "color": [250, 0, 0]}]
        assert [
            (a["image_id"], a["category_id"], a["bbox"], a["area"]) for a in gt["annotations"]
        ] == [
            (0, 3, [4, 4, 8, 8], 64),
            (0, 3, [20, 14, 10, 6], 60),
            (1, 3, [4, 4, 8, 8], 64),
            (1, 3, [20, 14, 10, 6], 60),
        ]
        assert np.array_equal(mask_util.decode(gt["annotations"][1]["segmentation"]), ids == 301)
    assert meta.panoptic_json.endswith("panoptic.json") and meta.panoptic_root.endswith("panoptic")

    records = DatasetCatalog.get(name)
    rec = records[0]
    assert rec["file_name"].endswith("images/im0.jpg") and rec["pan_seg_file_name"].endswith(
        "im0.png"
    )
    assert [(s["category_id"], s["isthing"]) for s in rec["segments_info"]] == [
        (1, False),
        (0, True),
        (0, True),
    ]
    assert ("sem_seg_file_name" in rec) == with_semantic_pngs

    expected_sem = np.select([ids == 7, ids >= 300], [1, 0], 255)
    assert np.array_equal(semantic_from_panoptic_record(rec), expected_sem)
    if with_semantic_pngs:
        assert np.array_equal(np.asarray(Image.open(rec["sem_seg_file_name"])), expected_sem)

    cfg = _cfg(name, "mask_former_panoptic", **{"INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 0.8})
    out = _mapper(cfg)(rec)
    assert out["image"].shape == (3, 32, 32) and out["sem_seg"].shape == (32, 32)
    inst = out["instances"]
    assert inst.gt_masks.shape[1:] == (32, 32) and inst.gt_masks.flatten(1).any(1).all()
    for c, m in zip(inst.gt_classes.tolist(), inst.gt_masks):  # masks agree with sem_seg
        assert (out["sem_seg"][m] == c).all()

    cfg = _cfg(name, "coco_panoptic_lsj")
    out = _mapper(cfg)(rec)
    assert out["image"].shape == (3, 32, 32) and len(out["instances"]) >= 1
    batch = next(iter(build_detection_train_loader(cfg, mapper=_mapper(cfg))))
    assert len(batch) == 2


# ---- (c) image folder + label PNGs + class list ----------------------------------------------
def test_register_semantic_dataset(tmp_path, unique_name):
    _write_images(tmp_path / "images")
    (tmp_path / "labels").mkdir()
    label = np.zeros((H, W), np.uint8)
    label[:, 16:] = 2
    label[0] = 255
    for i in range(2):
        Image.fromarray(label).save(tmp_path / "labels" / f"im{i}.png")

    name = unique_name("sem")
    register_semantic_dataset(
        name,
        tmp_path / "images",
        tmp_path / "labels",
        ["sky", "tree", "road"],
        stuff_colors=[[0, 0, 255], [0, 255, 0], [128, 128, 128]],
    )
    meta = MetadataCatalog.get(name)
    assert (meta.evaluator_type, meta.ignore_label) == ("sem_seg", 255)
    assert meta.stuff_classes == ["sky", "tree", "road"] and len(meta.stuff_colors) == 3
    records = DatasetCatalog.get(name)
    assert len(records) == 2 and records[0]["sem_seg_file_name"].endswith("im0.png")

    cfg = _cfg(name, "mask_former_semantic")
    out = _mapper(cfg)(records[0])
    assert out["image"].shape == (3, 32, 32) and out["sem_seg"].dtype == torch.int64
    assert set(out["instances"].gt_classes.tolist()) <= {0, 2}
    assert (out["sem_seg"][16:] == 255).all()  # padding
    batch = next(iter(build_detection_train_loader(cfg, mapper=_mapper(cfg))))
    assert len(batch) == 2

    with pytest.raises(ValueError, match="ignore_label 1 is a class index"):
        register_semantic_dataset(
            unique_name("bad"), tmp_path / "images", tmp_path / "labels", ["a", "b"], ignore_label=1
        )
    missing = unique_name("missing")
    register_semantic_dataset(missing, tmp_path / "nope", tmp_path / "labels", ["a"])
    with pytest.raises(FileNotFoundError, match="nope"):
        DatasetCatalog.get(missing)


# ---- $MASK2FORMER_DATASETS: the user's registration file, run by register_user_datasets() -----
def test_user_datasets_file_runs_on_request_not_on_import(tmp_path):
    """What `MASK2FORMER_DATASETS=my_datasets.py python tools/train_net.py ...` relies on."""
    import os
    import subprocess
    import sys

    (tmp_path / "labels").mkdir()
    _write_images(tmp_path / "images", n=1)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "labels" / "im0.png")
    (tmp_path / "my_datasets.py").write_text(
        "from mask2former.data.datasets import register_semantic_dataset\n"
        f"register_semantic_dataset('mine_train', {str(tmp_path / 'images')!r}, "
        f"{str(tmp_path / 'labels')!r}, ['a', 'b'])\n"
    )
    code = (
        "import mask2former\nfrom detectron2.data import DatasetCatalog, MetadataCatalog\n"
        "assert 'mine_train' not in DatasetCatalog.list()  # importing runs no user file\n"
        "from mask2former.data.datasets import register_user_datasets\n"
        "register_user_datasets()  # what tools/train_net.py's main does in every process\n"
        "print(len(DatasetCatalog.get('mine_train')),"
        " MetadataCatalog.get('mine_train').stuff_classes)"
    )
    env = dict(os.environ, MASK2FORMER_DATASETS=str(tmp_path / "my_datasets.py"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "1 ['a', 'b']" in out.stdout

    from mask2former.data.datasets import register_user_datasets

    with pytest.raises(RuntimeError, match="MASK2FORMER_DATASETS entry .*no such file"):
        register_user_datasets(str(tmp_path / "missing.py"))
