"""datasets/prepare_coco_semantic_annos_from_panoptic_annos.py on a tiny COCO panoptic layout."""

import numpy as np
from PIL import Image

from tests.datasets.layouts import load_script, write_coco_panoptic


def test_coco_semantic_from_panoptic(tmp_path, capsys):
    write_coco_panoptic(tmp_path)
    script = load_script("prepare_coco_semantic_annos_from_panoptic_annos")
    script.main(["--root", str(tmp_path), "--splits", "val2017", "--workers", "2"])
    out = np.asarray(Image.open(tmp_path / "coco" / "panoptic_semseg_val2017" / "000000000001.png"))
    # contiguous ids = positions in COCO_CATEGORIES: person 0, car 2, rug-merged 132
    expected = np.array(
        [[0, 0, 255, 132, 132], [0, 0, 255, 132, 132], [2, 2, 2, 255, 255], [2, 2, 2, 255, 255]],
        np.uint8,
    )
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    assert "wrote 1 semantic PNGs" in capsys.readouterr().out
    # numbering from the JSON's own category list instead
    script.main(
        ["--root", str(tmp_path), "--splits", "val2017", "--workers", "1", "--categories-from-json"]
    )
    out = np.asarray(Image.open(tmp_path / "coco" / "panoptic_semseg_val2017" / "000000000001.png"))
    assert np.array_equal(
        out, np.select([expected == 0, expected == 2, expected == 132], [0, 1, 2], 255)
    )
