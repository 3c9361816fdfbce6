"""The config declares every key of the published implementation with the same default."""

import pytest
from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config

from mask2former import add_maskformer2_config

# upstream_inventory.md, section 2.1: every key added by add_maskformer2_config, with its default.
PUBLISHED_KEYS = {
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


def make_cfg():
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    return cfg


def lookup(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("key", sorted(PUBLISHED_KEYS))
def test_key_declared_with_published_default(key):
    value = lookup(make_cfg(), key)
    expected = PUBLISHED_KEYS[key]
    assert value == expected and type(value) is type(expected), (key, value, expected)


def test_user_yaml_with_published_keys_merges(tmp_path):
    yaml = tmp_path / "user.yaml"
    yaml.write_text(
        "MODEL:\n  MASK_FORMER:\n    DEC_LAYERS: 10\n    TEST:\n      PANOPTIC_ON: True\n"
        "  SWIN:\n    EMBED_DIM: 192\nINPUT:\n  DATASET_MAPPER_NAME: coco_panoptic_lsj\n"
    )
    cfg = make_cfg()
    cfg.merge_from_file(str(yaml))
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 10
    assert cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON is True
    assert cfg.MODEL.SWIN.EMBED_DIM == 192


def test_unknown_key_raises_clear_error(tmp_path):
    yaml = tmp_path / "bad.yaml"
    yaml.write_text("MODEL:\n  MASK_FORMER:\n    NUM_OBJECT_QUERIESS: 50\n")
    with pytest.raises(KeyError, match="NUM_OBJECT_QUERIESS"):
        make_cfg().merge_from_file(str(yaml))


def test_load_config_suggests_closest_key(tmp_path):
    from mask2former.config import ConfigKeyError, load_config

    yaml = tmp_path / "typo.yaml"
    yaml.write_text("MODEL:\n  MASK_FORMER:\n    NUM_OBJECT_QUERIESS: 50\n")
    with pytest.raises(ConfigKeyError) as info:
        load_config(str(yaml))
    msg = str(info.value)
    assert str(yaml) in msg and "'MODEL.MASK_FORMER.NUM_OBJECT_QUERIES'" in msg


def test_load_config_override_typo_and_wrong_type():
    from mask2former.config import ConfigKeyError, load_config

    with pytest.raises(ConfigKeyError, match="Did you mean 'SOLVER.BASE_LR'"):
        load_config("", ["SOLVER.BASE_LRR", "0.1"])
    with pytest.raises(ValueError, match="wrong type for config key 'SOLVER.MAX_ITER'"):
        load_config("", ["SOLVER.MAX_ITER", "many"])
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        load_config("", ["SOLVER.MAX_ITER"])
    cfg = load_config("", ["SOLVER.MAX_ITER", "7"])
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.is_frozen()


# ---- config errors (docs/reliability.md) -----------------------------------------------------
def test_config_misspelled_key_suggests_closest(tmp_path):
    from mask2former.config import ConfigKeyError, load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(
        ConfigKeyError, match=r"unknown config key 'SOLVER.BASE_LRR'.*Did you mean 'SOLVER.BASE_LR'"
    ):
        load_config(str(cfg))


def test_config_wrong_type():
    from mask2former.config import load_config

    with pytest.raises(ValueError, match=r"wrong type for config key 'SOLVER.MAX_ITER'"):
        load_config("", ["SOLVER.MAX_ITER", "'many'"])
