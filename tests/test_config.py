"""The config declares every key of the published implementation with the same default; loading
errors (unknown key, wrong type, missing file or `_BASE_`) say exactly what is wrong and how to fix it."""

import pytest
from detectron2.config import CfgNode as CN
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


# ---- exact messages and suggestions (mutation survivors, issue 26) ----------------------------
FIX_KEY = (
    "Fix the spelling, or call add_maskformer2_config(cfg) (and any add_*_config your project "
    "needs) before merging."
)
FIX_TYPE = (
    "The first type/value is the default's; give a value of that type (e.g. a list in brackets, "
    "a quoted string, True/False)."
)


def _tiny_cfg():
    return CN(
        {
            "SOLVER": CN({"BASE_LR": 0.1, "MAX_ITER": 1, "WEIGHT_DECAY": 0.0}),
            "IO": CN({"MIN_SCALE": 0.1}),
            "MODEL": CN(
                {
                    "SWIN": CN({"DEPTHS": [2], "NUM_HEADS": [3]}),
                    "RESNETS": CN({"DEPTH": 50}),
                    "ROI_HEADS": CN({"NAME": ""}),
                }
            ),
        }
    )


@pytest.mark.parametrize(
    "bad, n, expected",
    [
        # the leaf within its parent first, then the closest whole paths
        ("MODEL.SWIN.NHEADS", 3, ["MODEL.SWIN.NUM_HEADS", "MODEL.SWIN.DEPTHS", "MODEL.ROI_HEADS"]),
        ("MODEL.SWIN.DEPTH", 3, ["MODEL.SWIN.DEPTHS", "MODEL.RESNETS.DEPTH", "MODEL.SWIN"]),
        ("MODEL.SWIN.NHEADS", 1, ["MODEL.SWIN.NUM_HEADS"]),
        ("SOLVER.LR", 3, ["SOLVER", "SOLVER.BASE_LR"]),  # whole paths only
        # the leaf alone is close enough (0.67 >= 0.6), the whole path is not (0.73 < 0.75)
        ("IO.MINIMAL_SCALING", 3, ["IO.MIN_SCALE"]),
        ("solver.base_lr", 3, ["SOLVER.BASE_LR"]),  # case-insensitive
        ("SOLVR", 3, ["SOLVER"]),  # a top-level key
        ("TOTALLY.UNRELATED_QQQ", 3, []),
    ],
)
def test_closest_keys(bad, n, expected):
    from mask2former.config import _closest_keys

    assert _closest_keys(_tiny_cfg(), bad, n=n) == expected


def test_closest_keys_returns_three_by_default():
    from mask2former.config import _closest_keys

    cfg = _tiny_cfg()
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    assert len(_closest_keys(cfg, "SOLVER.WEIGHT_DECAY_NROM", n=4)) == 4
    assert _closest_keys(cfg, "SOLVER.WEIGHT_DECAY_NROM") == [
        "SOLVER.WEIGHT_DECAY_NORM",
        "SOLVER.WEIGHT_DECAY",
        "SOLVER.WEIGHT_DECAY_EMBED",
    ]


def _error(*args, **kwargs):
    from mask2former.config import load_config

    with pytest.raises(Exception) as info:
        load_config(*args, **kwargs)
    return info.type.__name__, str(info.value)


def test_override_errors_say_exactly_what_and_how():
    assert _error("", ["SOLVER.WEIGHT_DECAY_NROM", "0.1"]) == (
        "ConfigKeyError",
        "command-line override: unknown config key 'SOLVER.WEIGHT_DECAY_NROM'. Did you mean "
        "'SOLVER.WEIGHT_DECAY_NORM' or 'SOLVER.WEIGHT_DECAY' or 'SOLVER.WEIGHT_DECAY_EMBED'? "
        + FIX_KEY,
    )
    # a key ending in X keeps it (the quotes are stripped, nothing else)
    assert _error("", ["SOLVER.MAX_ITERX", "1"]) == (
        "ConfigKeyError",
        f"command-line override: unknown config key 'SOLVER.MAX_ITERX'. Did you mean "
        f"'SOLVER.MAX_ITER'? {FIX_KEY}",
    )
    assert _error("", ["TOTALLY.UNRELATED_QQQ", "1"]) == (
        "ConfigKeyError",
        f"command-line override: unknown config key 'TOTALLY.UNRELATED_QQQ'. {FIX_KEY}",
    )
    assert _error("", ["SOLVER.MAX_ITER", "many"]) == (
        "ValueError",
        "command-line override: wrong type for config key 'SOLVER.MAX_ITER': Type mismatch "
        f"(<class 'int'> vs. <class 'str'>) with values (40000 vs. many). {FIX_TYPE}",
    )
    assert _error("", ["SOLVER.MAX_ITER", "1", "SOLVER.BASE_LR"]) == (
        "ValueError",
        "command-line overrides ['SOLVER.MAX_ITER', '1', 'SOLVER.BASE_LR']: expected KEY VALUE "
        "pairs (an even number of items), e.g. SOLVER.MAX_ITER 100",
    )


