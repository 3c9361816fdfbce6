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

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"

# upstream_inventory.md Sec. 2.1, in file order; the last two come from add_deeplab_config.
PUBLISHED = {
    "INPUT.DATASET_MAPPER_NAME": "mask_former_semantic",
    "INPUT.COLOR_AUG_SSD": False,
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
    "INPUT.SIZE_DIVISIBILITY": -1,
    "SOLVER.WEIGHT_DECAY_EMBED": 0.0,
    "SOLVER.OPTIMIZER": "ADAMW",
    "SOLVER.BACKBONE_MULTIPLIER": 0.1,
    "MODEL.MASK_FORMER.DEEP_SUPERVISION": True,
    "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": 0.1,
    "MODEL.MASK_FORMER.CLASS_WEIGHT": 1.0,
    "MODEL.MASK_FORMER.DICE_WEIGHT": 1.0,
    "MODEL.MASK_FORMER.MASK_WEIGHT": 20.0,
    "MODEL.MASK_FORMER.NHEADS": 8,
    "MODEL.MASK_FORMER.DROPOUT": 0.1,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 2048,
    "MODEL.MASK_FORMER.ENC_LAYERS": 0,
    "MODEL.MASK_FORMER.DEC_LAYERS": 6,
    "MODEL.MASK_FORMER.PRE_NORM": False,
    "MODEL.MASK_FORMER.HIDDEN_DIM": 256,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100,
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "res5",
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": False,
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON": True,
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON": False,
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": False,
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.0,
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.0,
    "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": False,
    "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": 32,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 256,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 0,
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "BasePixelDecoder",
    "MODEL.SWIN.PRETRAIN_IMG_SIZE": 224,
    "MODEL.SWIN.PATCH_SIZE": 4,
    "MODEL.SWIN.EMBED_DIM": 96,
    "MODEL.SWIN.DEPTHS": [2, 2, 6, 2],
    "MODEL.SWIN.NUM_HEADS": [3, 6, 12, 24],
    "MODEL.SWIN.WINDOW_SIZE": 7,
    "MODEL.SWIN.MLP_RATIO": 4.0,
    "MODEL.SWIN.QKV_BIAS": True,
    "MODEL.SWIN.QK_SCALE": None,
    "MODEL.SWIN.DROP_RATE": 0.0,
    "MODEL.SWIN.ATTN_DROP_RATE": 0.0,
    "MODEL.SWIN.DROP_PATH_RATE": 0.3,
    "MODEL.SWIN.APE": False,
    "MODEL.SWIN.PATCH_NORM": True,
    "MODEL.SWIN.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.SWIN.USE_CHECKPOINT": False,
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
    "INPUT.IMAGE_SIZE": 1024,
    "INPUT.MIN_SCALE": 0.1,
    "INPUT.MAX_SCALE": 2.0,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 4,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": 8,
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 12544,
    "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": 3.0,
    "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": 0.75,
    # from add_deeplab_config, always applied first
    "SOLVER.POLY_LR_POWER": 0.9,
    "SOLVER.POLY_LR_CONSTANT_ENDING": 0.0,
}

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
