"""Masked-attention transformer decoder: SDPA == nn.MultiheadAttention, Eq. (2)-(3), empty masks."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mask2former.modeling.transformer_decoder.mask2former_transformer_decoder import (
    CrossAttentionLayer,
    FFNLayer,
    MultiScaleMaskedTransformerDecoder,
    SelfAttentionLayer,
    multi_head_attention,
)
from mask2former.modeling.transformer_decoder.position_encoding import PositionEmbeddingSine


@pytest.mark.parametrize("with_mask,bias", [(False, True), (True, True), (True, False)])
def test_sdpa_matches_multihead_attention_float64(with_mask, bias):
    torch.manual_seed(0)
    B, Lq, Lk, C, h = 2, 5, 7, 16, 4
    mha = nn.MultiheadAttention(C, h, bias=bias).double().eval()
    if bias:
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
    num_queries=4, dec_layers=3, hidden=32, mask_dim=8, **overrides
) -> MultiScaleMaskedTransformerDecoder:
    """A float64 decoder in training mode (every prediction made at full size: the decoder has
    no dropout, so training mode only adds "aux_outputs"); `overrides` replace any other
    constructor argument."""
    kwargs = dict(
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
    return MultiScaleMaskedTransformerDecoder(**(kwargs | overrides)).double().train()


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


# ---------------------------------------------------------------------------------------------
# The whole decoder against a slow float64 re-implementation of Sec. 3.2 / Eq. (2)-(3), written
# with explicit matrix products (no nn.MultiheadAttention, no SDPA), on randomised parameters.


def _randomise(module: nn.Module, seed: int) -> None:
    """Every parameter (biases, LayerNorm gains, embeddings) random, so none is a no-op."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _attention64(x_q, x_k, x_v, w_in, b_in, w_out, b_out, heads, blocked=None):
    """Multi-head attention of one image: x_q (Lq, C), x_k/x_v (Lk, C); blocked (Lq, Lk)."""
    c = x_q.shape[1]
    d = c // heads
    q = x_q @ w_in[:c].T + b_in[:c]
    k = x_k @ w_in[c : 2 * c].T + b_in[c : 2 * c]
    v = x_v @ w_in[2 * c :].T + b_in[2 * c :]
    out = torch.zeros(x_q.shape[0], c, dtype=torch.float64)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        logits = q[:, s] @ k[:, s].T / math.sqrt(d)
        if blocked is not None:
            logits = logits.masked_fill(blocked, -math.inf)
        out[:, s] = torch.softmax(logits, dim=-1) @ v[:, s]
    return out @ w_out.T + b_out


