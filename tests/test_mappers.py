"""The five training mappers on tiny generated images: shapes, dtypes, class ids, masks that move
with the image under flip/crop/resize, padding values, and instances emptied by a crop dropped."""

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.projects.point_rend import ColorAugSSDTransform
from detectron2.structures import BitMasks, Boxes
from PIL import Image

from mask2former import add_maskformer2_config
from mask2former.data.dataset_mappers import (
    MAPPERS,
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)

H, W = 20, 30  # original image size


def _id2rgb(ids):
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


@pytest.fixture
def scene(tmp_path):
    """An image, a semantic map (0 = left third, 1 = the rest, 255 = top row), and a panoptic
    PNG with a stuff segment, two things (one tiny, in the bottom-right corner) and a crowd."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    sem = np.ones((H, W), np.uint8)
    sem[:, :10] = 0
    sem[0, :] = 255
    pan = np.full((H, W), 11, np.int64)  # stuff, class 3
    pan[5:10, 2:8] = 22  # thing A, class 1
    pan[18:20, 28:30] = 33  # tiny thing B, class 2
    pan[12:15, 12:16] = 44  # crowd, class 1
    segments = [
        {"id": 11, "category_id": 3, "iscrowd": 0},
        {"id": 22, "category_id": 1, "iscrowd": 0},
        {"id": 33, "category_id": 2, "iscrowd": 0},
        {"id": 44, "category_id": 1, "iscrowd": 1},
    ]
    paths = {k: str(tmp_path / f"{k}.png") for k in ("image", "sem", "pan")}
    Image.fromarray(image).save(paths["image"])  # PNG: lossless, so pixels can be compared
    Image.fromarray(sem).save(paths["sem"])
    Image.fromarray(_id2rgb(pan)).save(paths["pan"])
    return dict(image=image, sem=sem, pan=pan, segments=segments, paths=paths)


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


# ---- semantic ------------------------------------------------------------------------------
def test_semantic_outputs_and_flip(scene):
    out = _semantic_mapper([T.RandomFlip(prob=1.0)])(_sem_record(scene))
    assert {"file_name", "image_id", "height", "width", "image", "sem_seg", "instances"} <= set(out)
    assert (out["height"], out["width"], out["image_id"]) == (H, W, 7)
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, H, W)
    assert out["sem_seg"].dtype == torch.int64
    flipped = scene["sem"][:, ::-1]
    assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), scene["image"][:, ::-1])
    assert np.array_equal(out["sem_seg"].numpy(), flipped)
    inst = out["instances"]
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [0, 1]
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (2, H, W)
    for k, c in enumerate([0, 1]):
        assert np.array_equal(inst.gt_masks[k].numpy(), flipped == c)
    assert inst.image_size == (H, W)


def test_semantic_resize_crop_and_padding(scene):
    augs = [T.ResizeShortestEdge(40, 1000), T.CropTransform(0, 4, 32, 16)]  # x0, y0, w, h
    out = _semantic_mapper(augs, size_divisibility=24)(_sem_record(scene))
    assert out["image"].shape == (3, 24, 48)  # 16x32 padded to multiples of 24
    big = np.kron(scene["sem"], np.ones((2, 2), np.uint8))  # 2x nearest resize
    assert np.array_equal(out["sem_seg"][:16, :32].numpy(), big[4:20, 0:32])
    assert (out["sem_seg"][16:] == 255).all() and (out["sem_seg"][:, 32:] == 255).all()
    assert (out["image"][:, 16:] == 128).all() and (out["image"][:, :, 32:] == 128).all()
    masks = out["instances"].gt_masks
    assert masks.shape == (2, 24, 48) and not masks[:, 16:].any() and not masks[:, :, 32:].any()
    assert out["instances"].image_size == (24, 48)


def test_semantic_16bit_labels(tmp_path, scene):
    """ADE20K-full style: 16-bit labels (class 800, ignore 65535) survive resizing exactly."""
    label = np.full((H, W), 65535, np.uint16)
    label[5:, :] = 800
    path = str(tmp_path / "label.tif")
    Image.fromarray(label).save(path)
    rec = {"file_name": scene["paths"]["image"], "sem_seg_file_name": path}
    out = _semantic_mapper([T.ResizeShortestEdge(40, 1000)], ignore=65535)(rec)
    assert set(out["sem_seg"].unique().tolist()) == {800, 65535}
    assert out["instances"].gt_classes.tolist() == [800]
    assert out["image_id"] == "image"  # a record without image_id gets the file stem


def test_semantic_requires_label(scene):
    with pytest.raises(ValueError, match="sem_seg_file_name"):
        _semantic_mapper([])({"file_name": scene["paths"]["image"]})


# ---- panoptic ------------------------------------------------------------------------------
def _panoptic_mapper(augs, size_divisibility=-1):
    return MaskFormerPanopticDatasetMapper(
        True,
        augmentations=augs,
        image_format="RGB",
        ignore_label=255,
        size_divisibility=size_divisibility,
    )


@pytest.mark.parametrize("with_sem", [True, False])
def test_panoptic_targets(scene, with_sem):
    out = _panoptic_mapper([T.RandomFlip(prob=1.0)])(_pan_record(scene, with_sem))
    pan = scene["pan"][:, ::-1]
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [3, 1, 2]  # crowd skipped
    for k, sid in enumerate([11, 22, 33]):
        assert np.array_equal(inst.gt_masks[k].numpy(), pan == sid)
    assert inst.gt_masks.dtype == torch.bool
    if with_sem:
        assert np.array_equal(out["sem_seg"].numpy(), scene["sem"][:, ::-1])
    else:  # derived from the panoptic PNG: segment classes (crowd included)
        expected = np.select([pan == 11, pan == 22, pan == 33, pan == 44], [3, 1, 2, 1], 255)
        assert np.array_equal(out["sem_seg"].numpy(), expected)


def test_panoptic_crop_drops_empty_and_pads(scene):
    # crop the top-left 16x16: thing B (bottom-right corner) disappears
    out = _panoptic_mapper([T.CropTransform(0, 0, 16, 16)], size_divisibility=32)(
        _pan_record(scene)
    )
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [3, 1]
    assert inst.gt_masks.shape == (2, 32, 32) and not inst.gt_masks[:, 16:].any()
    assert np.array_equal(inst.gt_masks[1, :16, :16].numpy(), scene["pan"][:16, :16] == 22)
    assert (out["sem_seg"][16:] == 255).all() and (out["image"][:, 16:] == 128).all()


def test_panoptic_category_area_crop_without_semantic_png(scene):
    """SINGLE_CATEGORY_MAX_AREA < 1 needs labels: derived from the panoptic PNG."""
    crop = T.RandomCrop_CategoryAreaConstraint("absolute", (10, 10), 0.9, 255)
    out = _panoptic_mapper([crop])(_pan_record(scene, with_sem=False))
    assert out["image"].shape == (3, 10, 10)
    assert len(out["instances"]) >= 1


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


def test_instance_all_mask_formats_and_flip(scene):
    a, tiny, _ = _annotations()
    mapper = MaskFormerInstanceDatasetMapper(
        True, augmentations=[T.RandomFlip(prob=1.0)], image_format="RGB", size_divisibility=-1
    )
    out = mapper(_inst_record(scene))
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 1, 2, 3, 5]  # crowd (4) skipped
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (5, H, W)
    # RLE/bitmask: exact; polygon rasterisation may differ by a boundary pixel
    for k in (1, 2, 3):
        assert np.array_equal(inst.gt_masks[k].numpy(), a[:, ::-1].astype(bool))
    inter = (inst.gt_masks[0].numpy() & a[:, ::-1].astype(bool)).sum()
    assert inter >= 0.8 * a.sum() and inst.gt_masks[0].sum() <= 1.3 * a.sum()
    assert np.array_equal(inst.gt_masks[4].numpy(), tiny[:, ::-1].astype(bool))


def test_instance_crop_drops_empty_and_pads(scene):
    mapper = MaskFormerInstanceDatasetMapper(
        True,
        augmentations=[T.CropTransform(0, 0, 16, 16)],
        image_format="RGB",
        size_divisibility=32,
    )
    out = mapper(_inst_record(scene))
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 1, 2, 3]  # the corner object is gone
    assert out["image"].shape == (3, 32, 32) and (out["image"][:, 16:] == 128).all()
    assert inst.gt_masks.shape == (4, 32, 32) and not inst.gt_masks[:, 16:].any()


# ---- LSJ -----------------------------------------------------------------------------------
def test_lsj_instance(scene):
    a, _, _ = _annotations()
    # resize x2 (40x60), then a 32x32 crop at (x0=0, y0=8) padded to 48x48 like FixedSizeCrop
    tfms = [
        T.ResizeTransform(H, W, 40, 60),
        T.CropTransform(0, 8, 32, 32),
        T.PadTransform(0, 0, 16, 16, 32, 32, 128.0),
    ]
    mapper = COCOInstanceNewBaselineDatasetMapper(True, tfm_gens=tfms, image_format="RGB")
    out = mapper(_inst_record(scene))
    assert out["image"].shape == (3, 48, 48) and out["image"].dtype == torch.uint8
    assert (out["image"][:, 32:] == 128).all()
    assert out["padding_mask"][32:].all() and not out["padding_mask"][:32, :32].any()
    inst = out["instances"]
    assert isinstance(inst.gt_masks, BitMasks) and isinstance(inst.gt_boxes, Boxes)
    assert inst.gt_classes.tolist() == [0, 1, 2, 3]  # crowd skipped, corner object cropped away
    big = np.kron(a, np.ones((2, 2), np.uint8))[8:40, 0:32].astype(bool)
    assert np.array_equal(inst.gt_masks.tensor[1, :32, :32].numpy(), big)
    ys, xs = np.nonzero(big)
    assert inst.gt_boxes.tensor[1].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_lsj_panoptic_pads_semantic_with_ignore(scene):
    tfms = [T.RandomFlip(prob=1.0), T.PadTransform(0, 0, 2, 4, W, H, 128.0)]
    mapper = COCOPanopticNewBaselineDatasetMapper(True, tfm_gens=tfms, image_format="RGB")
    out = mapper(_pan_record(scene))
    inst = out["instances"]
    assert isinstance(inst.gt_masks, BitMasks) and inst.gt_masks.tensor.shape == (3, H + 4, W + 2)
    assert inst.gt_classes.tolist() == [3, 1, 2]
    assert (out["sem_seg"][H:] == 255).all() and (out["sem_seg"][:, W:] == 255).all()
    assert np.array_equal(out["sem_seg"][:H, :W].numpy(), scene["sem"][:, ::-1])
    # a crop that removes thing B drops it
    mapper = COCOPanopticNewBaselineDatasetMapper(
        True, tfm_gens=[T.CropTransform(0, 0, 16, 16)], image_format="RGB"
    )
    assert mapper(_pan_record(scene))["instances"].gt_classes.tolist() == [3, 1]


# ---- from_config ---------------------------------------------------------------------------
def _cfg(**overrides):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def test_from_config_reads_the_published_keys():
    MetadataCatalog.get("_test_mapper_meta").set(ignore_label=65)
    cfg = _cfg(
        **{
            "DATASETS.TRAIN": ("_test_mapper_meta",),
            "INPUT.CROP.ENABLED": True,
            "INPUT.CROP.TYPE": "absolute",
            "INPUT.CROP.SIZE": (64, 64),
            "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 0.5,
            "INPUT.COLOR_AUG_SSD": True,
            "INPUT.SIZE_DIVISIBILITY": 64,
            "INPUT.MIN_SIZE_TRAIN": (32, 48),
            "INPUT.MAX_SIZE_TRAIN": 200,
            "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 65,
        }
    )
    sem = MaskFormerSemanticDatasetMapper(cfg, True)
    assert sem.ignore_label == 65 and sem.size_divisibility == 64
    kinds = [type(a) for a in sem.tfm_gens]
    assert kinds == [
        T.ResizeShortestEdge,
        T.RandomCrop_CategoryAreaConstraint,
        ColorAugSSDTransform,
        T.RandomFlip,
    ]
    assert sem.tfm_gens[1].single_category_max_area == 0.5
    assert sem.tfm_gens[0].short_edge_length == (32, 48) and sem.tfm_gens[0].max_size == 200
    inst = MaskFormerInstanceDatasetMapper(cfg, True)
    assert type(inst.tfm_gens[1]) is T.RandomCrop
    cfg = _cfg(
        **{
            "INPUT.IMAGE_SIZE": 128,
            "INPUT.MIN_SCALE": 0.5,
            "INPUT.MAX_SCALE": 1.5,
            "INPUT.RANDOM_FLIP": "none",
        }
    )
    lsj = COCOPanopticNewBaselineDatasetMapper(cfg, True)
    assert [type(a) for a in lsj.tfm_gens] == [T.ResizeScale, T.FixedSizeCrop]
    assert lsj.tfm_gens[1].crop_size == (128, 128)
    assert set(MAPPERS) == {
        "mask_former_semantic",
        "mask_former_panoptic",
        "mask_former_instance",
        "coco_instance_lsj",
        "coco_panoptic_lsj",
    }


def test_lsj_from_config_end_to_end(scene):
    """The real LSJ chain (random scale, crop, pad) keeps masks, image and padding consistent."""
    cfg = _cfg(**{"INPUT.IMAGE_SIZE": 32, "INPUT.MIN_SCALE": 0.5, "INPUT.MAX_SCALE": 2.0})
    mapper = COCOInstanceNewBaselineDatasetMapper(cfg, True)
    for _ in range(5):
        out = mapper(_inst_record(scene))
        assert out["image"].shape == (3, 32, 32)
        masks = out["instances"].gt_masks.tensor
        assert masks.shape[1:] == (32, 32) and masks.flatten(1).any(1).all()  # no empty mask
        assert not masks[:, out["padding_mask"]].any()
        assert (out["image"][:, out["padding_mask"]] == 128).all()


def test_test_time_mapping_resizes_without_crop_or_padding(scene):
    cfg = _cfg(
        **{
            "INPUT.MIN_SIZE_TEST": 40,
            "INPUT.MAX_SIZE_TEST": 100,
            "INPUT.SIZE_DIVISIBILITY": 512,
            "INPUT.CROP.ENABLED": True,
        }
    )
    mapper = MaskFormerSemanticDatasetMapper(cfg, is_train=False)
    out = mapper(_sem_record(scene))
    assert out["image"].shape == (3, 40, 60) and out["sem_seg"].shape == (40, 60)
    assert out["instances"].gt_classes.tolist() == [0, 1]
