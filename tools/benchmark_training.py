#!/usr/bin/env python
"""Training-step time and peak memory: point-sampled vs full-mask losses (Sec. 3.3, Table 5).

    python tools/benchmark_training.py [--config-file CFG] [--size 512] [--batch 2] \
        [--iters 3] [--warmup 1] [--modes point full] [--precision fp32|float16|bfloat16] \
        [--json-out results.json] [KEY VALUE ...]

Builds the model of the config with random weights (MODEL.WEIGHTS is ignored), feeds synthetic
batches (random images, `--masks-per-image` random-polygon masks with random classes) and runs
forward + backward + optimizer step. Each mode runs in its own process, so that peak memory is
that mode's alone:
  * CPU: peak resident set size (ru_maxrss) and its growth over the RSS before the first step;
  * CUDA: torch.cuda.max_memory_allocated and its growth over the memory allocated before.
The point-vs-full ratio is computed on the growth (weights and optimizer state are the same).
The matcher uses TRAIN_NUM_POINTS points in both modes; only the final losses differ.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_CONFIG = "configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"


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
        choices=["fp32", "float16", "bfloat16"],
        help="one or more (e.g. fp32 bfloat16: s/iteration side by side); on a CPU without native "
        "bf16 the bfloat16 rows are skipped (emulated, many times slower than fp32)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--json-out", default="", help="write the results here as JSON")
    p.add_argument("--_child", default="", help=argparse.SUPPRESS)  # internal: one mode
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def synthetic_batch(num_classes: int, batch: int, size: int, masks_per_image: int, seed: int):
    """Images (3, size, size) uint8 and `Instances` with random-polygon masks and classes."""
    import cv2
    from detectron2.structures import BitMasks, Instances

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        image = torch.from_numpy(rng.integers(0, 256, (3, size, size), dtype=np.uint8))
        masks = np.zeros((masks_per_image, size, size), dtype=np.uint8)
        for m in masks:
            pts = rng.integers(0, size, (6, 2)).astype(np.int32)
            cv2.fillPoly(m, [cv2.convexHull(pts)], 1)
        inst = Instances((size, size))
        inst.gt_classes = torch.as_tensor(rng.integers(0, num_classes, masks_per_image))
        inst.gt_masks = BitMasks(torch.from_numpy(masks.astype(bool)))
        out.append({"image": image, "instances": inst, "height": size, "width": size})
    return out


def run_mode(args, mode: str) -> dict:
    """Build the model and time `args.iters` training steps with the given loss mode."""
    from detectron2.modeling import build_model

    import mask2former  # noqa: F401  (registers the model)
    from mask2former.config import load_config
    from mask2former.solver import build_optimizer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    opts = list(args.opts) + ["MODEL.DEVICE", device, "MODEL.WEIGHTS", ""]
    opts += ["MODEL.MASK_FORMER.POINT_SAMPLED_LOSS", str(mode == "point")]
    cfg = load_config(args.config_file, opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    criterion = getattr(model, "criterion", None)
    if criterion is None or not hasattr(criterion, "point_sampled"):
        raise ValueError("the model has no SetCriterion at model.criterion; is it MaskFormer?")
    criterion.point_sampled = mode == "point"  # in case the model does not read the config key
    optimizer = build_optimizer(cfg, model)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    batches = [
        synthetic_batch(num_classes, args.batch, args.size, args.masks_per_image, seed=i)
        for i in range(args.warmup + args.iters)
    ]

    use_amp = args.precision != "fp32"
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(args.precision)
    scaler = torch.amp.GradScaler(device) if args.precision == "float16" else None

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_mb = torch.cuda.memory_allocated() / 2**20
    else:
        base_mb = _rss_mb()
    times, losses = [], []
    for i, data in enumerate(batches):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device, dtype=dtype, enabled=use_amp):
            loss_dict = model(data)
            loss = sum(loss_dict.values())
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))

    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        memory_kind = "CUDA max_memory_allocated"
    else:
        peak_mb = _peak_rss_mb()
        memory_kind = "peak RSS"
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
        "sec_per_iter": float(np.mean(times)) if times else float("nan"),
        "sec_per_iter_all": times,
        "memory_kind": memory_kind,
        "peak_mb": peak_mb,
        "before_first_step_mb": base_mb,
        "step_growth_mb": peak_mb - base_mb,
        "final_loss": losses[-1],
    }


def _bf16_ok(device: str) -> bool:
    """bf16 on the CPU only where it is native (mask2former.utils.precision)."""
    if device == "auto" and torch.cuda.is_available():
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
        if precision == "bfloat16" and args.device != "cuda" and not _bf16_ok(args.device):
            cap = torch.backends.cpu.get_cpu_capability()
            print(f"{mode:>5} {precision}: skipped: no native bf16 on this CPU ({cap})", flush=True)
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", mode]
        for k in (
            "config_file",
            "size",
            "batch",
            "masks_per_image",
            "iters",
            "warmup",
            "device",
            "threads",
        ):
            cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
        cmd += ["--precision", precision] + list(args.opts)
        with tempfile.TemporaryFile("w+") as log:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
            if proc.returncode != 0:
                log.seek(0)
                sys.stderr.write(log.read()[-5000:])
                raise SystemExit(f"benchmark of mode {mode!r} failed (exit {proc.returncode})")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
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
