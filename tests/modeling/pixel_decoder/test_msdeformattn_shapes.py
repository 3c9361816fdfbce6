"""The pixel decoder's export seam: Python (H_l, W_l) next to the spatial-shapes tensor, and
reference points without linspace. Eager results must not change at all (torch.equal)."""

import pytest
import torch

from mask2former.modeling.pixel_decoder.msdeformattn import MSDeformAttnTransformerEncoder
from mask2former.modeling.pixel_decoder.ops import MSDeformAttn, ms_deform_attn, select_backend

SHAPES = [(6, 5), (3, 3), (2, 1)]


def linspace_reference_points(shapes, batch):
    """The published formula: linspace pixel centres, divided by the level size."""
    refs = []
    for h, w in shapes:
        y, x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32),
            indexing="ij",
        )
        refs.append(torch.stack((x.reshape(-1) / w, y.reshape(-1) / h), -1))
    ref = torch.cat(refs, 0)
    return ref[None, :, None].expand(batch, -1, len(shapes), -1)


@pytest.mark.parametrize("shapes", [SHAPES, [(200, 304), (100, 152), (50, 76)], [(1, 1)]])
def test_reference_points_equal_linspace_formula(shapes):
    got = MSDeformAttnTransformerEncoder.get_reference_points(shapes, 2, "cpu")
    assert torch.equal(got, linspace_reference_points(shapes, 2))


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    S = sum(h * w for h, w in SHAPES)
    value = torch.randn(2, S, 4, 8, generator=g)
    loc = torch.rand(2, 7, 4, len(SHAPES), 3, 2, generator=g) * 1.2 - 0.1
    attn = torch.rand(2, 7, 4, len(SHAPES), 3, generator=g).softmax(-1)
    spatial = torch.tensor(SHAPES)
    start = torch.cat((spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]))
    return value, spatial, start, loc, attn


@pytest.mark.parametrize("backend", ["pytorch", "auto"])
def test_python_shapes_give_the_same_result(backend, monkeypatch):
    monkeypatch.setenv("MASK2FORMER_MSDA_BACKEND", backend)
    value, spatial, start, loc, attn = _inputs()
    expected = ms_deform_attn(value, spatial, start, loc, attn)
    got = ms_deform_attn(value, spatial, start, loc, attn, shapes=SHAPES)
    assert torch.equal(got, expected), select_backend("cpu").name


def test_module_with_python_shapes_is_unchanged():
    m = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=3)
    value, spatial, start, _, _ = _inputs()
    S = value.shape[1]
    g = torch.Generator().manual_seed(1)
    query, flat = torch.randn(2, S, 32, generator=g), torch.randn(2, S, 32, generator=g)
    ref = torch.rand(2, S, 3, 2, generator=g)
    expected = m(query, ref, flat, spatial, start)
    assert torch.equal(m(query, ref, flat, spatial, start, input_shapes=SHAPES), expected)


def test_inconsistent_python_shapes_are_an_error():
    value, spatial, start, loc, attn = _inputs()
    with pytest.raises(ValueError, match="positions but shapes"):
        ms_deform_attn(value, spatial, start, loc, attn, shapes=[(6, 5), (3, 3), (2, 2)])
    with pytest.raises(ValueError, match="levels"):
        ms_deform_attn(value, spatial, start, loc, attn, shapes=SHAPES[:2])
