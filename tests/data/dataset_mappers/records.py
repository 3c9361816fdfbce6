"""Records and mappers over the generated scene of tests/data/dataset_mappers/conftest.py."""

import numpy as np
import pycocotools.mask as mask_util
from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config
from PIL import Image

from mask2former import add_maskformer2_config
from mask2former.data.dataset_mappers import (
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)

H, W = 20, 30  # original image size


def _id2rgb(ids):
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def _sem_record(s):
    return {
        "file_name": s["paths"]["image"],
        "sem_seg_file_name": s["paths"]["sem"],
        "height": H,
        "width": W,
        "image_id": 7,
    }


def _pan_record(s, with_sem=True):
    r = {
        "file_name": s["paths"]["image"],
        "pan_seg_file_name": s["paths"]["pan"],
        "segments_info": s["segments"],
        "height": H,
        "width": W,
        "image_id": 7,
    }
    if with_sem:
        r["sem_seg_file_name"] = s["paths"]["sem"]
    return r


def _semantic_mapper(augs, size_divisibility=-1, ignore=255):
    return MaskFormerSemanticDatasetMapper(
        True,
        augmentations=augs,
        image_format="RGB",
        ignore_label=ignore,
        size_divisibility=size_divisibility,
    )


# ---- panoptic ------------------------------------------------------------------------------
def _panoptic_mapper(augs, size_divisibility=-1):
    return MaskFormerPanopticDatasetMapper(
        True,
        augmentations=augs,
        image_format="RGB",
        ignore_label=255,
        size_divisibility=size_divisibility,
    )


# ---- instance ------------------------------------------------------------------------------
def _annotations():
    """The same kind of object in every mask format, plus a crowd and a tiny corner object."""
    a = np.zeros((H, W), np.uint8)
    a[2:8, 3:12] = 1
    rle = mask_util.encode(np.asfortranarray(a))
    rle_str = dict(rle, counts=rle["counts"].decode())
    # uncompressed RLE: column-major run lengths starting with zeros
    flat = a.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    poly = [[3.0, 2.0, 12.0, 2.0, 12.0, 8.0, 3.0, 8.0]]
    tiny = np.zeros((H, W), np.uint8)
    tiny[19, 29] = 1
    anns = [
        {"category_id": 0, "segmentation": poly, "iscrowd": 0},
        {"category_id": 1, "segmentation": rle_str, "iscrowd": 0},
        {"category_id": 2, "segmentation": {"size": [H, W], "counts": runs}, "iscrowd": 0},
        {"category_id": 3, "segmentation": a.copy(), "iscrowd": 0},
        {"category_id": 4, "segmentation": rle_str, "iscrowd": 1},
        {"category_id": 5, "segmentation": tiny, "iscrowd": 0},
    ]
    return a, tiny, anns


def _inst_record(scene):
    _, _, anns = _annotations()
    return {
        "file_name": scene["paths"]["image"],
        "height": H,
        "width": W,
        "image_id": 7,
        "annotations": anns,
    }


# ---- from_config ---------------------------------------------------------------------------
def _cfg(**overrides):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def write_image_and_labels(root, size: int):
    """root/img.png (random RGB), lab.png (class 1 square, ignore rows) and pan.png (ids 5 and
    300 in panopticapi's RGB encoding), all size x size; returns root."""
    img = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(img).save(root / "img.png")
    lab = np.zeros((size, size), np.uint8)
    lab[8:16, 8:16] = 1
    lab[:2] = 255
    Image.fromarray(lab).save(root / "lab.png")
    ids = np.zeros((size, size), np.int64)
    ids[:16] = 5
    ids[16:, :8] = 300
    Image.fromarray(_id2rgb(ids)).save(root / "pan.png")
    return root
