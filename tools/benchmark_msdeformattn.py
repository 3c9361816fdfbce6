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
import os
import statistics
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
            backends.select_backend(device)
            names.append(name)
        except Exception as e:  # noqa: BLE001
            reason = (str(e).strip().splitlines() or [""])[-1]
            print(f"# {name}: unavailable ({type(e).__name__}: {reason})")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--levels", type=int, nargs="+", default=[128, 64, 32], help="square level sizes")
    parser.add_argument("--queries", type=int, default=0, help="queries per image (0: all positions)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--channels", type=int, default=32, help="channels per head")
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
    parser.add_argument("--backends", nargs="+", help="subset to run (default: all available)")
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)

    inputs = make_inputs(args, args.device)
    N, S, M, D = inputs[0].shape
    Lq = inputs[3].shape[1]
    print(
        f"# device={args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else f'{args.threads} threads'})"
        f" dtype={str(args.dtype).removeprefix('torch.')} N={N} levels={args.levels} S={S} Lq={Lq}"
        f" M={M} D={D} P={args.points} torch={torch.__version__}"
    )
    names = args.backends or available_backends(args.device)
    results, outputs = {}, {}
    for name in names:
        os.environ[backends.ENV_VAR] = name
        outputs[name] = run_once(inputs, False, args.device).float()
        results[name] = (measure(inputs, False, args), measure(inputs, True, args))

    base = results.get("pytorch")
    # Wall time is what a user waits; process CPU time (all threads) is robust to other load on
    # the machine, which inflates wall times on shared CPUs.
    print(
        "| backend | fwd ms | fwd+bwd ms | fwd CPU-time ms | fwd+bwd CPU-time ms | fwd peak MiB "
        "| fwd+bwd peak MiB | speed-up fwd | speed-up fwd+bwd | max abs diff vs pytorch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (fwd, fwd_bwd) in results.items():
        speed = [f"{b[0] / r[0]:.1f}x" if base else "-" for b, r in zip(base or (None, None), (fwd, fwd_bwd))]
        diff = (outputs[name] - outputs["pytorch"]).abs().max().item() if "pytorch" in outputs else float("nan")
        print(
            f"| {name} | {1e3 * fwd[0]:.1f} | {1e3 * fwd_bwd[0]:.1f} | {1e3 * fwd[1]:.0f} | {1e3 * fwd_bwd[1]:.0f} "
            f"| {max(0.0, fwd[2]) / 2**20:.0f} | {max(0.0, fwd_bwd[2]) / 2**20:.0f} | {speed[0]} | {speed[1]} | {diff:.2e} |"
        )


if __name__ == "__main__":
    main()
