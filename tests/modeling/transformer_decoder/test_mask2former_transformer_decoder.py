"""Masked-attention transformer decoder: SDPA == nn.MultiheadAttention, Eq. (2)-(3), empty masks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mask2former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    CrossAttentionLayer,
    MultiScaleMaskedTransformerDecoder,
    multi_head_attention,
)
from mask2former.modeling.transformer_decoder.position_encoding import PositionEmbeddingSine


@pytest.mark.parametrize("with_mask", [False, True])
def test_sdpa_matches_multihead_attention_float64(with_mask):
    torch.manual_seed(0)
    B, Lq, Lk, C, h = 2, 5, 7, 16, 4
    mha = nn.MultiheadAttention(C, h).double().eval()
    nn.init.normal_(mha.in_proj_bias)  # non-zero biases
    q, k, v = (torch.randn(B, n, C, dtype=torch.float64) for n in (Lq, Lk, Lk))
    allowed = None
    ref_mask = None
    if with_mask:
        allowed = torch.rand(B, Lq, Lk) > 0.5
        allowed[:, :, 0] = True  # every row attends somewhere
        # nn.MultiheadAttention: (B*h, Lq, Lk) bool, True = NOT allowed, seq-first tensors.
        ref_mask = (~allowed).repeat_interleave(h, dim=0)
    ref = mha(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=ref_mask)[
        0
    ].transpose(0, 1)
    out = multi_head_attention(mha, q, k, v, allowed)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_masked_cross_attention_ignores_features_outside_the_mask():
    torch.manual_seed(0)
    layer = CrossAttentionLayer(16, 4).double().eval()
    tgt = torch.randn(1, 3, 16, dtype=torch.float64)
    memory = torch.randn(1, 10, 16, dtype=torch.float64)
    pos = torch.randn(1, 10, 16, dtype=torch.float64)
    allowed = torch.zeros(1, 3, 10, dtype=torch.bool)
    allowed[0, 0, :4] = True  # query 0 sees tokens 0..3
    allowed[0, 1:, :] = True
    out = layer(tgt, memory, allowed, pos=pos)
    memory2, pos2 = memory.clone(), pos.clone()
    memory2[0, 4:] += 10 * torch.randn(6, 16, dtype=torch.float64)
    pos2[0, 4:] -= 3.0
    out2 = layer(tgt, memory2, allowed, pos=pos2)
    torch.testing.assert_close(out2[0, 0], out[0, 0], rtol=0, atol=1e-12)  # restricted query
    assert (out2[0, 1:] - out[0, 1:]).abs().max() > 1e-3  # unrestricted queries see the change


def small_decoder(
    num_queries=4, dec_layers=3, hidden=32, mask_dim=8
) -> MultiScaleMaskedTransformerDecoder:
    return (
        MultiScaleMaskedTransformerDecoder(
            in_channels=hidden,
            mask_classification=True,
            num_classes=5,
            hidden_dim=hidden,
            num_queries=num_queries,
            nheads=4,
            dim_feedforward=64,
            dec_layers=dec_layers,
            pre_norm=False,
            mask_dim=mask_dim,
            enforce_input_project=False,
        )
        .double()
        .eval()
    )


def fix_mask_prediction(decoder, channel_bias: torch.Tensor) -> None:
    """Make every query's mask embedding the constant `channel_bias` (so masks never change)."""
    last = decoder.mask_embed.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(channel_bias)


