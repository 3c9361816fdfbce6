"""Swin backbone: output shapes and strides, parameter names, out features, checkpointing."""

import pytest
import torch
from detectron2.config import get_cfg

from mask2former.config import add_maskformer2_config
from mask2former.modeling.backbone.swin import D2SwinTransformer


def swin_cfg(**overrides):
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.MODEL.SWIN.EMBED_DIM = 24
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 2, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 3, 4]
    for k, v in overrides.items():
        setattr(cfg.MODEL.SWIN, k, v)
    return cfg


def test_d2_swin_outputs_and_names():
    model = D2SwinTransformer(swin_cfg(), None).eval()
    out = model(torch.randn(1, 3, 70, 100))  # not a multiple of the window or patch size
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {
        "res2": (1, 24, 18, 25),
        "res3": (1, 48, 9, 13),
        "res4": (1, 96, 5, 7),
        "res5": (1, 192, 3, 4),
    }
    spec = model.output_shape()
    assert [(spec[k].channels, spec[k].stride) for k in ("res2", "res3", "res4", "res5")] == [
        (24, 4),
        (48, 8),
        (96, 16),
        (192, 32),
    ]
    assert model.size_divisibility == 32
    names = set(model.state_dict())
    for n in (
        "patch_embed.proj.weight",
        "layers.0.blocks.1.attn.relative_position_bias_table",
        "layers.0.blocks.0.attn.relative_position_index",
        "layers.2.downsample.reduction.weight",
        "norm3.weight",
        "layers.3.blocks.1.mlp.fc2.bias",
    ):
        assert n in names
    assert not any("attn_mask" in n for n in names)


def test_d2_swin_out_features_and_checkpointing():
    model = D2SwinTransformer(swin_cfg(OUT_FEATURES=["res3", "res5"], USE_CHECKPOINT=True), None)
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    out = model(x)
    assert set(out) == {"res3", "res5"}
    out["res5"].sum().backward()
    assert x.grad is not None
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        D2SwinTransformer(swin_cfg(OUT_FEATURES=["res6"]), None)
