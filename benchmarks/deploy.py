#!/usr/bin/env python
"""Latency of the exported model: eager PyTorch vs ONNX Runtime vs the torch.export program.

    python -m benchmarks.deploy [--model R50] [--height 800 --width 1216] [--iters 3]

One synthetic image (benchmarks.models.synthetic_image) at the given padded size, batch 1, fp32,
on the CPU. Two tables: the network alone (normalised image in, pred_logits / pred_masks out) and
end to end (uint8 image in, all three outputs of the config's post-processing out: eager
`MaskFormer` vs `mask2former.deploy.ExportedModel`). Exports go to a temporary directory (or
--keep DIR); export times are reported. Timers: benchmarks.common.time_fn. See docs/deploy.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks import common, models  # noqa: E402
from benchmarks.common import Table  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="R50", help="R50, Swin-L or a config path")
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--width", type=int, default=1216)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--keep", default="", help="write the exported files here (default: a temp dir)")
    p.add_argument("--markdown", default="", help="also write the tables to this file")
    return p.parse_args(argv)


def main(argv=None) -> list[Table]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from mask2former.deploy.export import ExportableMaskFormer, export_model
    from mask2former.deploy.runtime import ExportedModel, onnx_runner, program_runner

    built = models.build(args.model, "cpu")
    model = built.model.eval()
    net = ExportableMaskFormer(model).eval()
    image = models.synthetic_image(args.height, args.width, seed=0)
    x = image.float()[None]  # (1, 3, H, W), already a multiple of the size divisibility
    out_dir = args.keep or tempfile.mkdtemp(prefix="m2f_deploy_")
    shape = f"1x3x{args.height}x{args.width}"
    device = common.device_name("cpu") + f", {args.threads} threads"

    net_table = Table(
        f"Network only ({built.name}, {shape}, fp32, {device})",
        [
            ("runtime", "runtime"),
            ("ms", "median ms"),
            ("spread", "p10-p90"),
            ("speedup", "vs eager"),
            ("export_s", "export s"),
            ("max_diff", "max|diff| vs eager"),
            ("rel_diff", "max|diff| / max|eager|"),
            ("flips", "mask logits of other sign"),
        ],
    )
    e2e_table = Table(
        f"End to end, all outputs + post-processing ({built.name}, {shape}, fp32, {device})",
        [
            ("runtime", "runtime"),
            ("ms", "median ms"),
            ("spread", "p10-p90"),
            ("speedup", "vs eager"),
        ],
    )
    with torch.no_grad():
        reference = net(x)
    runners = {"eager PyTorch (fp32)": (lambda: net(x), None)}
    for fmt, label, load in (
        ("onnx", "ONNX Runtime (CPU EP)", onnx_runner),
        ("torch_export", "torch.export program", program_runner),
    ):
        t0 = time.perf_counter()
        path = export_model(net, fmt, os.path.join(out_dir, fmt), args.height, args.width)
        export_s = time.perf_counter() - t0
        run = load(path)
        runners[label] = ((lambda run=run: run(x)), (export_s, path))

    eager_ms = None
    for label, (fn, export) in runners.items():
        with torch.no_grad():
            timing = common.time_fn(lambda _, fn=fn: fn(), "cpu", args.warmup, args.iters)
            out = fn()
        diff = max(float((a - b).abs().max()) for a, b in zip(reference, out))
        scale = max(float(a.abs().max()) for a in reference)
        # Mask logits whose sign differs: each such pixel changes a binary mask (sigmoid > 0.5).
        flips = int(((reference[1] > 0) != (out[1] > 0)).sum())
        eager_ms = eager_ms or timing.median
        net_table.add(
            {
                "runtime": label,
                "ms": timing.median,
                "spread": timing.spread,
                "speedup": eager_ms / timing.median,
                "export_s": export and export[0],
                "max_diff": diff,
                "rel_diff": diff / max(scale, 1e-30),
                "flips": f"{flips} of {reference[1].numel()}",
            }
        )
        print(net_table.rows[-1], flush=True)

    inputs = [{"image": image}]
    e2e = {"eager PyTorch (fp32)": lambda: model(inputs)}
    for label, (_, export) in runners.items():
        if export is not None:
            exported = ExportedModel(built.cfg, export[1])
            e2e[label] = lambda exported=exported: exported(inputs)
    eager_ms = None
    for label, fn in e2e.items():
        with torch.no_grad():
            timing = common.time_fn(lambda _, fn=fn: fn(), "cpu", args.warmup, args.iters)
        eager_ms = eager_ms or timing.median
        e2e_table.add(
            {
                "runtime": label,
                "ms": timing.median,
                "spread": timing.spread,
                "speedup": eager_ms / timing.median,
            }
        )
        print(e2e_table.rows[-1], flush=True)

    tables = [net_table, e2e_table]
    text = "\n".join(t.render() for t in tables)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return tables


if __name__ == "__main__":
    main()