def _layer_norm64(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _sine_position64(h: int, w: int, feats: int) -> torch.Tensor:
    """DETR's normalised sine embedding, (2 * feats, h, w): y channels first, then x."""
    out = torch.zeros(2 * feats, h, w, dtype=torch.float64)
    for axis, n in enumerate((h, w)):
        for i in range(n):
            t = (i + 1) / (n + 1e-6) * 2 * math.pi
            for f in range(feats):
                angle = t / 10000 ** (2 * (f // 2) / feats)
                val = math.sin(angle) if f % 2 == 0 else math.cos(angle)
                if axis == 0:
                    out[f, i, :] = val
                else:
                    out[feats + f, :, i] = val
    return out


def _decoder_reference64(dec, x, mask_features, pre_norm):
    """Returns [(class logits (B, Q, K+1), mask logits (B, Q, H, W))] for predictions 0..L."""
    heads = dec.num_heads
    hidden = dec.query_feat.weight.shape[1]
    batch = mask_features.shape[0]
    results = []
    for b in range(batch):
        src, pos, sizes = [], [], []
        for lvl, feat in enumerate(x):
            f = feat[b]  # (C_in, H_l, W_l)
            proj = dec.input_proj[lvl]
            if isinstance(proj, nn.Sequential):
                p = f
            else:  # 1x1 convolution
                p = (
                    torch.einsum("oc,chw->ohw", proj.weight[:, :, 0, 0], f)
                    + proj.bias[:, None, None]
                )
            p = p + dec.level_embed.weight[lvl][:, None, None]
            src.append(p.flatten(1).T)  # (S_l, C)
            pe = _sine_position64(f.shape[1], f.shape[2], hidden // 2)
            pos.append(pe.flatten(1).T)
            sizes.append(tuple(f.shape[1:]))

        def heads_out(out, size, feats=mask_features[b]):
            y = _layer_norm64(out, dec.decoder_norm)
            cls = y @ dec.class_embed.weight.T + dec.class_embed.bias
            e = y
            for i, lin in enumerate(dec.mask_embed.layers):
                e = e @ lin.weight.T + lin.bias
                if i < len(dec.mask_embed.layers) - 1:
                    e = torch.relu(e)
            masks = torch.einsum("qc,chw->qhw", e, feats)
            if size is None:
                return cls, masks, None
            small = F.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)
            blocked = (small[0].sigmoid() < 0.5).flatten(1)  # (Q, S_l)
            blocked[blocked.all(-1)] = False  # an empty mask attends everywhere
            return cls, masks, blocked

        qpos = dec.query_embed.weight
        out = dec.query_feat.weight
        preds = []
        cls, masks, blocked = heads_out(out, sizes[0])
        preds.append((cls, masks))
        n = dec.num_layers
        for i in range(n):
            lvl = i % 3
            ca = dec.transformer_cross_attention_layers[i]
            sa = dec.transformer_self_attention_layers[i]
            ff = dec.transformer_ffn_layers[i]
            mha = ca.multihead_attn
            w = (mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias)
            t = _layer_norm64(out, ca.norm) if pre_norm else out
            out = out + _attention64(t + qpos, src[lvl] + pos[lvl], src[lvl], *w, heads, blocked)
            out = out if pre_norm else _layer_norm64(out, ca.norm)
            mha = sa.self_attn
            w = (mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias)
            t = _layer_norm64(out, sa.norm) if pre_norm else out
            out = out + _attention64(t + qpos, t + qpos, t, *w, heads)
            out = out if pre_norm else _layer_norm64(out, sa.norm)
            t = _layer_norm64(out, ff.norm) if pre_norm else out
            hid = torch.relu(t @ ff.linear1.weight.T + ff.linear1.bias)
            out = out + hid @ ff.linear2.weight.T + ff.linear2.bias
            out = out if pre_norm else _layer_norm64(out, ff.norm)
            cls, masks, blocked = heads_out(out, None if i == n - 1 else sizes[(i + 1) % 3])
            preds.append((cls, masks))
        results.append(preds)
    return [
        (torch.stack([r[k][0] for r in results]), torch.stack([r[k][1] for r in results]))
        for k in range(len(results[0]))
    ]


@pytest.mark.parametrize(
    "pre_norm,in_channels,enforce", [(False, 12, False), (True, 16, True), (False, 16, False)]
)
def test_decoder_matches_float64_reference(pre_norm, in_channels, enforce):
    """4 layers (the round robin wraps to 1/32 again), 2 images, levels of different sizes."""
    torch.manual_seed(0)
    dec = small_decoder(
        num_queries=5,
        dec_layers=4,
        hidden=16,
        mask_dim=6,
        in_channels=in_channels,
        num_classes=3,
        nheads=2,
        dim_feedforward=24,
        pre_norm=pre_norm,
        enforce_input_project=enforce,
    )
    has_proj = in_channels != 16 or enforce
    assert isinstance(dec.input_proj[0], nn.Sequential) != has_proj
    _randomise(dec, seed=1)
    g = torch.Generator().manual_seed(2)
    x = [
        torch.randn(2, in_channels, h, w, generator=g, dtype=torch.float64)
        for h, w in ((2, 3), (3, 5), (5, 7))
    ]
    mask_features = torch.randn(2, 6, 10, 13, generator=g, dtype=torch.float64)
    out = dec(x, mask_features)
    ref = _decoder_reference64(dec, x, mask_features, pre_norm)
    got = [(a["pred_logits"], a["pred_masks"]) for a in out["aux_outputs"]]
    got.append((out["pred_logits"], out["pred_masks"]))
    assert len(got) == len(ref) == 5
    # The module's sine encoding is float32 (PositionEmbeddingSine): 1e-6, not 1e-12.
    for (cls, masks), (ref_cls, ref_masks) in zip(got, ref):
        torch.testing.assert_close(cls, ref_cls, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(masks, ref_masks, rtol=1e-6, atol=1e-6)


def test_inference_gives_the_training_outputs_without_aux():
    """No dropout (Table 4 / Sec. 3.2.3), and at inference the attention masks come from the mask
    features resized to each level (`attention_mask`), not from resizing 1/4 predictions: the
    same final outputs as training mode, up to rounding, and no "aux_outputs"."""
    dec = small_decoder(dec_layers=5)  # two rounds over the three levels
    _randomise(dec, seed=3)
    x = multi_scale_inputs(H=3, W=5)
    mask_features = torch.randn(1, 8, 21, 37, dtype=torch.float64)  # not a multiple of a level
    train = dec(x, mask_features)
    dec.eval()
    infer = dec(x, mask_features)
    assert len(train["aux_outputs"]) == 5 and infer["aux_outputs"] == []
    torch.testing.assert_close(infer["pred_logits"], train["pred_logits"], rtol=0, atol=1e-10)
    torch.testing.assert_close(infer["pred_masks"], train["pred_masks"], rtol=0, atol=1e-10)


def test_attention_mask_is_the_resized_prediction_thresholded():
    """Eq. (3) at inference: the mask from resized mask features equals the training path's mask
    (the 1/4 prediction resized, sigmoid < 0.5 masked), pixel for pixel, on every level size."""
    dec = small_decoder()
    _randomise(dec, seed=4)
    g = torch.Generator().manual_seed(5)
    output = torch.randn(2, 4, 32, generator=g, dtype=torch.float64)
    mask_features = torch.randn(2, 8, 23, 31, generator=g, dtype=torch.float64)
    for size in [(3, 4), (6, 8), (12, 16), (23, 31)]:
        _, _, expected = dec.forward_prediction_heads(output, mask_features, size)
        resized = F.interpolate(mask_features, size=size, mode="bilinear", align_corners=False)
        got = dec.attention_mask(output, resized)
        assert got.shape == (2, 4, size[0] * size[1]) and got.dtype == torch.bool
        assert 0.2 < got.double().mean() < 0.8  # not trivially all or nothing
        assert torch.equal(got, expected), size


def test_layers_are_xavier_initialised():
    """Every matrix of the attention and FFN layers is Xavier-uniform: bound sqrt(6/(in+out)),
    wider than nn.Linear's default 1/sqrt(in) (a 64x16 FFN matrix: 0.27 vs 0.25)."""
    torch.manual_seed(0)
    dec = small_decoder(hidden=16, dec_layers=1)
    ffn = dec.transformer_ffn_layers[0]
    for lin in (ffn.linear1, ffn.linear2):
        out_f, in_f = lin.weight.shape
        bound = math.sqrt(6 / (in_f + out_f))
        assert lin.weight.abs().max() <= bound
        assert lin.weight.abs().max() > 1 / math.sqrt(in_f)  # impossible for the default
    for layer in (
        dec.transformer_self_attention_layers[0],
        dec.transformer_cross_attention_layers[0],
    ):
        mha = layer.self_attn if hasattr(layer, "self_attn") else layer.multihead_attn
        w = mha.out_proj.weight
        assert w.abs().max() > 1 / math.sqrt(w.shape[1])


def _decoder_cfg(**mask_former):
    from detectron2.config import get_cfg

    from mask2former.config import add_maskformer2_config

    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 7
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 12
    mf = cfg.MODEL.MASK_FORMER
    mf.HIDDEN_DIM, mf.NUM_OBJECT_QUERIES, mf.NHEADS, mf.DIM_FEEDFORWARD = 16, 3, 2, 20
    mf.DEC_LAYERS, mf.PRE_NORM, mf.ENFORCE_INPUT_PROJ = 4, True, True
    for key, val in mask_former.items():
        setattr(mf, key, val)
    return cfg


def test_from_config_reads_every_key():
    """DEC_LAYERS counts predictions: 4 -> 3 Transformer layers; each key lands in its place."""
    from mask2former.modeling.transformer_decoder.build import build_transformer_decoder

    cfg = _decoder_cfg(TRANSFORMER_DECODER_NAME="MultiScaleMaskedTransformerDecoder")
    dec = build_transformer_decoder(cfg, 16)  # registered; mask classification by default
    assert type(dec) is MultiScaleMaskedTransformerDecoder
    assert dec.num_layers == 3 and len(dec.transformer_ffn_layers) == 3
    assert dec.class_embed.out_features == 8  # 7 classes + "no object"
    assert dec.query_feat.weight.shape == dec.query_embed.weight.shape == (3, 16)
    assert dec.num_heads == 2 and dec.transformer_self_attention_layers[0].self_attn.num_heads == 2
    assert dec.transformer_ffn_layers[0].linear1.out_features == 20
    assert dec.transformer_ffn_layers[0].normalize_before is True
    assert dec.mask_embed.layers[-1].out_features == 12 and len(dec.mask_embed.layers) == 3
    assert dec.mask_classification is True
    assert dec.num_queries == 3
    assert not isinstance(dec.input_proj[0], nn.Sequential)  # ENFORCE_INPUT_PROJ with 16 == 16
    assert dec.pe_layer.num_pos_feats == 8 and dec.pe_layer.normalize
    # One prediction only (DEC_LAYERS = 1): zero layers, no aux outputs.
    one = MultiScaleMaskedTransformerDecoder(
        _decoder_cfg(DEC_LAYERS=1), in_channels=16, mask_classification=True
    ).double()
    out = one(multi_scale_inputs(C=16, H=2, W=2), torch.randn(1, 12, 8, 8, dtype=torch.float64))
    assert out["aux_outputs"] == [] and out["pred_masks"].shape == (1, 3, 8, 8)


def test_bad_arguments_are_rejected_with_the_fix():
    with pytest.raises(
        ValueError, match=r"^MODEL\.MASK_FORMER\.DEC_LAYERS=0: .*>= 1; the paper uses 10$"
    ):
        MultiScaleMaskedTransformerDecoder(
            _decoder_cfg(DEC_LAYERS=0), in_channels=16, mask_classification=True
        )
    with pytest.raises(
        ValueError, match="^MultiScaleMaskedTransformerDecoder only supports mask classification$"
    ):
        MultiScaleMaskedTransformerDecoder(
            _decoder_cfg(), in_channels=16, mask_classification=False
        )
    dec = small_decoder()
    with pytest.raises(ValueError, match="^expected 3 feature maps, got 2$"):
        dec(multi_scale_inputs()[:2], torch.randn(1, 8, 64, 64, dtype=torch.float64))


def test_only_the_queries_of_an_empty_image_attend_everywhere():
    """Image 0: every mask empty -> all True; image 1: masks = left half -> left half only.
    The rule is per query (row), not per key position or per batch."""
    dec = small_decoder(dec_layers=1)
    fix_mask_prediction(dec, torch.tensor([1.0] + [0.0] * 7, dtype=torch.float64))
    mask_features = torch.full((2, 8, 32, 32), -1.0, dtype=torch.float64)
    mask_features[1, 0, :, :16] = 1.0
    seen = {}
    layer = dec.transformer_cross_attention_layers[0]
    orig_forward = layer.forward

    def spy(tgt, memory, allowed=None, pos=None, query_pos=None):
        seen["allowed"] = allowed.clone()
        return orig_forward(tgt, memory, allowed, pos=pos, query_pos=query_pos)

    layer.forward = spy
    dec(multi_scale_inputs(B=2, H=4, W=4), mask_features)
    allowed = seen["allowed"].view(2, 4, 4, 4)  # (B, Q, H_l, W_l) at the 1/32 level, 4 x 4
    assert allowed[0].all()
    assert allowed[1, :, :, :2].all() and not allowed[1, :, :, 2:].any()


def test_layer_defaults():
    """Post-norm, no dropout, FFN width 2048 unless told otherwise (as published)."""
    for layer in (SelfAttentionLayer(16, 4), CrossAttentionLayer(16, 4), FFNLayer(16)):
        assert layer.normalize_before is False
        assert layer.dropout.p == 0.0
    assert SelfAttentionLayer(16, 4).self_attn.dropout == 0.0
    assert CrossAttentionLayer(16, 4).multihead_attn.dropout == 0.0
    assert FFNLayer(16).linear1.out_features == 2048
    # mask_classification defaults to True (the only mode): omitting it constructs the decoder.
    dec = MultiScaleMaskedTransformerDecoder(
        in_channels=16,
        num_classes=2,
        hidden_dim=16,
        num_queries=2,
        nheads=2,
        dim_feedforward=8,
        dec_layers=1,
        pre_norm=False,
        mask_dim=4,
        enforce_input_project=False,
    )
    assert dec.mask_classification is True


def test_probability_exactly_one_half_may_be_attended():
    """Eq. (3): M = 0 (attend) where sigmoid(mask logit) >= 0.5, -inf only below 0.5."""
    dec = small_decoder(dec_layers=1)
    fix_mask_prediction(dec, torch.tensor([1.0] + [0.0] * 7, dtype=torch.float64))
    mask_features = torch.full((1, 8, 32, 32), -1.0, dtype=torch.float64)
    mask_features[0, 0, :16, :16] = 0.0  # logit exactly 0 (p = 0.5) in the top-left quadrant
    seen = {}
    layer = dec.transformer_cross_attention_layers[0]
    orig_forward = layer.forward

    def spy(tgt, memory, allowed=None, pos=None, query_pos=None):
        seen["allowed"] = allowed.clone()
        return orig_forward(tgt, memory, allowed, pos=pos, query_pos=query_pos)

    layer.forward = spy
    dec(multi_scale_inputs(H=4, W=4), mask_features)
    allowed = seen["allowed"].view(4, 4, 4)  # (Q, 4, 4) at the 1/32 level
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(allowed, expected.expand(4, -1, -1))
