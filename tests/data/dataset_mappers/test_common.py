"""What the mappers share (mask2former/data/dataset_mappers/_common.py): the published config keys,
and bad inputs through the real training mappers."""

import numpy as np
import pytest
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from PIL import Image

from mask2former.data.dataset_mappers import (
    MAPPERS,
    COCOPanopticNewBaselineDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)
from mask2former.data.validation import InvalidInputError, MissingFileError

from .records import _cfg, write_image_and_labels


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


S = 32


def _sem_mapper(num_classes=3):
    return MaskFormerSemanticDatasetMapper(
        True,
        augmentations=[],
        image_format="RGB",
        ignore_label=255,
        size_divisibility=-1,
        num_classes=num_classes,
    )


@pytest.fixture()
def files(tmp_path):
    return write_image_and_labels(tmp_path, S)


def _rec(d, **kw):
    r = dict(
        file_name=str(d / "img.png"),
        sem_seg_file_name=str(d / "lab.png"),
        height=S,
        width=S,
        image_id=0,
    )
    r.update(kw)
    return r


def test_good_record_passes(files):
    out = _sem_mapper()(_rec(files))
    assert out["image"].shape == (3, S, S) and out["instances"].gt_classes.tolist() == [0, 1]


def test_truncated_image(files):
    data = (files / "img.png").read_bytes()
    (files / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match=r"cut\.png is truncated or corrupted"):
        _sem_mapper()(_rec(files, file_name=str(files / "cut.png")))


def test_missing_image_and_label(files):
    with pytest.raises(MissingFileError, match=r"image .*nope\.png does not exist"):
        _sem_mapper()(_rec(files, file_name=str(files / "nope.png")))
    with pytest.raises(
        MissingFileError,
        match=r"semantic label file .*gone\.png \(annotation of image .*img\.png\) does not exist",
    ):
        _sem_mapper()(_rec(files, sem_seg_file_name=str(files / "gone.png")))


def test_size_mismatch(files):
    with pytest.raises(
        InvalidInputError,
        match=r"img\.png is 32x32 \(width x height\) but its annotation says 40x32",
    ):
        _sem_mapper()(_rec(files, width=40))


def test_label_out_of_range(files):
    with pytest.raises(
        InvalidInputError,
        match=r"lab\.png \(annotation of image .*img\.png\) contains label value\(s\) 1 \(64 px\)",
    ):
        _sem_mapper(num_classes=1)(_rec(files))


def test_colour_coded_label(files):
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (S, S, 3), dtype=np.uint8)).save(
        files / "c.png"
    )
    with pytest.raises(InvalidInputError, match="colour-coded"):
        _sem_mapper()(_rec(files, sem_seg_file_name=str(files / "c.png")))


@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit", "exif"])
def test_odd_image_formats_through_the_mapper(files, kind):
    p = files / f"{kind}.png"
    if kind == "gray":
        Image.fromarray(np.full((S, S), 90, np.uint8)).save(p)
        expect = 90
    elif kind == "rgba":
        a = np.zeros((S, S, 4), np.uint8)
        a[..., 0], a[..., 3] = 90, 10
        Image.fromarray(a).save(p)
        expect = 90
    elif kind == "16bit":
        Image.fromarray(np.full((S, S), 90 * 256, np.uint16)).save(p)
        expect = 90
    else:
        p = files / "exif.jpg"
        a = np.zeros((S, S // 2, 3), np.uint8)  # stored 16 wide x 32 high ...
        a[..., 0] = 90
        im = Image.fromarray(a)
        exif = im.getexif()
        exif[274] = 6  # ... displayed rotated: 32 wide x 16 high
        im.save(p, exif=exif, quality=100)
        lab = np.zeros((S // 2, S), np.uint8)
        Image.fromarray(lab).save(files / "lab_exif.png")
        out = _sem_mapper()(
            _rec(
                files,
                file_name=str(p),
                sem_seg_file_name=str(files / "lab_exif.png"),
                height=S // 2,
                width=S,
            )
        )
        assert (
            out["image"].shape == (3, S // 2, S)
            and abs(int(out["image"][0].float().mean()) - 90) <= 2
        )
        return
    out = _sem_mapper()(_rec(files, file_name=str(p)))
    assert out["image"].shape == (3, S, S) and int(out["image"][0, 0, 0]) == expect


def _pan_rec(files, pan_name):
    return dict(
        file_name=str(files / "img.png"),
        pan_seg_file_name=str(files / pan_name),
        height=S,
        width=S,
        image_id=0,
        segments_info=[{"id": 5, "category_id": 1, "iscrowd": 0}],
    )


def _panoptic_mappers():
    """The two panoptic mappers: MaskFormer's and the LSJ (COCO new-baseline) one."""
    panoptic = MaskFormerPanopticDatasetMapper(
        True,
        augmentations=[],
        image_format="RGB",
        ignore_label=255,
        size_divisibility=-1,
        num_classes=3,
    )
    return panoptic, COCOPanopticNewBaselineDatasetMapper(True, tfm_gens=[], image_format="RGB")


def test_panoptic_id_not_in_segments_info(files):
    rec = _pan_rec(files, "pan.png")
    mapper, lsj = _panoptic_mappers()
    with pytest.raises(
        InvalidInputError,
        match=r"pan\.png \(annotation of image .*img\.png\) contains segment id\(s\) 300 \(128 px\)",
    ):
        mapper(rec)
    with pytest.raises(InvalidInputError, match=r"segment id\(s\) 300"):
        lsj(rec)
    rec["segments_info"].append({"id": 300, "category_id": 2, "iscrowd": 0})
    assert mapper(rec)["instances"].gt_classes.tolist() == [1, 2]


def test_grayscale_panoptic_png_is_refused(files):
    """A single-channel panoptic PNG is not the R + 256 G + 256^2 B encoding: both panoptic mappers
    name the file and the fix instead of reading grey level v as segment id 65793 * v."""
    Image.fromarray(np.full((S, S), 5, np.uint8)).save(files / "pan_l.png")
    for mapper in _panoptic_mappers():
        with pytest.raises(InvalidInputError, match=r"pan_l\.png .*img\.png.* mode L.*Fix:"):
            mapper(_pan_rec(files, "pan_l.png"))


def test_empty_annotation_list_maps_to_no_instances(files):
    mapper = MaskFormerInstanceDatasetMapper(
        True, augmentations=[], image_format="RGB", size_divisibility=-1
    )
    out = mapper(
        dict(file_name=str(files / "img.png"), height=S, width=S, image_id=0, annotations=[])
    )
    assert len(out["instances"]) == 0 and out["instances"].gt_masks.shape[-2:] == (S, S)