def test_config_file_errors_name_the_file(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("SOLVER:\n  MAX_ITERX: 5\n")
    assert _error(str(typo)) == (
        "ConfigKeyError",
        f"config file {typo}: unknown config key 'SOLVER.MAX_ITERX'. Did you mean "
        f"'SOLVER.MAX_ITER'? {FIX_KEY}",
    )
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("SOLVER:\n  MAX_ITER: many\n")
    assert _error(str(wrong)) == (
        "ValueError",
        f"config file {wrong}: wrong type for config key 'SOLVER.MAX_ITER': Type mismatch "
        f"(<class 'int'> vs. <class 'str'>) with values (40000 vs. many). {FIX_TYPE}",
    )
    bad = tmp_path / "range.yaml"
    bad.write_text("SOLVER:\n  MAX_ITER: 0\n")
    assert _error(str(bad))[1].startswith(f"config file {bad}: 1 config value(s) out of range")
    assert _error("", ["SOLVER.MAX_ITER", "0"])[1].startswith("config: 1 config value(s)")


def test_other_errors_pass_through_unchanged():
    from mask2former.config import ConfigKeyError, _explain_merge_error

    cfg = _tiny_cfg()
    for err in (KeyError("other"), ValueError("other"), KeyError(), RuntimeError("x")):
        assert _explain_merge_error(cfg, err, "src") is err

    class LazyKeyError(KeyError):  # no args: its message comes from __str__
        def __str__(self):
            return "Non-existent config key: SOLVER.MAX_ITERX"

    explained = str(_explain_merge_error(cfg, LazyKeyError(), "src"))
    assert explained.startswith("src: unknown config key 'SOLVER.MAX_ITERX'. Did you mean")
    assert str(ConfigKeyError("no quotes")) == "no quotes"


def test_load_config_defaults_and_freeze():
    from mask2former.config import load_config

    cfg = load_config()
    assert cfg.is_frozen() and cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 100
    assert not load_config(freeze=False).is_frozen()


def test_timm_kwargs_accept_any_key(tmp_path):
    from mask2former.config import load_config

    yaml = tmp_path / "timm.yaml"
    yaml.write_text("MODEL:\n  TIMM:\n    KWARGS:\n      patch_size: 16\n      window_size: 8\n")
    assert dict(load_config(str(yaml)).MODEL.TIMM.KWARGS) == {"patch_size": 16, "window_size": 8}


# ---- a missing config or _BASE_ (docs/reliability.md) ----------------------------------------
def test_missing_base_names_the_referring_config(tmp_path):
    from mask2former.config import load_config

    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    mid = tmp_path / "mid.yaml"
    mid.write_text("_BASE_: gone/Base.yaml\nSOLVER:\n  MAX_ITER: 5\n")
    child.write_text("_BASE_: ../mid.yaml\n")
    with pytest.raises(FileNotFoundError) as e:
        load_config(str(child))
    msg = str(e.value)
    assert (
        f"config file {mid} has _BASE_: 'gone/Base.yaml', but {tmp_path / 'gone' / 'Base.yaml'}"
        in msg
    )
    assert f"(while loading {child})" in msg and "relative to the config that names it" in msg
    assert msg == (
        f"config file {mid} has _BASE_: 'gone/Base.yaml', but {tmp_path / 'gone' / 'Base.yaml'} "
        f"does not exist (while loading {child}). _BASE_ is relative to the config that names "
        "it. Fix: correct the path, or restore the base config."
    )


def test_missing_file_and_missing_base_messages(tmp_path):
    assert _error(str(tmp_path / "nope.yaml")) == (
        "FileNotFoundError",
        f"config file {tmp_path / 'nope.yaml'} does not exist.",
    )
    own = tmp_path / "own.yaml"
    gone = tmp_path / "abs" / "Base.yaml"  # an absolute _BASE_ is taken as it is
    own.write_text(f"_BASE_: {gone}\n")
    assert _error(str(own)) == (
        "FileNotFoundError",
        f"config file {own} has _BASE_: '{gone}', but {gone} does not exist. _BASE_ is "
        "relative to the config that names it. Fix: correct the path, or restore the base config.",
    )


def test_explain_missing_base_without_a_missing_base_returns_the_error(tmp_path):
    from mask2former.config import _explain_missing_base

    err = FileNotFoundError("from yacs")
    plain = tmp_path / "plain.yaml"
    plain.write_text("SOLVER:\n  MAX_ITER: 5\n")
    listed = tmp_path / "listed.yaml"
    listed.write_text("_BASE_: [a.yaml]\n")
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"  # a cycle: no hang, nothing missing
    a.write_text("_BASE_: b.yaml\n")
    b.write_text("_BASE_: a.yaml\n")
    for path in (plain, listed, a):
        assert _explain_missing_base(str(path), err) is err
