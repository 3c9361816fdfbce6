"""Swin blocks: SDPA window attention == the explicit published formula; the shift mask;
window partitioning."""

import pytest
import torch

from mask2former.modeling.backbone.swin_blocks import (
    BasicLayer,
    WindowAttention,
    window_partition,
    window_reverse,
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


def test_window_partition_roundtrip():
    x = torch.randn(2, 8, 12, 5)
    w = window_partition(x, 4)
    assert w.shape == (12, 4, 4, 5)
    assert torch.equal(window_reverse(w, 4, 8, 12), x)
    assert torch.equal(w[1], x[0, 0:4, 4:8])
