"""MSDeformAttn forward and forward+backward, per backend and dtype, at the R50 COCO training shape.

Shape (the MSDeformAttn issue's benchmark shape): batch 2, 1024x1024 input -> levels 128^2, 64^2,
32^2 of the stride-8/16/32 maps, queries = all 21,504 positions (the pixel decoder's encoder),
8 heads x 32 channels, 4 points. `tools/benchmark_msdeformattn.py` is that issue's stand-alone
tool; this module calls the same public op (`ms_deform_attn`, backend forced through
MASK2FORMER_MSDA_BACKEND) so its rows land in the harness's tables with the other numbers.
"""

from __future__ import annotations

import contextlib
import os

import torch

from .common import DTYPES, PeakMemory, time_fn

SHAPES = {
    "full": dict(N=2, levels=[(128, 128), (64, 64), (32, 32)], M=8, D=32, P=4),
    "small": dict(N=1, levels=[(16, 16), (8, 8), (4, 4)], M=8, D=32, P=4),
}


def shape_label(s: dict) -> str:
    lv = ",".join(f"{h}x{w}" for h, w in s["levels"])
    return f"N{s['N']} L[{lv}] Lq=S M{s['M']} D{s['D']} P{s['P']}"


def make_inputs(s: dict, device: str, dtype: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    N, M, D, P = s["N"], s["M"], s["D"], s["P"]
    L = len(s["levels"])
    shapes = torch.tensor(s["levels"], dtype=torch.long)
    areas = shapes.prod(1)
    start = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    S = int(areas.sum())
    value = torch.randn(N, S, M, D, generator=g)
    loc = torch.rand(N, S, M, L, P, 2, generator=g) * 1.2 - 0.1  # some samples outside the map
    attw = torch.rand(N, S, M, L * P, generator=g).softmax(-1).view(N, S, M, L, P)
    dt = DTYPES[dtype]
    return (
        value.to(device, dt),
        shapes.to(device),
        start.to(device),
        loc.to(device, dt),
        attw.to(device, dt),
    )


@contextlib.contextmanager
def forced_backend(name: str):
    from mask2former.modeling.pixel_decoder.ops import BACKEND_ENV_VAR

    old = os.environ.get(BACKEND_ENV_VAR)
    os.environ[BACKEND_ENV_VAR] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(BACKEND_ENV_VAR, None)
        else:
            os.environ[BACKEND_ENV_VAR] = old


def backends_for(device: str) -> list[str]:
    return ["cuda", "pytorch"] if device.startswith("cuda") else ["cpp", "pytorch"]


def bench(
    backend: str,
    s: dict,
    device: str,
    dtype: str,
    warmup: int,
    iters: int,
    row: dict,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fill fwd/fwd+bwd medians, peak memory of fwd+bwd and the error against `reference`."""
    from mask2former.modeling.pixel_decoder.ops import ms_deform_attn

    value, shapes, start, loc, attw = make_inputs(s, device, dtype)
    with forced_backend(backend):
        with torch.no_grad():
            out = ms_deform_attn(value, shapes, start, loc, attw)
            t_f = time_fn(
                lambda _: ms_deform_attn(value, shapes, start, loc, attw), device, warmup, iters
            )
        leaves = [t.detach().requires_grad_(True) for t in (value, loc, attw)]
        grad = torch.randn_like(out)

        def fwd_bwd(_):
            o = ms_deform_attn(leaves[0], shapes, start, leaves[1], leaves[2])
            o.backward(grad)
            for t in leaves:
                t.grad = None

        with PeakMemory(device) as mem:
            t_fb = time_fn(fwd_bwd, device, warmup, iters)
    row.update(
        fwd_ms=t_f.median,
        fwdbwd_ms=t_fb.median,
        spread=t_fb.spread,
        peak_mib=mem.growth_gib * 1024,
        n=iters,
    )
    if reference is not None:
        ref = reference.float()
        row["rel_err"] = float((out.float() - ref).norm() / ref.norm())
    return out.detach()