def multi_scale_inputs(B=1, C=32, H=8, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Levels 1/32, 1/16, 1/8 of an (8H x 8W)-pixel... here simply (H, W) * 1, 2, 4.
    return [torch.randn(B, C, H * s, W * s, generator=g, dtype=torch.float64) for s in (1, 2, 4)]


def test_decoder_outputs_shapes_and_aux():
    dec = small_decoder()
    x = multi_scale_inputs()
    mask_features = torch.randn(1, 8, 64, 64, dtype=torch.float64)
    out = dec(x, mask_features)
    assert out["pred_logits"].shape == (1, 4, 6)
    assert out["pred_masks"].shape == (1, 4, 64, 64)
    assert len(out["aux_outputs"]) == 3  # one before the first layer + after layers 1..2
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (1, 4, 6) and aux["pred_masks"].shape == (1, 4, 64, 64)


def test_query_is_unaffected_by_features_outside_its_previous_mask():
    """Eq. (2)-(3): with every mask = left half of the image, features in the right half of
    every level cannot change any prediction of any layer."""
    dec = small_decoder()
    fix_mask_prediction(dec, torch.tensor([1.0] + [0.0] * 7, dtype=torch.float64))
    mask_features = torch.full((1, 8, 32, 32), -1.0, dtype=torch.float64)
    mask_features[:, 0, :, :16] = 1.0  # channel 0 = +1 on the left half, -1 on the right
    x = multi_scale_inputs(H=4, W=4)
    out = dec(x, mask_features)

    x2 = [t.clone() for t in x]
    for t in x2:
        t[..., t.shape[-1] // 2 :] = 100 * torch.randn_like(t[..., t.shape[-1] // 2 :])
    out2 = dec(x2, mask_features)
    torch.testing.assert_close(out2["pred_logits"], out["pred_logits"], rtol=0, atol=1e-10)
    for a, b in zip(out2["aux_outputs"], out["aux_outputs"]):
        torch.testing.assert_close(a["pred_logits"], b["pred_logits"], rtol=0, atol=1e-10)

    # ... while the left half does matter.
    x3 = [t.clone() for t in x]
    for t in x3:
        t[..., : t.shape[-1] // 2] += 1.0
    assert (dec(x3, mask_features)["pred_logits"] - out["pred_logits"]).abs().max() > 1e-4


def test_empty_mask_attends_everywhere():
    """A query whose previous mask is empty everywhere attends to all features (not NaN)."""
    dec = small_decoder(dec_layers=1)
    fix_mask_prediction(dec, torch.tensor([1.0] + [0.0] * 7, dtype=torch.float64))
    mask_features = torch.full((1, 8, 32, 32), -1.0, dtype=torch.float64)  # all logits < 0
    x = multi_scale_inputs(H=4, W=4)

    seen = {}
    layer = dec.transformer_cross_attention_layers[0]
    orig_forward = layer.forward

    def spy(tgt, memory, allowed=None, pos=None, query_pos=None):
        seen["allowed"] = allowed.clone()
        return orig_forward(tgt, memory, allowed, pos=pos, query_pos=query_pos)

    layer.forward = spy
    out = dec(x, mask_features)
    assert seen["allowed"].all()
    assert torch.isfinite(out["pred_logits"]).all()

    # Identical to the same layer without any attention mask.
    layer.forward = lambda tgt, memory, allowed=None, pos=None, query_pos=None: orig_forward(
        tgt, memory, None, pos=pos, query_pos=query_pos
    )
    torch.testing.assert_close(dec(x, mask_features)["pred_logits"], out["pred_logits"])


def test_attention_mask_is_previous_prediction_resized_and_thresholded():
    dec = small_decoder(dec_layers=2)
    x = multi_scale_inputs(H=2, W=3)
    mask_features = torch.randn(1, 8, 16, 24, dtype=torch.float64)
    captured = []
    for layer in dec.transformer_cross_attention_layers:
        orig = layer.forward

        def spy(tgt, memory, allowed=None, pos=None, query_pos=None, _orig=orig):
            captured.append(allowed.clone())
            return _orig(tgt, memory, allowed, pos=pos, query_pos=query_pos)

        layer.forward = spy
    out = dec(x, mask_features)
    preds = [out["aux_outputs"][0]["pred_masks"], out["aux_outputs"][1]["pred_masks"]]
    for i, (pred, allowed) in enumerate(zip(preds, captured)):
        size = x[i % 3].shape[-2:]  # layer i reads level i mod 3 (round robin)
        m = F.interpolate(pred, size=size, mode="bilinear", align_corners=False).sigmoid() >= 0.5
        m = m.flatten(2)
        m = m | ~m.any(-1, keepdim=True)
        assert torch.equal(allowed, m)


def test_position_embedding_sine_matches_batched_reference():
    pe = PositionEmbeddingSine(16, normalize=True)
    x = torch.zeros(2, 3, 5, 7)
    pos = pe(x)
    assert pos.shape == (2, 32, 5, 7)
    ref = pe(x, mask=torch.zeros(2, 5, 7, dtype=torch.bool))
    torch.testing.assert_close(pos, ref)
    # y encodes rows: constant along x for the first half of the channels.
    assert torch.allclose(pos[0, :16, :, 0], pos[0, :16, :, -1])
