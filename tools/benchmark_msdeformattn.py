#!/usr/bin/env python
"""Benchmark the MSDeformAttn backends: forward and forward+backward time and peak memory.

The default shape is the R50 COCO pixel decoder: batch 2, a 1024x1024 input gives levels 128^2,
64^2, 32^2 (strides 8, 16, 32), every position is a query (21,504), 8 heads x 32 channels,
4 points. Every backend available on the device runs; the table gives the speed-up over the
grid_sample (pytorch) path.

    python tools/benchmark_msdeformattn.py                      # CPU, 2 threads
    python tools/benchmark_msdeformattn.py --device cuda --dtype bfloat16
    python tools/benchmark_msdeformattn.py --levels 32 16 8 --batch 1   # a quick run

Peak memory is what the call allocates beyond its inputs: torch.cuda.max_memory_allocated on a
GPU; on the CPU the growth of the resident set (VmHWM after resetting it through
/proc/self/clear_refs, Linux only; memory the allocator kept from earlier calls is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mask2former.modeling.pixel_decoder.ops import backends, ms_deform_attn


def make_inputs(args, device):
    shapes = torch.tensor([[s, s] for s in args.levels], dtype=torch.int64, device=device)
    starts = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    S, L = int(shapes.prod(1).sum()), len(args.levels)
    Lq = args.queries or S
    N, M, D, P = args.batch, args.heads, args.channels, args.points
    g = torch.Generator(device=device).manual_seed(0)
    value = torch.randn(N, S, M, D, device=device, generator=g).to(args.dtype)
    loc = torch.rand(N, Lq, M, L, P, 2, device=device, generator=g)
    attn = torch.rand(N, Lq, M, L * P, device=device, generator=g).softmax(-1).view(N, Lq, M, L, P)
    grad = torch.randn(N, Lq, M * D, device=device, generator=g).to(args.dtype)
    return value, shapes, starts, loc, attn, grad


class PeakMemory:
    """Peak bytes allocated inside the `with` block beyond what was in use when it started."""

    def __init__(self, device: str):
        self.device, self.peak = device, float("nan")

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        elif Path("/proc/self/clear_refs").exists():
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.base = _proc_status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        elif Path("/proc/self/clear_refs").exists():
            self.peak = _proc_status("VmHWM") - self.base


def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def run_once(inputs, backward: bool, device: str):
    value, shapes, starts, loc, attn, grad = inputs
    if backward:
        value, loc, attn = (t.detach().requires_grad_(True) for t in (value, loc, attn))
    with torch.set_grad_enabled(backward):
        out = ms_deform_attn(value, shapes, starts, loc, attn)
        if backward:
            out.backward(grad)
    if device == "cuda":
        torch.cuda.synchronize()
    return out.detach()


def measure(inputs, backward: bool, args):
    run_once(inputs, backward, args.device)  # warm-up (and, first time, extension loading)
    with PeakMemory(args.device) as mem:
        run_once(inputs, backward, args.device)
    wall, cpu = [], []
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        run_once(inputs, backward, args.device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), mem.peak


def available_backends(device: str) -> list[str]:
    names = ["pytorch"]
    for name in ("cpp",) if device == "cpu" else ("cuda",):
        os.environ[backends.ENV_VAR] = name
        try:
            backends.select_backend(device)  # loads, or compiles, the extension once
            names.append(name)
        except Exception as e:  # noqa: BLE001
            reason = (str(e).strip().splitlines() or [""])[-1]
            print(f"# {name}: unavailable ({type(e).__name__}: {reason})")
    return names


def bench_backend(name: str, args) -> dict:
    """Time one backend, then compare its output with the pytorch backend's (after measuring, so
    the reference does not count against its memory)."""
    inputs = make_inputs(args, args.device)
    os.environ[backends.ENV_VAR] = name
    fwd, fwd_bwd = measure(inputs, False, args), measure(inputs, True, args)
    out = run_once(inputs, False, args.device).float()
    os.environ[backends.ENV_VAR] = "pytorch"
    diff = (out - run_once(inputs, False, args.device).float()).abs().max().item()
    return dict(fwd=fwd, fwd_bwd=fwd_bwd, diff=diff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--levels", type=int, nargs="+", default=[128, 64, 32], help="square level sizes"
    )
    parser.add_argument(
        "--queries", type=int, default=0, help="queries per image (0: all positions)"
    )
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--channels", type=int, default=32, help="channels per head")
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16", "float64"],
        help="value dtype (locations and weights stay float32, as under autocast)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--backends", nargs="+", help="subset to run (default: all available)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one backend, JSON out
    args = parser.parse_args()
    dtype_name, args.dtype = args.dtype, getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(bench_backend(args.child, args)))
        return

    S = sum(s * s for s in args.levels)
    device_name = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"{args.threads} threads"
    )
    print(
        f"# device={args.device} ({device_name}) dtype={dtype_name} N={args.batch} "
        f"levels={args.levels} S={S} Lq={args.queries or S} M={args.heads} D={args.channels} "
        f"P={args.points} torch={torch.__version__}"
    )
    results = {}
    for name in args.backends or available_backends(args.device):
        # A fresh process per backend: memory one backend's allocator kept does not hide another's.
        proc = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--child", name],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            print(f"# {name}: failed\n{proc.stderr[-3000:]}")
            continue
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])

    base = results.get("pytorch")
    # Wall time is what a user waits; process CPU time (all threads) is robust to other load on
    # the machine, which inflates wall times on shared CPUs.
    print(
        "| backend | fwd ms | fwd+bwd ms | fwd CPU-time ms | fwd+bwd CPU-time ms | fwd peak MiB "
        "| fwd+bwd peak MiB | speed-up fwd | speed-up fwd+bwd | max abs diff vs pytorch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        (t_f, c_f, m_f), (t_b, c_b, m_b) = r["fwd"], r["fwd_bwd"]
        speed_f = f"{base['fwd'][0] / t_f:.1f}x" if base else "-"
        speed_b = f"{base['fwd_bwd'][0] / t_b:.1f}x" if base else "-"
        print(
            f"| {name} | {1e3 * t_f:.1f} | {1e3 * t_b:.1f} | {1e3 * c_f:.0f} | {1e3 * c_b:.0f} "
            f"| {max(0.0, m_f) / 2**20:.0f} | {max(0.0, m_b) / 2**20:.0f} | {speed_f} | {speed_b} "
            f"| {r['diff']:.2e} |"
        )


if __name__ == "__main__":
    main()
