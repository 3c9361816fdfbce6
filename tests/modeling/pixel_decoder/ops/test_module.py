"""The MSDeformAttn module: parameters, initialisation, padding mask, reference points, gradients
(mask2former/modeling/pixel_decoder/ops/module.py)."""

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


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_matches_reference(ref_dim):
    m = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2).double()
    with torch.no_grad():  # non-trivial offsets and weights
        for p in (m.sampling_offsets.weight, m.attention_weights.weight, m.attention_weights.bias):
            p.normal_(0, 0.5)
    query, ref, src, shapes, lsi = (
        t.double() if t.is_floating_point() else t for t in _module_inputs(m, ref_dim=ref_dim)
    )
    out = m(query, ref, src, shapes, lsi)

    N, Lq, _ = query.shape
    value = m.value_proj(src).view(N, -1, 4, 4)
    offsets = m.sampling_offsets(query).view(N, Lq, 4, 3, 2, 2)
    weights = m.attention_weights(query).view(N, Lq, 4, 6).softmax(-1).view(N, Lq, 4, 3, 2)
    if ref_dim == 2:
        loc = ref[:, :, None, :, None, :] + offsets / shapes.flip(-1)[None, None, None, :, None, :]
    else:
        loc = ref[:, :, None, :, None, :2] + offsets / 2 * ref[:, :, None, :, None, 2:] * 0.5
    expected = m.output_proj(reference_ms_deform_attn(value, shapes, loc, weights))
    torch.testing.assert_close(out, expected)


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
    with pytest.raises(ValueError, match="reference_points"):
        m(query, ref, src, shapes, lsi)


def test_module_backward_reaches_every_parameter(backend):
    m = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2).to(backend)
    query, ref, src, shapes, lsi = (t.to(backend) for t in _module_inputs(m))
    m(query, ref, src, shapes, lsi).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
