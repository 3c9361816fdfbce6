"""Every config key this project declares has its published or documented default (mask2former/config.py).

`add_maskformer2_config` must add exactly the keys of the published implementation
(upstream_inventory.md, Sec. 2.1; defaults and types compared exactly) plus this project's own
extensions, each with the default its docs page states; it must change no detectron2/DeepLab
default. A new key fails `test_no_undeclared_keys` until it is listed here with its default.
"""

import pathlib

import pytest
from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config

from mask2former import add_maskformer2_config
from tests.test_config import PUBLISHED_KEYS

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"

# upstream_inventory.md Sec. 2.1 (the table lives in tests/test_config.py).
PUBLISHED = PUBLISHED_KEYS

# This project's own keys: default, and the docs page that documents it.
PROJECT = {
    "MODEL.MASK_FORMER.POINT_SAMPLED_LOSS": (True, "training.md"),
    "SOLVER.AMP.PRECISION": ("float16", "training.md"),
    "SOLVER.CHECKPOINT_FORMAT": ("pth", "reliability.md"),
    "TEST.BOUNDARY_AP": (False, "evaluation.md"),
    "TEST.BOUNDARY_AP_DILATION_RATIO": (0.02, "evaluation.md"),
    "TEST.MIOU_CONVENTION": ("v0.6", "evaluation.md"),
    "SOLVER.LOG_PERIOD": (20, "training.md"),
    "TEST.AMP.ENABLED": (False, "model.md"),
    "TEST.AMP.PRECISION": ("bfloat16", "model.md"),
    # The timm backbone, documented as a `MODEL: TIMM:` YAML block in docs/model.md.
    "MODEL.TIMM.NAME": ("", "model.md"),
    "MODEL.TIMM.PRETRAINED": (False, "model.md"),
    "MODEL.TIMM.PRETRAINED_FILE": ("", "model.md"),
    "MODEL.TIMM.OUT_INDICES": ([], "model.md"),
    "MODEL.TIMM.FREEZE_AT": (0, "model.md"),
    "MODEL.TIMM.FROZEN_BN": (False, "model.md"),
    "MODEL.TIMM.DROP_PATH_RATE": (0.0, "model.md"),
    "MODEL.TIMM.PYRAMID_CHANNELS": (256, "model.md"),
}


def _flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        if hasattr(v, "items"):
            out.update(_flat(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def _base():
    cfg = get_cfg()
    add_deeplab_config(cfg)
    return cfg


def _full():
    cfg = _base()
    add_maskformer2_config(cfg)
    return cfg


@pytest.mark.parametrize("key", sorted({**PUBLISHED, **PROJECT}))
def test_every_key_has_its_default_and_type(key):
    value = _flat(_full())[key]
    expected = PUBLISHED[key] if key in PUBLISHED else PROJECT[key][0]
    assert value == expected and type(value) is type(expected), (key, value, expected)


def test_no_undeclared_keys():
    base, full = _flat(_base()), _flat(_full())
    added = set(full) - set(base)
    unknown = added - set(PUBLISHED) - set(PROJECT)
    assert not unknown, f"keys without a published/documented default here: {sorted(unknown)}"
    assert set(PROJECT) <= added  # ours are new keys, not detectron2's
    assert not set(PROJECT) & set(PUBLISHED)


def test_detectron2_and_deeplab_defaults_are_left_alone():
    base, full = _flat(_base()), _flat(_full())
    changed = {k: (base[k], full[k]) for k in base if base[k] != full[k]}
    assert changed == {}


@pytest.mark.parametrize("key", sorted(PROJECT))
def test_project_keys_are_documented(key):
    default, page = PROJECT[key]
    text = (DOCS / page).read_text()
    # The full key, or (in a YAML block under its parent) its last part followed by a colon.
    documented = key in text or f"{key.rsplit('.', 1)[1]}:" in text
    assert documented, f"{key} is not documented in docs/{page}"
