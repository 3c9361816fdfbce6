#!/usr/bin/env python
"""Training-step time and peak memory: point-sampled vs full-mask losses (Sec. 3.3, Table 5).

    python -m benchmarks.training [--config-file CFG] [--size 512] [--batch 2] [--iters 3] \
        [--warmup 1] [--modes point full] [--precision fp32 bf16] [--json-out FILE] [KEY VALUE ...]

Builds the model of the config with random weights (MODEL.WEIGHTS is ignored), feeds it one
synthetic batch (benchmarks.models.training_batch: `--masks-per-image` random rectangles and
ellipses with random classes per image) and times the project's own training step. Each
(precision, mode) runs in a fresh process (benchmarks.common.run_child), so that peak memory is
that mode's alone; memory is benchmarks.common.PeakMemory over the warm-up and timed steps (CUDA:
max allocated; CPU: peak RSS) and its growth over what was in use before the first step (the
point-vs-full ratio is computed on the growth: weights are the same). The matcher uses
TRAIN_NUM_POINTS points in both modes; only the final losses differ.

One step is `mask2former.engine.train_loop.MixedPrecisionTrainer.run_step`: forward with
Hungarian matching and the criterion under autocast, the check that every loss term is finite,
backward with a GradScaler for fp16, loss metrics to the event storage, and the project's
optimizer step with full-model gradient clipping.
Without the project (benchmarks.standin) an equivalent loop runs here. `benchmarks.run_all` puts
every row of its matrix (batch x AMP x loss) into one table with `train_iterations`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PeakMemory, autocast, run_child, short_dtype, time_fn  # noqa: E402

PRECISION = {"fp16": "float16", "bf16": "bfloat16", "fp32": None}
DEFAULT_CONFIG = "configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"


def build_optimizer(built):
    """The project's optimizer (AdamW, backbone LR multiplier, no decay on norms/embeddings,
    full-model gradient clipping inside `step()`) when there is a config, else AdamW."""
    if built.cfg is not None:
        from mask2former.engine import Trainer

        return Trainer.build_optimizer(built.cfg, built.model), "project"
    params = [p for p in built.model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05), "AdamW"


def _project_step(built, batch, device: str, amp: str, opt):
    from detectron2.utils.events import EventStorage

    from mask2former.engine.train_loop import MixedPrecisionTrainer

    trainer = MixedPrecisionTrainer(
        built.model, itertools.repeat(batch), opt, PRECISION[amp], torch.device(device).type
    )
    storage = EventStorage(0)

    def step(_):
        with storage:
            trainer.run_step()
        return storage.latest().get("total_loss", (float("nan"),))[0]

    return step


def _plain_step(built, batch, device: str, amp: str, opt, clip: float = 0.01):
    model = built.model
    params = [p for g in opt.param_groups for p in g["params"]]
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=(amp == "fp16"))

    def step(_):
        with autocast(device, amp):
            loss = sum(model(batch).values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    return step


def train_iterations(
    built, batch, device: str, amp: str, warmup: int, iters: int, row: dict
) -> None:
    built.model.train()
    built.model.zero_grad(set_to_none=True)  # nothing left over from an earlier (OOM) row
    opt, opt_name = build_optimizer(built)
    make = _project_step if opt_name == "project" else _plain_step
    step = make(built, batch, device, amp, opt)
    # The memory window includes the warm-up: `static` is then the weights alone, and the peak
    # includes gradients, the optimizer state (allocated on the first step) and activations.
    losses = []
    with PeakMemory(device) as mem:
        for i in range(warmup):
            step(i)
        t = time_fn(lambda i: losses.append(step(i)), device, 0, iters)
    b = len(batch)
    row.update(
        ms=t.median,
        spread=t.spread,
        img_s=1000.0 * b / t.median,
        peak_gib=mem.peak_gib,
        gib_per_img=mem.peak_gib / b,
        act_gib_per_img=mem.growth_gib / b,
        static_gib=mem.static / 2**30,
        optimizer=opt_name + (" step" if opt_name == "project" else ""),
        n=len(t.times_ms),
        final_loss=losses[-1] if losses else float("nan"),
    )


# ---- point vs full, one configuration per process (the command line) -----------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    p.add_argument("--size", type=int, default=512, help="square image size (default 512)")
    p.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    p.add_argument("--masks-per-image", type=int, default=12)
    p.add_argument("--iters", type=int, default=3, help="timed iterations (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (default 1)")
    p.add_argument("--modes", nargs="+", default=["point", "full"], choices=["point", "full"])
    p.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "float16", "bfloat16", "fp16", "bf16"],
        help="one or more (e.g. fp32 bfloat16: s/iteration side by side); on a CPU without native "
        "bf16 the bfloat16 rows are skipped (emulated, many times slower than fp32)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--json-out", default="", help="write the results here as JSON")
    p.add_argument("--_child", default="", help=argparse.SUPPRESS)  # internal: one mode
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def run_mode(args, mode: str) -> dict:
    """Build the model and time `args.iters` training steps with the given loss mode."""
    from benchmarks.models import build, training_batch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    built = build(
        args.config_file, device, opts=args.opts, train=True, point_sampled=mode == "point"
    )
    criterion = getattr(built.model, "criterion", None)
    if criterion is None or getattr(criterion, "point_sampled", None) != (mode == "point"):
        raise ValueError(
            f"{args.config_file}: the model has no SetCriterion with point_sampled="
            f"{mode == 'point'} at model.criterion (MODEL.MASK_FORMER.POINT_SAMPLED_LOSS); "
            "is its META_ARCHITECTURE MaskFormer?"
        )
    batch = training_batch(args.batch, args.size, built.num_classes, args.masks_per_image)
    row: dict = {}
    train_iterations(
        built, batch, device, short_dtype(args.precision), args.warmup, args.iters, row
    )
    return {
        "mode": mode,
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "config": args.config_file,
        "size": args.size,
        "batch": args.batch,
        "masks_per_image": args.masks_per_image,
        "precision": args.precision,
        "iters": args.iters,
        "sec_per_iter": row["ms"] / 1e3,
        "memory_kind": "CUDA max_memory_allocated" if device == "cuda" else "peak RSS",
        "peak_mb": row["peak_gib"] * 1024,
        "before_first_step_mb": row["static_gib"] * 1024,
        "step_growth_mb": (row["peak_gib"] - row["static_gib"]) * 1024,
        "final_loss": row["final_loss"],
    }


def _bf16_ok(device: str) -> bool:
    """bf16 on the CPU only where it is native (mask2former.utils.precision)."""
    if device != "cpu" and torch.cuda.is_available():
        return True
    from mask2former.utils.precision import cpu_has_native_bf16

    return cpu_has_native_bf16()


def main(argv=None):
    args = parse_args(argv)
    if args._child:  # one mode in this process; print its JSON on the last line
        args.precision = args.precision[0]
        print(json.dumps(run_mode(args, args._child)))
        return None

    results = []
    for precision, mode in [(p, m) for p in args.precision for m in args.modes]:
        if short_dtype(precision) == "bf16" and not _bf16_ok(args.device):
            cap = torch.backends.cpu.get_cpu_capability()
            print(f"{mode:>5} {precision}: skipped: no native bf16 on this CPU ({cap})", flush=True)
            continue
        argv = ["--_child", mode]
        for k in ("config_file", "size", "batch", "masks_per_image", "iters", "warmup", "device"):
            argv += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
        argv += ["--threads", str(args.threads), "--precision", precision] + list(args.opts)
        try:
            res = run_child("training", argv)
        except RuntimeError as e:
            raise SystemExit(f"benchmark of mode {mode!r} failed: {e}") from None
        results.append(res)
        print(
            f"{mode:>5} {precision}: {res['sec_per_iter']:.2f} s/iter, {res['memory_kind']} "
            f"{res['peak_mb']:.0f} MiB (step growth {res['step_growth_mb']:.0f} MiB), "
            f"loss {res['final_loss']:.2f}",
            flush=True,
        )
    by_mode = {r["mode"]: r for r in results if r["precision"] == args.precision[0]}
    summary = {"results": results}
    if "point" in by_mode and "full" in by_mode:
        p, f = by_mode["point"], by_mode["full"]
        summary["full_over_point_peak"] = f["peak_mb"] / p["peak_mb"]
        growth = f["step_growth_mb"] / max(p["step_growth_mb"], 1e-9)
        summary["full_over_point_step_growth"] = growth
        print(
            f"full / point memory: {summary['full_over_point_step_growth']:.2f}x step growth, "
            f"{summary['full_over_point_peak']:.2f}x peak; time "
            f"{f['sec_per_iter'] / p['sec_per_iter']:.2f}x"
        )
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(summary, fh, indent=2)
    return summary


if __name__ == "__main__":
    main()
