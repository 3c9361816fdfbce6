"""MSDeformAttn: every backend against an independent float64 reference, gradients, the module's
parameters and initialisation, and backend selection by MASK2FORMER_MSDA_BACKEND."""

import itertools
import logging
import math
import shutil

import pytest
import torch

from mask2former.modeling.pixel_decoder.ops import MSDeformAttn, backends, build, ms_deform_attn

HAS_CUDA = torch.cuda.is_available()
HAS_CXX = shutil.which("c++") is not None or shutil.which("g++") is not None


def reference_ms_deform_attn(value, spatial_shapes, sampling_locations, attention_weights):
    """Explicit bilinear sampling loops in float64: pixel (i, j) has its centre at ((j + 0.5) / W,
    (i + 0.5) / H) in normalised (x, y) (grid_sample, align_corners=False); outside reads zero."""
    value = value.double().cpu()
    N, _, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    loc = sampling_locations.double().cpu().tolist()
    attn = attention_weights.double().cpu().tolist()
    shapes = spatial_shapes.tolist()
    starts = [sum(h * w for h, w in shapes[:lvl]) for lvl in range(L)]
    out = torch.zeros(N, Lq, M, D, dtype=torch.float64)
    for n, q, m, lvl, p in itertools.product(range(N), range(Lq), range(M), range(L), range(P)):
        H, W = shapes[lvl]
        x, y = loc[n][q][m][lvl][p]
        px, py = x * W - 0.5, y * H - 0.5  # pixel coordinates, centres at integers
        x0, y0 = math.floor(px), math.floor(py)
        for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
            for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                if 0 <= yy < H and 0 <= xx < W:
                    pixel = value[n, starts[lvl] + yy * W + xx, m]
                    out[n, q, m] += attn[n][q][m][lvl][p] * wy * wx * pixel
    return out.view(N, Lq, M * D)


def make_inputs(N, shapes, Lq, M, D, P, dtype=torch.float64, device="cpu", margin=0.25):
    """Random inputs; locations spread `margin` beyond [0, 1] on each side."""
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64, device=device)
    level_start_index = torch.cat(
        [spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]]
    )
    S, L = int(spatial_shapes.prod(1).sum()), len(shapes)
    value = torch.randn(N, S, M, D, dtype=dtype, device=device)
    loc = torch.rand(N, Lq, M, L, P, 2, dtype=dtype, device=device) * (1 + 2 * margin) - margin
    attn = torch.rand(N, Lq, M, L, P, dtype=dtype, device=device) + 0.1
    attn = attn / attn.sum((-2, -1), keepdim=True)
    return value, spatial_shapes, level_start_index, loc, attn


BACKENDS = [
    "pytorch",
    pytest.param("cpp", marks=pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler")),
    pytest.param(
        "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA")]
    ),
]


@pytest.fixture
def fresh_selection():
    backends._select.cache_clear()
    yield
    backends._select.cache_clear()


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch, fresh_selection):
    """Forces one backend through the environment variable; yields the device it runs on."""
    monkeypatch.setenv(backends.ENV_VAR, request.param)
    device = "cuda" if request.param == "cuda" else "cpu"
    assert backends.select_backend(device).name == request.param
    return device


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


# ---- CUDA-only checks ------------------------------------------------------------------------


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


# ---- the module ------------------------------------------------------------------------------


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


# ---- backend selection -----------------------------------------------------------------------


def test_bad_env_value_lists_choices(monkeypatch, fresh_selection):
    monkeypatch.setenv(backends.ENV_VAR, "triton")
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(1, [(2, 2)], 1, 1, 1, 1)
    with pytest.raises(ValueError, match="auto, cuda, cpp, pytorch"):
        ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)


def test_forced_backend_on_wrong_device_errors(monkeypatch, fresh_selection):
    monkeypatch.setenv(backends.ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="cuda tensors"):
        backends.select_backend("cpu")


def test_env_is_case_insensitive_and_forces_pytorch(monkeypatch, fresh_selection):
    monkeypatch.setenv(backends.ENV_VAR, " PyTorch ")
    assert backends.select_backend("cpu") == backends.Backend("pytorch", None)


def test_auto_falls_back_with_one_warning(monkeypatch, fresh_selection, caplog):
    def broken():
        raise RuntimeError("Error building extension\nc++: fatal error: no input files")

    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    monkeypatch.setattr(build, "load_cpu_extension", broken)
    with caplog.at_level(logging.INFO, logger=backends.__name__):
        for _ in range(3):
            assert backends.select_backend("cpu").name == "pytorch"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no input files" in warnings[0].getMessage()
    assert sum("pytorch backend" in r.getMessage() for r in caplog.records) == 1


def test_forced_backend_propagates_build_errors(monkeypatch, fresh_selection):
    def broken():
        raise RuntimeError("Error building extension")

    monkeypatch.setenv(backends.ENV_VAR, "cpp")
    monkeypatch.setattr(build, "load_cpu_extension", broken)
    with pytest.raises(RuntimeError, match="Error building extension"):
        backends.select_backend("cpu")


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler")
def test_auto_picks_the_cpp_kernel_on_cpu(monkeypatch, fresh_selection):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert backends.select_backend("cpu").name == "cpp"
