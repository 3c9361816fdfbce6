#!/usr/bin/env python
"""MSDeformAttn backends: forward and forward+backward time and peak memory, error vs pytorch.

    python -m benchmarks.msdeformattn                      # CPU, the R50 COCO training shape
    python -m benchmarks.msdeformattn --device cuda --dtype bfloat16
    python -m benchmarks.msdeformattn --levels 32 16 8 --batch 1   # a quick run

The default shape is the R50 COCO pixel decoder's: batch 2, a 1024x1024 input gives levels 128^2,
64^2, 32^2 (strides 8, 16, 32), every position is a query (21,504), 8 heads x 32 channels,
4 points. Every backend available on the device runs, each in a fresh process (memory one
backend's allocator kept does not hide another's); the table gives the speed-up over the
grid_sample (pytorch) path. Times are wall-clock and process CPU time (all threads; steadier where
other work shares the CPU), medians of `--repeat` after a warm-up; memory is what the call
allocates beyond its inputs (benchmarks.common.PeakMemory). The op is the public `ms_deform_attn`,
its backend forced through MASK2FORMER_MSDA_BACKEND. `benchmarks.run_all` puts the same numbers
(`bench`) into its MSDeformAttn table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DTYPES, PeakMemory, run_child, short_dtype, time_fn  # noqa: E402

SHAPES = {
    "full": dict(N=2, levels=[(128, 128), (64, 64), (32, 32)], M=8, D=32, P=4),
    "small": dict(N=1, levels=[(16, 16), (8, 8), (4, 4)], M=8, D=32, P=4),
}


def shape_label(s: dict) -> str:
    lv = ",".join(f"{h}x{w}" for h, w in s["levels"])
    lq = s.get("Lq") or "S"
    return f"N{s['N']} L[{lv}] Lq={lq} M{s['M']} D{s['D']} P{s['P']}"


def make_inputs(s: dict, device: str, dtype: str, seed: int = 0):
    """(value, shapes, level starts, sampling locations, attention weights) of shape `s`.

    `value` has `dtype`; locations and weights stay float32 (float64 with fp64), as under
    autocast in the pixel decoder. Some locations fall outside the map (zero padding is used).
    """
    g = torch.Generator().manual_seed(seed)
    N, M, D, P = s["N"], s["M"], s["D"], s["P"]
    L = len(s["levels"])
    shapes = torch.tensor(s["levels"], dtype=torch.long)
    areas = shapes.prod(1)
    start = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    S = int(areas.sum())
    Lq = s.get("Lq") or S
    value = torch.randn(N, S, M, D, generator=g)
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g) * 1.2 - 0.1
    attw = torch.rand(N, Lq, M, L * P, generator=g).softmax(-1).view(N, Lq, M, L, P)
    dt = DTYPES[short_dtype(dtype)]
    coord = torch.float64 if dt == torch.float64 else torch.float32
    return (
        value.to(device, dt),
        shapes.to(device),
        start.to(device),
        loc.to(device, coord),
        attw.to(device, coord),
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


def _measure(fn, device: str, warmup: int, iters: int):
    """(Timing, peak MiB beyond the start) of `fn`: one call first (extension loading or
    compilation stays out of both), one call under PeakMemory, then the timed calls."""
    fn(0)
    with PeakMemory(device) as mem:
        fn(0)
    return time_fn(fn, device, max(warmup - 1, 0), iters), mem.growth_gib * 1024


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
    """Fill fwd / fwd+bwd medians (wall and CPU), their peak memory and the error against
    `reference` (relative L2 and max abs); returns the forward output."""
    from mask2former.modeling.pixel_decoder.ops import ms_deform_attn

    value, shapes, start, loc, attw = make_inputs(s, device, dtype)
    with forced_backend(backend):

        def fwd(_):
            with torch.no_grad():
                return ms_deform_attn(value, shapes, start, loc, attw)

        out = fwd(0)
        t_f, mem_f = _measure(fwd, device, warmup, iters)
        leaves = [t.detach().requires_grad_(True) for t in (value, loc, attw)]
        grad = torch.randn_like(out)

        def fwd_bwd(_):
            o = ms_deform_attn(leaves[0], shapes, start, leaves[1], leaves[2])
            o.backward(grad)
            for t in leaves:
                t.grad = None

        t_fb, mem_fb = _measure(fwd_bwd, device, warmup, iters)
    row.update(
        fwd_ms=t_f.median,
        fwdbwd_ms=t_fb.median,
        fwd_cpu_ms=t_f.cpu_median,
        fwdbwd_cpu_ms=t_fb.cpu_median,
        spread=t_fb.spread,
        fwd_peak_mib=mem_f,
        peak_mib=mem_fb,
        n=iters,
    )
    if reference is not None:
        ref = reference.float()
        row["rel_err"] = float((out.float() - ref).norm() / ref.norm())
        row["max_abs_diff"] = float((out.float() - ref).abs().max())
    return out.detach()


def pytorch_reference(s: dict, device: str, dtype: str) -> torch.Tensor:
    """The forward output of the grid_sample backend on the inputs of `make_inputs`."""
    from mask2former.modeling.pixel_decoder.ops import ms_deform_attn

    with forced_backend("pytorch"), torch.no_grad():
        return ms_deform_attn(*make_inputs(s, device, dtype))


# ---- one table per shape (the command line) ------------------------------------------------------


def available_backends(device: str) -> list[str]:
    """pytorch first (the speed-up base), then the compiled backend where it loads or builds."""
    from mask2former.modeling.pixel_decoder.ops import select_backend

    names = ["pytorch"]
    for name in backends_for(device)[:-1]:
        try:
            with forced_backend(name):
                select_backend(device)  # loads, or compiles, the extension once
            names.append(name)
        except Exception as e:  # noqa: BLE001
            reason = (str(e).strip().splitlines() or [""])[-1]
            print(f"# {name}: unavailable ({type(e).__name__}: {reason})")
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument(
        "--levels", type=int, nargs="+", default=[128, 64, 32], help="square level sizes"
    )
    p.add_argument("--queries", type=int, default=0, help="queries per image (0: all positions)")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--channels", type=int, default=32, help="channels per head")
    p.add_argument("--points", type=int, default=4)
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16", "float64"],
        help="value dtype (locations and weights stay float32, as under autocast)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
    p.add_argument("--backends", nargs="+", help="subset to run (default: all available)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one backend, JSON out
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = dict(
        N=args.batch,
        levels=[(n, n) for n in args.levels],
        M=args.heads,
        D=args.channels,
        P=args.points,
        Lq=args.queries,
    )
    if args.child:  # one backend in this process; its row as JSON on the last line
        row: dict = {}
        out = bench(args.child, s, args.device, args.dtype, 1, args.repeat, row)
        # After measuring, so that the reference does not count against the backend's memory.
        ref = pytorch_reference(s, args.device, args.dtype)
        row["max_abs_diff"] = float((out.float() - ref.float()).abs().max())
        print(json.dumps(row))
        return row

    device_name = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    print(
        f"# device={args.device} ({device_name}) dtype={args.dtype} {shape_label(s)} "
        f"S={sum(n * n for n in args.levels)} torch={torch.__version__}"
    )
    results = {}
    for name in args.backends or available_backends(args.device):
        child = ["--child", name, "--device", args.device, "--dtype", args.dtype]
        child += ["--batch", str(args.batch), "--levels", *map(str, args.levels)]
        child += ["--queries", str(args.queries), "--heads", str(args.heads)]
        child += ["--channels", str(args.channels), "--points", str(args.points)]
        child += ["--threads", str(args.threads), "--repeat", str(args.repeat)]
        try:
            results[name] = run_child("msdeformattn", child)
        except RuntimeError as e:
            print(f"# {name}: failed\n{e}")
    base = results.get("pytorch")
    print(
        "| backend | fwd ms | fwd+bwd ms | fwd CPU-time ms | fwd+bwd CPU-time ms | fwd peak MiB "
        "| fwd+bwd peak MiB | speed-up fwd | speed-up fwd+bwd | max abs diff vs pytorch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        speed_f = f"{base['fwd_ms'] / r['fwd_ms']:.1f}x" if base else "-"
        speed_b = f"{base['fwdbwd_ms'] / r['fwdbwd_ms']:.1f}x" if base else "-"
        print(
            f"| {name} | {r['fwd_ms']:.1f} | {r['fwdbwd_ms']:.1f} | {fmt(r['fwd_cpu_ms'])} "
            f"| {fmt(r['fwdbwd_cpu_ms'])} | {r['fwd_peak_mib']:.0f} | {r['peak_mib']:.0f} "
            f"| {speed_f} | {speed_b} | {r['max_abs_diff']:.2e} |"
        )
    return results


def fmt(ms) -> str:
    """CPU time in ms; '-' where none was taken (CUDA: the timer uses events)."""
    return "-" if ms is None or ms != ms else f"{ms:.0f}"


if __name__ == "__main__":
    main()
