"""A label or panoptic PNG of another size than its image is an error naming both files (not
detectron2's bare AssertionError in the transforms), in every mapper that reads one."""

import numpy as np
import pytest
from PIL import Image

from mask2former.data.dataset_mappers import (
    COCOPanopticNewBaselineDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)
from mask2former.data.validation import InvalidInputError


@pytest.fixture()
def files(tmp_path):
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(tmp_path / "lab.png")  # 8 px narrower
    rgb = np.zeros((24, 48, 3), np.uint8)
    rgb[:] = (5, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "pan.png")  # 8 px shorter
    return tmp_path


def _rec(d, **kw):
    return dict(file_name=str(d / "img.png"), image_id=0, **kw)


def test_semantic_label_of_another_size(files):
    mapper = MaskFormerSemanticDatasetMapper(
        True, augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=-1
    )
    with pytest.raises(InvalidInputError) as e:
        mapper(_rec(files, sem_seg_file_name=str(files / "lab.png")))
    assert (
        f"semantic label file {files / 'lab.png'} is 40x32 (width x height) but its image "
        f"{files / 'img.png'} is 48x32" in str(e.value)
    )


@pytest.mark.parametrize("lsj", [False, True])
def test_panoptic_png_of_another_size(files, lsj):
    segments = [{"id": 5, "category_id": 0, "isthing": True, "iscrowd": 0}]
    rec = _rec(files, pan_seg_file_name=str(files / "pan.png"), segments_info=segments)
    if lsj:
        from detectron2.data import transforms as T

        mapper = COCOPanopticNewBaselineDatasetMapper(
            True, tfm_gens=[T.ResizeShortestEdge(32, 64)], image_format="RGB", ignore_label=255
        )
    else:
        mapper = MaskFormerPanopticDatasetMapper(
            True, augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=-1
        )
    with pytest.raises(
        InvalidInputError,
        match=r"panoptic annotation PNG .*pan.png is 48x24 .* but its image .*img.png is 48x32",
    ):
        mapper(rec)
