"""The MSDeformAttn module: parameters, initialisation, padding mask, reference points, gradients
(mask2former/modeling/pixel_decoder/ops/module.py)."""

import copy
import math

import pytest
import torch

from mask2former.modeling.pixel_decoder.ops import MSDeformAttn

from .reference import reference_ms_deform_attn


def test_module_parameters_and_init():
    m = MSDeformAttn(d_model=256, n_levels=3, n_heads=8, n_points=4)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "sampling_offsets.weight": (192, 256),
        "sampling_offsets.bias": (192,),
        "attention_weights.weight": (96, 256),
        "attention_weights.bias": (96,),
        "value_proj.weight": (256, 256),
        "value_proj.bias": (256,),
        "output_proj.weight": (256, 256),
        "output_proj.bias": (256,),
    }
    assert not m.sampling_offsets.weight.any() and not m.attention_weights.weight.any()
    assert (
        not m.attention_weights.bias.any()
        and not m.value_proj.bias.any()
        and not m.output_proj.bias.any()
    )
    bias = m.sampling_offsets.bias.detach().view(8, 3, 4, 2)  # (M, L, P, 2)
    # head h points at angle 2*pi*h/8, scaled so its larger coordinate is 1, times (point + 1)
    directions = torch.tensor(
        [[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]]
    )
    expected = directions[:, None, None, :] * torch.arange(1, 5)[None, None, :, None]
    torch.testing.assert_close(bias, expected.float().expand(8, 3, 4, 2), atol=1e-5, rtol=0)
    bound = math.sqrt(6 / (256 + 256))  # xavier_uniform
    assert m.value_proj.weight.abs().max() <= bound and m.value_proj.weight.std() > bound / 3


def _module_inputs(m, N=2, shapes=((6, 5), (3, 3), (1, 2)), Lq=7, ref_dim=2):
    spatial_shapes = torch.tensor(shapes)
    level_start_index = torch.cat(
        [spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]]
    )
    S = int(spatial_shapes.prod(1).sum())
    query = torch.randn(N, Lq, m.d_model)
    ref = torch.rand(N, Lq, len(shapes), ref_dim)
    return query, ref, torch.randn(N, S, m.d_model), spatial_shapes, level_start_index


def _random_module(dtype=torch.float64):
    m = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2).to(dtype)
    with torch.no_grad():  # non-trivial offsets and weights
        for p in (m.sampling_offsets.weight, m.attention_weights.weight, m.attention_weights.bias):
            p.normal_(0, 0.5)
    return m


def _expected(m, query, ref, src, shapes, padding_mask=None):
    """The module's output recomputed in float64 from its parameters (M = 4, L = 3, P = 2): the
    padded values read as zero, offsets in pixels of each level (or relative to half the box size,
    divided by P), softmax over the 6 (level, point) samples, the float64 loop reference."""
    with torch.no_grad():
        m = copy.deepcopy(m).double()
        query, ref, src = query.double(), ref.double(), src.double()
        N, Lq, _ = query.shape
        value = m.value_proj(src)
        if padding_mask is not None:
            value = torch.where(padding_mask[..., None], 0.0, value)
        value = value.view(N, -1, 4, 4)
        offsets = m.sampling_offsets(query).view(N, Lq, 4, 3, 2, 2)
        weights = m.attention_weights(query).view(N, Lq, 4, 6).softmax(-1).view(N, Lq, 4, 3, 2)
        if ref.shape[-1] == 2:
            wh = shapes.flip(-1)[None, None, None, :, None, :]
            loc = ref[:, :, None, :, None, :] + offsets / wh
        else:
            loc = ref[:, :, None, :, None, :2] + offsets / 2 * ref[:, :, None, :, None, 2:] * 0.5
        return m.output_proj(reference_ms_deform_attn(value, shapes, loc, weights))


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_matches_reference(ref_dim):
    m = _random_module()
    query, ref, src, shapes, lsi = (
        t.double() if t.is_floating_point() else t for t in _module_inputs(m, ref_dim=ref_dim)
    )
    out = m(query, ref, src, shapes, lsi)
    torch.testing.assert_close(out, _expected(m, query, ref, src, shapes))


def test_module_float32_locations_are_accurate(backend):
    """float32 inputs: within 1e-4 of the float64 reference (locations computed in bf16, as under
    an enabled autocast, would be off by ~1e-2)."""
    torch.manual_seed(0)
    m = _random_module(torch.float32).to(backend)
    query, ref, src, shapes, lsi = (t.to(backend) for t in _module_inputs(m))
    out = m(query, ref, src, shapes, lsi)
    assert out.dtype == torch.float32
    expected = _expected(m.cpu(), query.cpu(), ref.cpu(), src.cpu(), shapes.cpu())
    torch.testing.assert_close(out.double().cpu(), expected, atol=1e-4, rtol=1e-4)


def test_module_padding_reads_zero():
    """Padded positions of the value map read as zero (not as any other constant)."""
    m = _random_module()
    query, ref, src, shapes, lsi = (
        t.double() if t.is_floating_point() else t for t in _module_inputs(m)
    )
    ref = ref * 1.2 - 0.1  # some samples partly outside the map: zero there too
    mask = torch.rand(src.shape[:2]) < 0.3
    out = m(query, ref, src, shapes, lsi, mask)
    torch.testing.assert_close(out, _expected(m, query, ref, src, shapes, mask))


def test_module_padding_mask_hides_values():
    m = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2)
    query, ref, src, shapes, lsi = _module_inputs(m)
    mask = torch.rand(src.shape[:2]) < 0.3
    out = m(query, ref, src, shapes, lsi, mask)
    changed = src + 100 * mask[..., None]
    torch.testing.assert_close(m(query, ref, changed, shapes, lsi, mask), out)


def test_module_rejects_bad_reference_points():
    m = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2)
    query, ref, src, shapes, lsi = _module_inputs(m, ref_dim=3)
    message = (
        r"^reference_points must end in 2 \(x, y\) or 4 \(cx, cy, w, h\) coordinates, got "
        r"shape \(2, 7, 3, 3\)$"
    )
    with pytest.raises(ValueError, match=message):
        m(query, ref, src, shapes, lsi)


def test_module_defaults_are_deformable_detrs():
    """d_model 256, 4 levels, 8 heads, 4 points (Deformable DETR, Mask2Former's encoder)."""
    m = MSDeformAttn()
    assert (m.d_model, m.n_levels, m.n_heads, m.n_points) == (256, 4, 8, 4)
    assert m.sampling_offsets.out_features == 8 * 4 * 4 * 2
    assert m.attention_weights.out_features == 8 * 4 * 4


def test_module_rejects_d_model_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"^d_model \(30\) must be divisible by n_heads \(8\)$"):
        MSDeformAttn(d_model=30, n_heads=8)


def test_module_backward_reaches_every_parameter(backend):
    m = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2).to(backend)
    query, ref, src, shapes, lsi = (t.to(backend) for t in _module_inputs(m))
    m(query, ref, src, shapes, lsi).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
