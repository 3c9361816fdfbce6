"""Param groups of a model with a timm backbone: backbone LR, no decay for timm's positional
tables and tokens and for timm's norms, base LR for the simple pyramid's new layers."""

import torch
from detectron2.modeling import build_backbone
from timm.layers import RmsNorm
from torch import nn

import mask2former  # noqa: F401  (registers TimmBackbone)
from mask2former.config import load_config
from mask2former.solver import get_param_groups

TINY = {  # tiny variants (as in tests/modeling/backbone/_timm_helpers.py)
    "vit": ("vit_tiny_patch16_224", {"depth": 1}),
    "swinv2": (
        "swinv2_tiny_window8_256",
        {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4},
    ),
    "convnext": ("convnext_atto", {}),
}


def build(family, **timm_keys):
    name, kwargs = TINY[family]
    cfg = load_config("", ["MODEL.BACKBONE.NAME", "TimmBackbone"], freeze=False)
    cfg.MODEL.TIMM.NAME = name
    cfg.MODEL.TIMM.PYRAMID_CHANNELS = 16
    for k, v in kwargs.items():
        cfg.MODEL.TIMM.KWARGS[k] = v
    for k, v in timm_keys.items():
        setattr(cfg.MODEL.TIMM, k, v)
    return build_backbone(cfg)


class Model(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(4, 4)
        self.head_norm = RmsNorm(4)


def lr_wd(model, **kw):
    args = dict(
        base_lr=1.0,
        weight_decay=0.05,
        weight_decay_norm=0.0,
        weight_decay_embed=0.0,
        backbone_multiplier=0.1,
    )
    args.update(kw)
    by_id = {}
    for g in get_param_groups(model, **args):
        for p in g["params"]:
            by_id[id(p)] = (g["lr"], g["weight_decay"])
    return {n: by_id[id(p)] for n, p in model.named_parameters() if p.requires_grad}


def test_vit_backbone_groups():
    model = Model(build("vit"))
    g = lr_wd(model)
    assert g["backbone.body.pos_embed"] == (0.1, 0.0)
    assert g["backbone.body.cls_token"] == (0.1, 0.0)
    assert g["backbone.body.blocks.0.norm1.weight"] == (0.1, 0.0)  # timm LayerNorm
    assert g["backbone.body.blocks.0.attn.qkv.weight"] == (0.1, 0.05)
    assert g["backbone.body.patch_embed.proj.weight"] == (0.1, 0.05)
    # the new pyramid trains at the base LR; its LayerNorm2d are norms
    assert g["backbone.pyramid.levels.0.1.weight"] == (1.0, 0.05)
    assert g["backbone.pyramid.levels.0.2.weight"] == (1.0, 0.0)
    assert g["head.weight"] == (1.0, 0.05) and g["head_norm.weight"] == (1.0, 0.0)  # RmsNorm
    assert all(lr == 1.0 for n, (lr, _) in g.items() if n.startswith("backbone.pyramid."))
    assert all(lr == 0.1 for n, (lr, _) in g.items() if n.startswith("backbone.body."))


def test_swinv2_relative_position_parameters_not_decayed():
    g = lr_wd(Model(build("swinv2")))
    cpb = [n for n in g if ".cpb_mlp." in n or n.endswith("logit_scale")]
    assert cpb and all(g[n] == (0.1, 0.0) for n in cpb)
    assert g["backbone.body.layers.0.blocks.0.attn.qkv.weight"] == (0.1, 0.05)


def test_frozen_parameters_left_out():
    model = Model(build("convnext", FREEZE_AT=2))
    g = lr_wd(model)
    assert not any(n.startswith(("backbone.body.stem.", "backbone.body.stages.0.")) for n in g)
    assert g["backbone.body.stages.1.blocks.0.norm.weight"] == (0.1, 0.0)
    assert sum(1 for _ in model.parameters()) > len(g)
    torch.optim.AdamW(
        get_param_groups(model, 1.0, 0.05, 0.0, 0.0, 0.1), lr=1.0
    )  # the groups are valid optimiser input
