"""Swin backbone: SDPA window attention == the explicit published formula; shapes; names."""

import pytest
import torch
from detectron2.config import get_cfg

from mask2former.config import add_maskformer2_config
from mask2former.modeling.backbone.swin import (
    BasicLayer,
    D2SwinTransformer,
    WindowAttention,
    window_partition,
)


def reference_window_attention(attn: WindowAttention, x, mask=None):
    """softmax(q k^T * scale + relative bias (+ shift mask)) v, as in the official Swin code."""
    B_, N, C = x.shape
    h = attn.num_heads
    qkv = attn.qkv(x).reshape(B_, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * attn.scale, qkv[1], qkv[2]
    a = q @ k.transpose(-2, -1)
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(N, N, -1)
    a = a + bias.permute(2, 0, 1).unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        a = a.view(B_ // nW, nW, h, N, N) + mask.unsqueeze(1).unsqueeze(0)
        a = a.view(-1, h, N, N)
    a = a.softmax(-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(B_, N, C))


@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_matches_reference_float64(shifted):
    torch.manual_seed(0)
    layer = BasicLayer(dim=24, depth=2, num_heads=3, window_size=4).double().eval()
    attn = layer.blocks[1].attn
    torch.nn.init.normal_(attn.relative_position_bias_table)
    H, W = 8, 12
    mask = layer._shift_attention_mask(H, W, "cpu", torch.float64) if shifted else None
    x = torch.randn(2 * (H // 4) * (W // 4), 16, 24, dtype=torch.float64)
    torch.testing.assert_close(
        attn(x, mask), reference_window_attention(attn, x, mask), rtol=1e-10, atol=1e-10
    )


def test_shift_mask_separates_regions():
    layer = BasicLayer(dim=8, depth=2, num_heads=2, window_size=4)
    mask = layer._shift_attention_mask(8, 8, "cpu", torch.float32)
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window is not split by the shift
    assert set(mask.unique().tolist()) == {0.0, -100.0}


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


def test_window_partition_roundtrip():
    from mask2former.modeling.backbone.swin import window_reverse

    x = torch.randn(2, 8, 12, 5)
    w = window_partition(x, 4)
    assert w.shape == (12, 4, 4, 5)
    assert torch.equal(window_reverse(w, 4, 8, 12), x)
    assert torch.equal(w[1], x[0, 0:4, 4:8])
