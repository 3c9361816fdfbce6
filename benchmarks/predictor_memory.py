#!/usr/bin/env python
"""Peak memory of `Predictor` on large images, against its estimate (mask2former/predictor.py).

Each case runs in a fresh process (benchmarks.common.run_child; memory: benchmarks.common.
PeakMemory over the prediction), on random weights and a synthetic image
(benchmarks.models.synthetic_image):

    .venv/bin/python -m benchmarks.predictor_memory [--config-file F] [--sizes 1000 2000 4000]
        [--max-size-case 8000:2048]

Prints a Markdown table: image side, max_size, estimated output bytes, peak RSS (process), the
peak above the process after building the model, and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PeakMemory, run_child, time_fn  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(config: str, side: int, max_size: int | None) -> dict:
    from benchmarks.models import synthetic_image
    from mask2former.predictor import Predictor, estimate_output_bytes

    p = Predictor.from_config(config, weights="", device="cpu", max_size=max_size)
    image = synthetic_image(side, side, seed=0).permute(1, 2, 0).numpy()  # (H, W, 3) uint8
    done = {}
    with PeakMemory("cpu") as mem:
        t = time_fn(lambda _: done.update(out=p(image)), "cpu", 0, 1)
    out = done["out"]
    h, w = out["sem_seg"].shape[-2:] if "sem_seg" in out else out["panoptic_seg"][0].shape
    return {
        "side": side,
        "max_size": max_size,
        "output": f"{w}x{h}",
        "estimate": estimate_output_bytes(p.model, h, w),
        "base": mem.static,
        "peak": mem.peak,
        "seconds": t.median / 1e3,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--config-file", default=os.path.join(REPO, "configs/demo/panoptic.yaml"))
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    p.add_argument("--max-size-case", default="8000:2048", help="SIDE:MAX_SIZE, or '' for none")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        side, max_size = int(args.child[0]), int(args.child[1]) or None
        print(json.dumps(_child(args.config_file, side, max_size)))
        return
    cases = [(s, 0) for s in args.sizes]
    if args.max_size_case:
        side, max_size = args.max_size_case.split(":")
        cases.append((int(side), int(max_size)))
    gib = 2**30
    print("| image | max_size | outputs | estimate | peak RSS | peak - model | seconds |")
    print("|---|---|---|---:|---:|---:|---:|")
    for side, max_size in cases:
        argv = ["--config-file", args.config_file, "--child", str(side), str(max_size)]
        try:
            r = run_child("predictor_memory", argv)
        except RuntimeError as e:
            print(f"| {side}² | {max_size or '-'} | failed: {str(e).strip()[-200:]} |")
            continue
        print(
            f"| {side}² | {max_size or '-'} | {r['output']} | {r['estimate'] / gib:.2f} GiB | "
            f"{r['peak'] / gib:.2f} GiB | {(r['peak'] - r['base']) / gib:.2f} GiB | "
            f"{r['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
