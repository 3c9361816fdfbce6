#!/usr/bin/env python
"""Peak memory of `Predictor` on large images, against its estimate (mask2former/predictor.py).

Each case runs in a fresh process (peak resident memory from `getrusage`), on random weights:

    .venv/bin/python tools/benchmark_predictor_memory.py [--config-file F] [--sizes 1000 2000 4000]
        [--max-size-case 8000:2048]

Prints a Markdown table: image side, max_size, estimated output bytes, peak RSS (process), the
peak above the process's baseline after building the model, and seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(config: str, side: int, max_size: int | None) -> None:
    import numpy as np

    from mask2former.predictor import Predictor, estimate_output_bytes

    p = Predictor.from_config(config, weights="", device="cpu", max_size=max_size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    image = np.zeros((side, side, 3), np.uint8)
    start = time.perf_counter()
    out = p(image)
    seconds = time.perf_counter() - start
    h, w = out["sem_seg"].shape[-2:] if "sem_seg" in out else out["panoptic_seg"][0].shape
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "side": side,
                "max_size": max_size,
                "output": f"{w}x{h}",
                "estimate": estimate_output_bytes(p.model, h, w),
                "base": base,
                "peak": peak,
                "seconds": seconds,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", default=os.path.join(REPO, "configs/demo/panoptic.yaml"))
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    p.add_argument("--max-size-case", default="8000:2048", help="SIDE:MAX_SIZE, or '' for none")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        side, max_size = int(args.child[0]), int(args.child[1]) or None
        return _child(args.config_file, side, max_size)
    cases = [(s, 0) for s in args.sizes]
    if args.max_size_case:
        side, max_size = args.max_size_case.split(":")
        cases.append((int(side), int(max_size)))
    gib = 2**30
    print("| image | max_size | outputs | estimate | peak RSS | peak - model | seconds |")
    print("|---|---|---|---:|---:|---:|---:|")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for side, max_size in cases:
        cmd = [sys.executable, __file__, "--config-file", args.config_file]
        res = subprocess.run(
            cmd + ["--child", str(side), str(max_size)], capture_output=True, text=True, env=env
        )
        if res.returncode != 0:
            print(f"| {side}² | {max_size or '-'} | failed: {res.stderr.strip()[-200:]} |")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"| {side}² | {max_size or '-'} | {r['output']} | {r['estimate'] / gib:.2f} GiB | "
            f"{r['peak'] / gib:.2f} GiB | {(r['peak'] - r['base']) / gib:.2f} GiB | "
            f"{r['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
