"""MSDeformAttn kernels: every backend against an independent float64 reference, gradients, half
precision (mask2former/modeling/pixel_decoder/ops/functional.py)."""

import re

import pytest
import torch

from mask2former.modeling.pixel_decoder.ops import backends, ms_deform_attn
from mask2former.modeling.pixel_decoder.ops.functional import ms_deform_attn_pytorch

from .reference import HAS_CUDA, HAS_CXX, make_inputs, reference_ms_deform_attn

SHAPES = [  # (N, level shapes, Lq, M, D, P)
    (1, [(4, 4)], 5, 1, 3, 1),
    (2, [(6, 4), (3, 5), (1, 1)], 7, 2, 4, 3),  # non-square and 1x1 levels
    (2, [(1, 1), (1, 1)], 3, 2, 2, 2),
    (1, [(5, 7), (3, 2)], 4, 3, 33, 2),  # D > 32: the CUDA kernel's channel loop
]


@pytest.mark.parametrize("N,shapes,Lq,M,D,P", SHAPES)
def test_matches_reference(backend, N, shapes, Lq, M, D, P):
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(
        N, shapes, Lq, M, D, P, device=backend
    )
    out = ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)
    expected = reference_ms_deform_attn(value, spatial_shapes, loc, attn)
    assert out.shape == (N, Lq, M * D) and out.dtype == torch.float64
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-12)


def test_reference_hand_values():
    # 1x2 map [1, 3]; x = 0.5 is the border between the pixels, x = 0.25 the centre of the first;
    # x = 0 lies half a pixel left of that centre: half of pixel 0, half of the zero padding.
    value = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    loc = torch.tensor([[0.5, 0.5], [0.25, 0.5], [0.0, 0.5], [0.5, -0.5]]).view(1, 4, 1, 1, 1, 2)
    attn = torch.ones(1, 4, 1, 1, 1)
    out = reference_ms_deform_attn(value, torch.tensor([[1, 2]]), loc, attn)
    assert out.flatten().tolist() == [2.0, 1.0, 0.5, 0.0]


def test_float32_matches_reference(backend):
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(
        2, [(8, 6), (4, 3), (1, 1)], 10, 2, 8, 4, dtype=torch.float32, device=backend
    )
    out = ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)
    expected = reference_ms_deform_attn(value, spatial_shapes, loc, attn)
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-5, atol=1e-6)


def test_gradcheck(backend):
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(
        1, [(3, 4), (2, 1), (1, 1)], 3, 2, 2, 2, device=backend
    )
    for t in (value, loc, attn):
        t.requires_grad_(True)

    def fn(value, loc, attn):
        return ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)

    # nondet_tol: the CUDA backward sums grad_value with atomics, in no fixed order
    assert torch.autograd.gradcheck(
        fn, (value, loc, attn), eps=1e-6, atol=1e-5, rtol=1e-4, nondet_tol=1e-12
    )


def test_gradients_agree_with_pytorch(backend, monkeypatch):
    """Gradients at a larger shape than gradcheck affords, against the grid_sample path."""
    inputs = make_inputs(
        2, [(9, 7), (5, 4), (2, 3)], 20, 4, 8, 4, dtype=torch.float64, device=backend
    )
    grad_out = torch.randn(2, 20, 32, dtype=torch.float64, device=backend)

    def grads():
        value, spatial_shapes, level_start_index, loc, attn = (t.detach().clone() for t in inputs)
        for t in (value, loc, attn):
            t.requires_grad_(True)
        out = ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)
        return torch.autograd.grad(out, (value, loc, attn), grad_out)

    got = grads()
    monkeypatch.setenv(backends.ENV_VAR, "pytorch")
    for g, e in zip(got, grads(), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11)


def test_empty_queries(backend):
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(
        2, [(4, 3)], 0, 2, 4, 2, device=backend
    )
    value.requires_grad_(True)
    out = ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)
    assert out.shape == (2, 0, 8)
    out.sum().backward()
    assert torch.equal(value.grad, torch.zeros_like(value))


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpp_half_precision(monkeypatch, fresh_selection, dtype):
    monkeypatch.setenv(backends.ENV_VAR, "cpp")
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(
        2, [(6, 5), (3, 2)], 6, 2, 8, 2, dtype=torch.float32
    )
    out = ms_deform_attn(value.to(dtype), spatial_shapes, level_start_index, loc, attn)
    assert out.dtype == dtype
    expected = reference_ms_deform_attn(value.to(dtype), spatial_shapes, loc, attn)
    torch.testing.assert_close(out.double(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision(monkeypatch, fresh_selection, dtype):
    """Half-precision values (locations and weights in float32, as under autocast) stay within
    1e-2 relative error of float32, forward and backward."""
    monkeypatch.setenv(backends.ENV_VAR, "cuda")
    inputs = make_inputs(
        2, [(32, 32), (16, 16), (8, 8)], 500, 8, 32, 4, dtype=torch.float32, device="cuda"
    )

    def run(value_dtype):
        value, spatial_shapes, level_start_index, loc, attn = (t.detach().clone() for t in inputs)
        value = value.to(value_dtype).requires_grad_(True)
        loc.requires_grad_(True)
        attn.requires_grad_(True)
        out = ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)
        out.float().square().sum().backward()
        return out.float(), value.grad.float(), loc.grad, attn.grad

    for got, expected in zip(run(dtype), run(torch.float32), strict=True):
        rel = (got - expected).norm() / expected.norm()
        assert rel < 1e-2, rel


def test_shapes_given_as_ints_give_the_same_result(backend):
    """`shapes=` (the levels as Python ints) is what the grid_sample path then reads."""
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(
        2, [(3, 4), (2, 5)], 4, 2, 3, 2, device=backend
    )
    out = ms_deform_attn(
        value, spatial_shapes, level_start_index, loc, attn, shapes=[(3, 4), (2, 5)]
    )
    expected = reference_ms_deform_attn(value, spatial_shapes, loc, attn)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-12)
    out = ms_deform_attn_pytorch(value, [(3, 4), (2, 5)], loc, attn)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-12)


