"""NUM_CLASSES against the datasets' class counts; empty training data says why; NaN images."""

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from mask2former.config import load_config
from mask2former.data.dataset_checks import EmptyDatasetError, check_num_classes
from mask2former.data.validation import InvalidInputError, read_image
from mask2former.engine.resume import build_resumable_train_loader

NAME = "_dataset_checks_tiny"


@pytest.fixture
def dataset():
    def register(records, **meta):
        if NAME in DatasetCatalog.list():
            DatasetCatalog.remove(NAME)
            MetadataCatalog.remove(NAME)
        DatasetCatalog.register(NAME, lambda: records)
        MetadataCatalog.get(NAME).set(**meta)
        return NAME

    yield register
    if NAME in DatasetCatalog.list():
        DatasetCatalog.remove(NAME)
        MetadataCatalog.remove(NAME)


def _cfg(num_classes, mapper="mask_former_semantic"):
    return load_config(
        "",
        [
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(num_classes),
            "INPUT.DATASET_MAPPER_NAME", mapper,
            "DATASETS.TRAIN", f"('{NAME}',)",
            "DATALOADER.NUM_WORKERS", "0",
        ],
    )  # fmt: skip


@pytest.mark.parametrize("num_classes, effect", [(5, "never occur"), (2, "class ids 2..2")])
def test_num_classes_mismatch_names_the_key_both_ways(dataset, num_classes, effect):
    dataset([], stuff_classes=["a", "b", "c"])
    with pytest.raises(ValueError) as e:
        check_num_classes(_cfg(num_classes), [NAME])
    msg = str(e.value)
    assert f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} but dataset '{NAME}'" in msg
    assert "has 3 classes (metadata stuff_classes: a, b, c)" in msg and effect in msg
    assert "Fix: set MODEL.SEM_SEG_HEAD.NUM_CLASSES 3" in msg
    check_num_classes(_cfg(3), [NAME])  # equal: fine


def test_instance_models_count_thing_classes(dataset):
    dataset([], thing_classes=["x", "y"], stuff_classes=["x", "y", "sky"])
    check_num_classes(_cfg(2, "mask_former_instance"), [NAME])
    with pytest.raises(ValueError, match="has 2 classes .metadata thing_classes"):
        check_num_classes(_cfg(3, "mask_former_instance"), [NAME])


def test_num_classes_is_checked_before_training_data_is_read(dataset):
    dataset([{"file_name": "never_read.png"}], stuff_classes=["a", "b"])
    with pytest.raises(ValueError, match="NUM_CLASSES is 7 but dataset"):
        build_resumable_train_loader(_cfg(7))


def test_empty_dataset_says_why(dataset):
    dataset([], stuff_classes=["a"], image_root="/data/imgs")
    with pytest.raises(EmptyDatasetError) as e:
        build_resumable_train_loader(_cfg(1))
    msg = str(e.value)
    assert (
        f"Dataset '{NAME}' is empty!" in msg
        and "gave no records at all (from image_root /data/imgs)" in msg
    )


def test_no_usable_annotation_says_why(dataset, tmp_path):
    records = [{"file_name": str(tmp_path / f"{i}.png"), "annotations": []} for i in range(2)]
    dataset(records, thing_classes=["a"])
    with pytest.raises(EmptyDatasetError) as e:
        build_resumable_train_loader(_cfg(1, "mask_former_instance"))
    msg = str(e.value)
    assert "No valid data found" in msg and "has 2 images, but none has a usable annotation" in msg
    assert "DATALOADER.FILTER_EMPTY_ANNOTATIONS" in msg


def test_nan_float_tiff_raises(tmp_path):
    arr = np.full((4, 5), 0.5, np.float32)
    arr[1, 2] = np.nan
    p = tmp_path / "f.tif"
    Image.fromarray(arr, mode="F").save(p)
    with pytest.raises(
        InvalidInputError, match=r"f.tif is a floating-point image with 1 NaN/Inf pixel\(s\) of 20"
    ):
        read_image(str(p), "RGB")
    arr[1, 2] = 0.25
    Image.fromarray(arr, mode="F").save(p)
    assert read_image(str(p), "RGB")[1, 2, 0] == 64  # finite float images still read (x 255)
