"""The deformable encoder and pixel decoder against a slow float64 re-implementation
(modeling/pixel_decoder/msdeformattn.py; Deformable DETR Eq. 2-3, Mask2Former Sec. 4.1).

The reference reads only the module's parameters and recomputes, token by token: query = x + pos
(sine + level embedding); for head m, level l, point k a location = the token's reference point
(the centre of its own pixel, normalised by its level's size) + offset / (W_l, H_l); the value map
of level l (its rows start after all tokens of the finer-indexed levels before it) sampled
bilinearly there (zero outside); the softmax-over-(l, k) weighted sum; output projection, then
post-norm residual blocks (attention, FFN with ReLU).
"""

import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec

from mask2former.modeling.pixel_decoder.msdeformattn import (
    MSDeformAttnPixelDecoder,
    MSDeformAttnTransformerEncoder,
    MSDeformAttnTransformerEncoderLayer,
    MSDeformAttnTransformerEncoderOnly,
)
from mask2former.modeling.pixel_decoder.ops import backends

HAS_CXX = shutil.which("c++") is not None or shutil.which("g++") is not None
BACKENDS = [
    "pytorch",
    pytest.param("cpp", marks=pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler")),
]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """Forces one CPU backend (the compiled kernel is the one that reads level_start_index)."""
    backends._select.cache_clear()
    monkeypatch.setenv(backends.ENV_VAR, request.param)
    assert backends.select_backend("cpu").name == request.param
    yield request.param
    backends._select.cache_clear()


def test_get_reference_points_are_pixel_centres_of_each_level():
    ref = MSDeformAttnTransformerEncoder.get_reference_points([(2, 3), (1, 2)], 2, "cpu")
    assert ref.shape == (2, 8, 2, 2)  # (B, S, L, 2)
    expected = torch.tensor(
        [[1 / 6, 1 / 4], [3 / 6, 1 / 4], [5 / 6, 1 / 4], [1 / 6, 3 / 4], [3 / 6, 3 / 4]]
        + [[5 / 6, 3 / 4], [1 / 4, 1 / 2], [3 / 4, 1 / 2]]
    )  # (x, y): row-major over level 0 (2 x 3), then level 1 (1 x 2)
    for b in range(2):
        for lvl in range(2):  # the same normalised point is used on every level
            torch.testing.assert_close(ref[b, :, lvl], expected)


def _encoder(levels: int = 3) -> MSDeformAttnTransformerEncoderOnly:
    torch.manual_seed(0)
    enc = MSDeformAttnTransformerEncoderOnly(
        d_model=8,
        nhead=2,
        num_encoder_layers=2,
        dim_feedforward=16,
        dropout=0.0,
        num_feature_levels=levels,
        enc_n_points=2,
    )
    with torch.no_grad():  # query-dependent offsets and weights, non-zero biases
        for name, p in enc.named_parameters():
            if "sampling_offsets.weight" in name or "attention_weights" in name:
                p.normal_(0, 0.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    return enc.double().eval()


def _bilinear(value_map: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """value_map (H, W, D); (x, y) normalised, pixel centres at (j + 0.5) / W; zero outside."""
    h, w, _ = value_map.shape
    u, v = x * w - 0.5, y * h - 0.5
    u0, v0 = math.floor(u), math.floor(v)
    out = torch.zeros(value_map.shape[-1], dtype=torch.float64)
    for uu in (u0, u0 + 1):
        for vv in (v0, v0 + 1):
            if 0 <= uu < w and 0 <= vv < h:
                out += (1 - abs(u - uu)) * (1 - abs(v - vv)) * value_map[vv, uu]
    return out


def _linear(x, sd, name):
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def _layer_norm(x, sd, name, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * sd[name + ".weight"] + sd[name + ".bias"]


def _reference_encoder(enc, srcs, poses, num_layers=2, heads=2, points=2):
    sd = {k: v.double() for k, v in enc.state_dict().items()}
    shapes = [tuple(s.shape[-2:]) for s in srcs]
    num_levels = len(shapes)
    starts = [sum(h * w for h, w in shapes[:lvl]) for lvl in range(num_levels)]
    x = torch.cat([s.double().flatten(2).transpose(1, 2) for s in srcs], 1)  # (B, S, C)
    pos = torch.cat(
        [p.double().flatten(2).transpose(1, 2) + sd["level_embed"][i] for i, p in enumerate(poses)],
        1,
    )
    ref = [((j + 0.5) / w, (i + 0.5) / h) for h, w in shapes for i in range(h) for j in range(w)]
    B, S, C = x.shape
    D = C // heads
    for k in range(num_layers):
        pre = f"encoder.layers.{k}."
        q = x + pos
        value = _linear(x, sd, pre + "self_attn.value_proj").view(B, S, heads, D)
        off = _linear(q, sd, pre + "self_attn.sampling_offsets")
        off = off.view(B, S, heads, num_levels, points, 2)
        aw = _linear(q, sd, pre + "self_attn.attention_weights")
        aw = aw.view(B, S, heads, num_levels * points).softmax(-1)
        aw = aw.view(B, S, heads, num_levels, points)
        attn = torch.zeros(B, S, heads, D, dtype=torch.float64)
        for b in range(B):
            for s in range(S):
                for m in range(heads):
                    for lvl, (h, w) in enumerate(shapes):
                        level_map = value[b, starts[lvl] : starts[lvl] + h * w, m].view(h, w, D)
                        for p in range(points):
                            lx = ref[s][0] + float(off[b, s, m, lvl, p, 0]) / w
                            ly = ref[s][1] + float(off[b, s, m, lvl, p, 1]) / h
                            attn[b, s, m] += aw[b, s, m, lvl, p] * _bilinear(level_map, lx, ly)
        attn = _linear(attn.view(B, S, C), sd, pre + "self_attn.output_proj")
        x = _layer_norm(x + attn, sd, pre + "norm1")
        ffn = _linear(torch.relu(_linear(x, sd, pre + "linear1")), sd, pre + "linear2")
        x = _layer_norm(x + ffn, sd, pre + "norm2")
    return x


def _levels(batch=2, shapes=((4, 3), (2, 2), (1, 2)), channels=8):
    g = torch.Generator().manual_seed(1)
    srcs = [torch.randn(batch, channels, h, w, generator=g, dtype=torch.float64) for h, w in shapes]
    poses = [
        torch.randn(batch, channels, h, w, generator=g, dtype=torch.float64) for h, w in shapes
    ]
    return srcs, poses


def test_spatial_shapes_and_cumulative_level_start_index():
    enc = _encoder()
    srcs, poses = _levels(shapes=((4, 3), (2, 2), (1, 2)))
    with torch.no_grad():
        memory, shapes, starts = enc(srcs, poses)
    assert memory.shape == (2, 12 + 4 + 2, 8)
    assert shapes.tolist() == [[4, 3], [2, 2], [1, 2]] and shapes.dtype == torch.int64
    assert starts.tolist() == [0, 12, 16] and starts.dtype == torch.int64


def test_encoder_matches_float64_reimplementation(backend):
    enc = _encoder()
    srcs, poses = _levels()
    with torch.no_grad():
        memory, _, _ = enc(srcs, poses)
    expected = _reference_encoder(enc, srcs, poses)
    # The module builds its reference points in float32 (as the published code): ~1e-8 apart.
    torch.testing.assert_close(memory, expected, atol=1e-6, rtol=1e-6)


def test_encoder_reads_the_level_sizes_from_spatial_shapes_when_not_given():
    """The encoder alone, without the Python `shapes`: the same as with them."""
    enc = _encoder()
    srcs, poses = _levels()
    x = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
    pos = torch.cat([p.flatten(2).transpose(1, 2) for p in poses], 1)
    spatial_shapes = torch.tensor([[4, 3], [2, 2], [1, 2]])
    starts = torch.tensor([0, 12, 16])
    with torch.no_grad():
        got = enc.encoder(x, spatial_shapes, starts, pos)
        expected = enc.encoder(x, spatial_shapes, starts, pos, shapes=[(4, 3), (2, 2), (1, 2)])
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_encoder_levels_are_not_interchangeable(backend):
    """Reordering the levels (another level first) changes the result: level embeddings and
    level-specific offsets follow the level index (guards against an encoder ignoring levels)."""
    enc = _encoder()
    srcs, poses = _levels()
    with torch.no_grad():
        memory, _, _ = enc(srcs, poses)
        swapped, _, _ = enc([srcs[1], srcs[0], srcs[2]], [poses[1], poses[0], poses[2]])
    # The tokens of level 2 are at the end in both orders; their outputs must differ.
    assert not torch.allclose(memory[:, -2:], swapped[:, -2:])


# ---- the pixel decoder's wiring ---------------------------------------------------------------

_INPUT_SHAPE = {
    "res2": ShapeSpec(channels=6, stride=4),
    "res3": ShapeSpec(channels=10, stride=8),
    "res4": ShapeSpec(channels=12, stride=16),
    "res5": ShapeSpec(channels=14, stride=32),
}


def _decoder(in_features=("res3", "res4", "res5")) -> MSDeformAttnPixelDecoder:
    torch.manual_seed(0)
    return MSDeformAttnPixelDecoder(
        _INPUT_SHAPE,
        transformer_dropout=0.0,
        transformer_nheads=4,
        transformer_dim_feedforward=64,
        transformer_enc_layers=1,
        conv_dim=32,
        mask_dim=16,
        norm="GN",
        transformer_in_features=list(in_features),
        common_stride=4,
    ).eval()


def _features():
    g = torch.Generator().manual_seed(2)
    sizes = {"res2": (16, 12), "res3": (8, 6), "res4": (4, 3), "res5": (2, 2)}
    return {
        k: torch.randn(1, _INPUT_SHAPE[k].channels, *hw, generator=g) for k, hw in sizes.items()
    }


def test_pixel_decoder_structure():
    dec = _decoder()
    assert dec.in_features == ["res2", "res3", "res4", "res5"]
    assert dec.feature_strides == [4, 8, 16, 32] and dec.feature_channels == [6, 10, 12, 14]
    assert dec.transformer_in_features == ["res3", "res4", "res5"]
    assert dec.transformer_feature_strides == [8, 16, 32]
    assert dec.num_fpn_levels == 1 and dec.maskformer_num_feature_levels == 3
    # input_proj[0] reads res5 (coarsest first), input_proj[2] reads res3.
    assert [p[0].in_channels for p in dec.input_proj] == [14, 12, 10]
    assert all(p[0].bias.abs().max() == 0 for p in dec.input_proj)
    assert dec.transformer.encoder.num_layers == 1
    assert dec.transformer.encoder.layers[0].linear1.out_features == 64
    assert dec.transformer.encoder.layers[0].self_attn.n_heads == 4
    assert dec.transformer.encoder.layers[0].self_attn.n_levels == 3
    assert dec.lateral_convs[0].in_channels == 6
    assert dec.mask_features.out_channels == 16 and dec.mask_dim == 16
    # Sec. 4.1: sine positional encoding, normalised (to [0, 2 pi]), C / 2 features per axis
    assert dec.pe_layer.normalize and dec.pe_layer.num_pos_feats == 16
    assert dec.pe_layer.scale == pytest.approx(2 * math.pi)


def test_pixel_decoder_is_registered():
    from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

    assert SEM_SEG_HEADS_REGISTRY.get("MSDeformAttnPixelDecoder") is MSDeformAttnPixelDecoder


@pytest.mark.parametrize(
    "in_features, fpn_features",
    [(("res3", "res4", "res5"), ["res2"]), (("res4", "res5"), ["res3", "res2"])],
)
def test_pixel_decoder_outputs_recomposed_from_its_parts(in_features, fpn_features):
    """One FPN level (encoder on res3-res5) or two (encoder on res4-res5: res3 then res2)."""
    dec = _decoder(in_features)
    assert dec.num_fpn_levels == len(fpn_features)
    feats = _features()
    with torch.no_grad():
        mask_features, coarsest, multi_scale = dec.forward_features(feats)
        # The encoder sees its features from low to high resolution (res5 first), each projected
        # by its own input_proj, with the sine encoding of its own size.
        order = list(in_features)[::-1]
        srcs = [dec.input_proj[i](feats[f]) for i, f in enumerate(order)]
        pos = [dec.pe_layer(feats[f]) for f in order]
        memory, shapes, _ = dec.transformer(srcs, pos)
        maps, start = [], 0
        for h, w in shapes.tolist():
            maps.append(memory[:, start : start + h * w].transpose(1, 2).reshape(1, -1, h, w))
            start += h * w
        # Top-down FPN: lateral 1x1 of the finer feature + the previous map upsampled, 3x3.
        for i, f in enumerate(fpn_features):
            lateral = dec.lateral_convs[i](feats[f])
            up = F.interpolate(
                maps[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
            )
            maps.append(dec.output_convs[i](lateral + up))
        expected_mask = dec.mask_features(maps[-1])
    sizes = {"res2": (16, 12), "res3": (8, 6), "res4": (4, 3), "res5": (2, 2)}
    assert [tuple(m.shape[-2:]) for m in multi_scale] == [
        sizes[f] for f in ("res5", "res4", "res3")
    ]
    for got, expected in zip(multi_scale, maps[:3], strict=True):
        torch.testing.assert_close(got, expected)
    torch.testing.assert_close(coarsest, maps[0])
    assert mask_features.shape == (1, 16, 16, 12)
    torch.testing.assert_close(mask_features, expected_mask)


def test_pixel_decoder_runs_in_its_own_dtype():
    """A float64 decoder (a reference run) casts float32 features to float64 first."""
    dec = _decoder().double()
    feats = _features()
    with torch.no_grad():
        got = dec.forward_features(feats)
        expected = dec.forward_features({k: v.double() for k, v in feats.items()})
    assert got[0].dtype == torch.float64
    torch.testing.assert_close(got, expected)


def test_pixel_decoder_follows_bf16_autocast_only():
    """Under bf16 autocast the encoder runs in bf16; without autocast (or under fp16) in fp32."""
    dec, feats = _decoder(), _features()
    seen = []
    msda = dec.transformer.encoder.layers[0].self_attn
    hook = msda.value_proj.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mask_bf16 = dec.forward_features(feats)[0]
        with torch.autocast("cpu", dtype=torch.float16):
            mask_fp16 = dec.forward_features(feats)[0]
        mask_fp32 = dec.forward_features(feats)[0]
    hook.remove()
    assert seen == [torch.bfloat16, torch.float32, torch.float32]
    assert mask_bf16.dtype == torch.bfloat16
    assert mask_fp16.dtype == mask_fp32.dtype == torch.float32


def test_pixel_decoder_forward_points_to_forward_features():
    message = r"^pixel decoders are called through forward_features\(features\)$"
    with pytest.raises(NotImplementedError, match=message):
        _decoder()(_features())


# ---- defaults, initialisation, config ---------------------------------------------------------


def test_encoder_defaults_are_deformable_detrs():
    """d_model 256, 8 heads, 6 layers, FFN 1024, dropout 0.1, 4 levels, 4 points."""
    torch.manual_seed(0)
    enc = MSDeformAttnTransformerEncoderOnly()
    assert enc.d_model == 256 and enc.nhead == 8 and enc.encoder.num_layers == 6
    assert len(enc.encoder.layers) == 6 and enc.level_embed.shape == (4, 256)
    layer = enc.encoder.layers[0]
    assert layer.linear1.out_features == 1024 and layer.dropout1.p == 0.1
    attn = layer.self_attn
    assert (attn.d_model, attn.n_levels, attn.n_heads, attn.n_points) == (256, 4, 8, 4)
    layer = MSDeformAttnTransformerEncoderLayer()
    assert layer.linear1.in_features == 256 and layer.linear1.out_features == 1024
    assert layer.dropout1.p == layer.dropout2.p == layer.dropout3.p == 0.1
    attn = layer.self_attn
    assert (attn.d_model, attn.n_levels, attn.n_heads, attn.n_points) == (256, 4, 8, 4)


def test_encoder_initialisation():
    """Level embeddings ~ N(0, 1); every matrix Xavier-uniform, except the deformable
    attention's own init (zero offset and weight matrices, see ops/module.py)."""
    torch.manual_seed(0)
    enc = MSDeformAttnTransformerEncoderOnly(d_model=64, nhead=4, num_encoder_layers=1)
    assert abs(float(enc.level_embed.std()) - 1) < 0.1 and abs(float(enc.level_embed.mean())) < 0.1
    layer = enc.encoder.layers[0]
    w = layer.linear2.weight  # (64, 1024): Xavier bound sqrt(6 / 1088) = 0.074, default 0.031
    assert 1 / math.sqrt(1024) < w.abs().max() <= math.sqrt(6 / (1024 + 64))
    assert layer.self_attn.sampling_offsets.weight.abs().max() == 0
    assert layer.self_attn.attention_weights.weight.abs().max() == 0
    assert layer.self_attn.sampling_offsets.bias.abs().max() > 0  # the grid of directions


def test_pixel_decoder_input_projections_are_xavier_with_gain_1():
    dec = _decoder()
    for p in dec.input_proj:
        w = p[0].weight  # (32, C_in, 1, 1): bound sqrt(6 / (C_in + 32))
        bound = math.sqrt(6 / (w.shape[1] + 32))
        assert 0.8 * bound < w.abs().max() <= bound
        assert isinstance(p[1], torch.nn.GroupNorm) and p[1].num_groups == 32


def test_pixel_decoder_from_config():
    from detectron2.config import get_cfg

    from mask2former.config import add_maskformer2_config

    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 32, 16
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 2
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 8
    cfg.MODEL.MASK_FORMER.NHEADS, cfg.MODEL.MASK_FORMER.DROPOUT = 4, 0.25
    dec = MSDeformAttnPixelDecoder(cfg, _INPUT_SHAPE)
    assert dec.transformer_in_features == ["res4", "res5"] and dec.common_stride == 8
    assert dec.num_fpn_levels == 1  # 1/16 -> 1/8
    layer = dec.transformer.encoder.layers[0]
    assert dec.transformer.encoder.num_layers == 2 and layer.self_attn.n_heads == 4
    assert layer.linear1.out_features == 1024 and layer.dropout1.p == 0.25
    assert dec.mask_dim == 16