def test_locations_and_weights_keep_their_dtype_and_precision(backend):
    """float32 values with float64 locations: the op computes in float64 (no rounding of the
    locations), returns float32; gradients come back in each input's own dtype."""
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(
        1, [(5, 4), (2, 3)], 6, 2, 3, 2, device=backend
    )
    value32 = value.float().requires_grad_(True)
    loc.requires_grad_(True)
    attn32 = attn.float().requires_grad_(True)
    out = ms_deform_attn(value32, spatial_shapes, level_start_index, loc, attn32)
    assert out.dtype == torch.float32
    expected = reference_ms_deform_attn(value32.detach(), spatial_shapes, loc.detach(), attn32)
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-6, atol=1e-6)
    out.sum().backward()
    assert value32.grad.dtype == attn32.grad.dtype == torch.float32
    assert loc.grad.dtype == torch.float64


def _bad(**changes):
    args = dict(
        zip(
            ("value", "spatial_shapes", "level_start_index", "loc", "attn"),
            make_inputs(2, [(3, 2), (1, 2)], 4, 2, 3, 2),
        )
    )
    args.update(changes)
    shapes = args.pop("shapes", None)
    return ms_deform_attn(*args.values(), shapes=shapes)


def test_inconsistent_shapes_are_rejected_with_the_shapes_named():
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(
        2, [(3, 2), (1, 2)], 4, 2, 3, 2
    )
    with pytest.raises(ValueError, match=r"^value must be \(N, S, M, D\), got \(2, 8, 6\)"):
        _bad(value=value.flatten(2))
    with pytest.raises(ValueError, match=r"^sampling_locations must be .*got \(2, 4, 2, 2, 2\)$"):
        _bad(loc=loc[..., 0])
    with pytest.raises(ValueError, match=r"^sampling_locations must be .*got \(2, 4, 2, 2, 2, 3\)"):
        _bad(loc=torch.cat([loc, loc[..., :1]], -1))
    for name, bad in (
        ("loc", loc[:1]),  # N
        ("loc", loc[:, :, :1]),  # M
        ("loc", loc[:, :, :, :1]),  # L
        ("attn", attn[..., :1]),  # P
        ("attn", attn[:, :3]),  # Lq
    ):
        with pytest.raises(
            ValueError, match=r"^inconsistent shapes: value \(N, S, M, D\) = \(2, 8"
        ):
            _bad(**{name: bad})
    with pytest.raises(ValueError, match=r"^level_start_index must be \(2,\), got \(3,\)"):
        _bad(level_start_index=torch.tensor([0, 6, 8]))
    with pytest.raises(ValueError, match=r"^shapes has 1 levels, spatial_shapes 2"):
        _bad(shapes=[(3, 2)])
    with pytest.raises(
        ValueError, match=r"^value has S=8 positions but shapes \[\(3, 2\), \(1, 3\)\] sum to 9"
    ):
        _bad(shapes=[(3, 2), (1, 3)])
    with pytest.raises(
        ValueError,
        match=r"^value has S=8 positions but spatial_shapes \[\[3, 2\], \[1, 3\]\] sum to 9",
    ):
        _bad(spatial_shapes=torch.tensor([[3, 2], [1, 3]]))
    # The right shapes pass (and `shapes=` matching S is accepted).
    assert _bad(shapes=[(3, 2), (1, 2)]).shape == (2, 4, 6)


def test_the_chosen_backend_is_the_one_that_runs(backend, monkeypatch):
    """A compiled backend, once chosen, computes the result (its autograd Function shows in the
    graph); the pytorch backend is grid_sample's graph. Under torch.export the grid_sample path
    always runs."""
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(
        1, [(3, 2)], 2, 1, 2, 1, device=backend
    )
    value.requires_grad_(True)
    out = ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)
    compiled = backends.select_backend(value.device.type).ext is not None
    assert (type(out.grad_fn).__name__ == "MSDeformAttnFunctionBackward") == compiled
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    out = ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)
    assert type(out.grad_fn).__name__ != "MSDeformAttnFunctionBackward"


def test_inconsistent_shapes_message_names_every_shape():
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(
        2, [(3, 2), (1, 2)], 4, 2, 3, 2
    )
    message = (
        "inconsistent shapes: value (N, S, M, D) = (2, 8, 2, 3), spatial_shapes (L, 2) = (2, 2), "
        "sampling_locations (N, Lq, M, L, P, 2) = (1, 4, 2, 2, 2, 2), "
        "attention_weights (N, Lq, M, L, P) = (2, 4, 2, 2, 2)"
    )
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        _bad(loc=loc[:1])


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler")
def test_compiled_backend_refuses_double_backward(monkeypatch, fresh_selection):
    """The compiled kernels' gradients are not differentiable: a double backward (e.g. a gradient
    penalty) raises instead of silently treating them as constants."""
    monkeypatch.setenv(backends.ENV_VAR, "cpp")
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(1, [(3, 2)], 2, 1, 2, 1)
    for t in (value, loc, attn):
        t.requires_grad_(True)
    out = ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)
    (grad_loc,) = torch.autograd.grad(out.square().sum(), (loc,), create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_loc.sum().backward()
