"""A tiny generated scene: image, semantic PNG, panoptic PNG and instance annotations."""

import numpy as np
import pytest
from PIL import Image

from .records import H, W, _id2rgb


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
