"""An independent float64 reference of multi-scale deformable attention, and test inputs."""

import itertools
import math
import shutil

import pytest
import torch

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
