"""Config values out of range fail when the config is loaded, naming key, value and valid range
(a missing `_BASE_`: tests/test_config.py)."""

from pathlib import Path

import pytest

from mask2former.config import load_config
from mask2former.config_validation import ConfigValueError

DEMO = str(Path(__file__).resolve().parents[1] / "configs" / "demo" / "semantic.yaml")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "0", "is 0; valid: an integer >= 1"),
        ("SOLVER.IMS_PER_BATCH", "0", "is 0; valid: an integer >= 1"),
        ("SOLVER.MAX_ITER", "0", "is 0; valid: an integer >= 1"),
        ("SOLVER.CHECKPOINT_PERIOD", "0", "is 0; valid: an integer >= 1"),
        ("SOLVER.BASE_LR", "-0.1", "is -0.1; valid: a finite number in [0, inf)"),
        ("INPUT.IMAGE_SIZE", "0", "is 0; valid: an integer >= 1"),
        ("MODEL.PIXEL_MEAN", "[1.0,2.0]", "is [1.0, 2.0]; valid: 3 numbers, one per channel"),
        ("MODEL.PIXEL_STD", "[1.0,0.0,1.0]", "is [1.0, 0.0, 1.0]; valid: numbers > 0"),
        ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0", "is 0; valid: an integer >= 1"),
        ("SOLVER.CHECKPOINT_FORMAT", "npz", "is 'npz'; valid: pth | safetensors"),
        ("INPUT.MIN_SIZE_TRAIN", "(0,)", "is (0,); valid: one or more integers >= 1"),
    ],
)
def test_out_of_range_values_name_key_value_and_range(key, value, expected):
    with pytest.raises(ConfigValueError) as e:
        load_config(DEMO, [key, value])
    msg = str(e.value)
    assert f"config file {DEMO}: 1 config value(s) out of range" in msg
    assert f"{key} {expected}" in msg


def test_hidden_dim_must_divide_by_nheads_and_all_problems_are_listed():
    with pytest.raises(ConfigValueError) as e:
        load_config(
            DEMO,
            ["MODEL.MASK_FORMER.HIDDEN_DIM", "30", "MODEL.MASK_FORMER.NHEADS", "8"]
            + ["SOLVER.IMS_PER_BATCH", "0"],
        )
    msg = str(e.value)
    assert "2 config value(s) out of range" in msg
    assert (
        "MODEL.MASK_FORMER.HIDDEN_DIM is 30; valid: a multiple of MODEL.MASK_FORMER.NHEADS (8)"
        in msg
    )


def test_every_shipped_config_is_valid():
    configs = sorted((Path(DEMO).parents[1]).rglob("*.yaml"))
    assert len(configs) > 20
    for c in configs:
        load_config(str(c))
