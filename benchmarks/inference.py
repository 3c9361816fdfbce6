#!/usr/bin/env python
"""Inference latency per stage, parameter count and FLOPs of a Mask2Former config.

    python -m benchmarks.inference \
        --config-file configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml \
        --size 800 1216 --device cpu --runs 3

Stages: preprocess (normalise + pad), backbone, pixel decoder, transformer decoder and
post-processing (mask upsampling + the outputs enabled by TEST.{SEMANTIC,PANOPTIC,INSTANCE}_ON;
`--all-outputs` turns all three on), each timed separately (device-synchronised), the median over
`--runs` after `--warmup` runs, one column per `--precisions` entry. The total is also measured
end to end with the model's own forward; `--reference` times the unoptimised reference path
(benchmarks.outputs_check.reference_path) end to end as well.

The input is one synthetic image (benchmarks.models.synthetic_image). Without `--weights` the
model is randomly initialised and its class logits are sharpened (`--sharpen`, a scale on the
class head; benchmarks.models.SHARPEN) so that, as with trained weights, some queries are
confident and panoptic/instance post-processing does real work. FLOPs: benchmarks.flops (fvcore
on backbone + head, no post-processing, like the paper's Table 1).

The rest of this module is what `benchmarks.run_all` uses for its inference tables: throughput
(the paper's fps: batch 1, all three outputs, post-processing included), time per stage from
module hooks and masked attention's share of the transformer decoder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    Laps,
    PeakMemory,
    SectionTimer,
    autocast,
    cpu_model,
    device_name,
    synchronize,
    time_fn,
)
from benchmarks.models import decoder_groups, stage_groups  # noqa: E402


def _runner(model, inputs: list[dict], device: str, dtype: str) -> Callable[[int], object]:
    def run(i: int):
        with torch.no_grad(), autocast(device, dtype):
            return model([inputs[i % len(inputs)]])

    return run


def shape_label(inputs: list[dict]) -> str:
    shapes = [tuple(x["image"].shape[1:]) for x in inputs]
    uniq = sorted(set(shapes))
    if len(uniq) == 1:
        return f"{uniq[0][0]}x{uniq[0][1]}"
    return f"{len(uniq)} sizes {min(h for h, _ in uniq)}-{max(h for h, _ in uniq)}x{min(w for _, w in uniq)}-{max(w for _, w in uniq)}"


def throughput(model, inputs, device: str, dtype: str, warmup: int, iters: int, row: dict) -> None:
    """images/s at batch 1 = 1000 / median latency (ms), cycling over `inputs`."""
    run = _runner(model, inputs, device, dtype)
    with PeakMemory(device) as mem:
        t = time_fn(run, device, warmup, iters)
    row.update(
        ms=t.median,
        spread=t.spread,
        img_s=1000.0 / t.median,
        peak_gib=mem.peak_gib,
        n=len(t.times_ms),
    )


def breakdown(
    model, inputs, device: str, dtype: str, iters: int, row: dict, attn_row: dict | None
) -> None:
    """Per-stage medians (hooks), and the decoder's split into cross-attn / self-attn / FFN / rest.

    A separate pass from `throughput` so that hooks never touch the fps numbers. The first call is
    a warm-up.
    """
    groups = stage_groups(model)
    groups.update({k: v for k, v in decoder_groups(model).items() if k != "decoder"})
    run = _runner(model, inputs, device, dtype)
    run(0)
    synchronize(device)
    timer = SectionTimer(groups, device)
    totals = []
    try:
        for i in range(iters):
            t = time_fn(lambda _, i=i: run(i), device, 0, 1)
            timer.next_iteration()
            totals.append(t.median)
        res = timer.results_ms()
    finally:
        timer.remove()
    per = {k: v.times_ms for k, v in res.items()}
    per["total"] = totals
    med = lambda f: statistics.median(f(i) for i in range(iters))  # noqa: E731  median of per-image values
    get = lambda k: (lambda i: per[k][i]) if k in per else (lambda i: float("nan"))  # noqa: E731
    dec = med(get("transformer_decoder"))
    row.update(
        backbone_ms=med(get("backbone")),
        pixdec_ms=med(lambda i: per["head"][i] - per["transformer_decoder"][i]),
        decoder_ms=dec,
        post_ms=med(lambda i: per["total"][i] - per["backbone"][i] - per["head"][i]),
    )  # pre + post + glue
    if attn_row is not None:
        cross, selfa, ffn = med(get("cross_attn")), med(get("self_attn")), med(get("ffn"))
        attn_row.update(
            decoder_ms=dec,
            cross_ms=cross,
            cross_share=med(lambda i: 100.0 * get("cross_attn")(i) / per["transformer_decoder"][i]),
            self_ms=selfa,
            ffn_ms=ffn,
            rest_ms=med(
                lambda i: (
                    per["transformer_decoder"][i]
                    - get("cross_attn")(i)
                    - get("self_attn")(i)
                    - get("ffn")(i)
                )
            ),
            n=iters,
        )


def profile_table(model, inputs, device: str, dtype: str, path: str, rows: int = 40) -> None:
    """torch.profiler operator table (sorted by device time on CUDA) of `len(inputs)` images, after
    one warm-up image: which kernels the optimisation work should look at first."""
    from torch.profiler import ProfilerActivity, profile

    run = _runner(model, inputs, device, dtype)
    run(0)
    synchronize(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts, record_shapes=False) as prof:
        for i in range(len(inputs)):
            run(i)
        synchronize(device)
    key = "device_time_total" if device.startswith("cuda") else "cpu_time_total"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(prof.key_averages().table(sort_by=key, row_limit=rows))


# ---- per-stage latency of one config (the command line) ------------------------------------------

STAGES = ["preprocess", "backbone", "pixel decoder", "transformer decoder", "post-processing"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[800, 1216],
        metavar=("H", "W"),
        help="input image size (after the test-time resize)",
    )
    p.add_argument(
        "--output-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="requested output height/width (default: the input size)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, or 'all' (cpu and cuda if present)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--weights", default="", help="checkpoint to load (.pkl/.pth)")
    p.add_argument(
        "--all-outputs", action="store_true", help="turn on semantic, panoptic and instance"
    )
    p.add_argument(
        "--sharpen", type=float, default=30.0, help="class-head scale for random weights"
    )
    p.add_argument("--no-flops", action="store_true")
    p.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="comma-separated fp32,bf16,fp16: one column each, same weights and input (network in "
        "autocast as TEST.AMP; post-processing in fp32). On a CPU without native bf16 the bf16 "
        "column is 'skipped' (emulated bf16 is many times slower than fp32); fp16 is CUDA only",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="run the backbone in channels-last memory format (measure whether it pays)",
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help="also time the unoptimised reference path end to end (benchmarks.outputs_check."
        "reference_path: grid_sample MSDeformAttn, nn.MultiheadAttention), fp32",
    )
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


@torch.no_grad()
def time_stages(model, inputs, device: str) -> dict:
    """One inference, split into stages; returns seconds per stage. The network runs in the
    model's TEST.AMP precision, post-processing in fp32 (as `MaskFormer.forward`)."""
    amp = model.inference_precision
    lap = Laps(device)
    images = model.preprocess_image(inputs)
    lap("preprocess")
    with amp.network(device):
        features = model.backbone(images.tensor)
    lap("backbone")
    with amp.network(device):
        mask_features, _, ms = model.sem_seg_head.pixel_decoder.forward_features(features)
    lap("pixel decoder")
    with amp.network(device):
        outputs = model.sem_seg_head.predictor(ms, mask_features)
    lap("transformer decoder")
    with amp.fp32(device):
        outputs = {k: outputs[k].float() for k in ("pred_logits", "pred_masks")}
        results = model.postprocess(outputs, inputs, images)
    lap("post-processing")
    return {**lap.times, "_results": results}


def time_end_to_end(model, inputs, device: str, runs: int, warmup: int = 0) -> list[float]:
    """Seconds of `runs` whole forwards (the model's own `forward`), after `warmup` more."""

    def forward(_):
        with torch.no_grad():
            model(inputs)

    return [ms / 1e3 for ms in time_fn(forward, device, warmup, runs).times_ms]


def describe(results) -> str:
    r = results[0]
    parts = []
    if "sem_seg" in r:
        parts.append(f"sem_seg {tuple(r['sem_seg'].shape)}")
    if "panoptic_seg" in r:
        parts.append(f"{len(r['panoptic_seg'][1])} panoptic segments")
    if "instances" in r:
        parts.append(f"{len(r['instances'])} instances")
    return ", ".join(parts)


def time_precision(model, inputs, device: str, name: str, args) -> dict:
    """Stage medians and end-to-end times with the network in precision `name` (fp32/bf16/fp16);
    {"skipped": why} where that precision would be emulated (bf16 on a CPU without it natively,
    fp16 on any CPU)."""
    from mask2former.modeling.inference_precision import InferencePrecision
    from mask2former.utils.precision import cpu_has_native_bf16

    if name not in ("fp32", "bf16", "fp16"):
        raise SystemExit(f"--precisions: {name!r} is not one of fp32, bf16, fp16")
    on_cpu = not device.startswith("cuda")
    if on_cpu and name == "bf16" and not cpu_has_native_bf16():
        cap = torch.backends.cpu.get_cpu_capability()
        return {"skipped": f"skipped: no native bf16 on this CPU ({cap})"}
    if on_cpu and name == "fp16":
        return {"skipped": "skipped: fp16 is emulated on CPUs"}
    model.inference_precision = InferencePrecision(
        name != "fp32", {"fp16": "float16"}.get(name, "bfloat16")
    )
    for _ in range(args.warmup):
        time_stages(model, inputs, device)
    runs = []
    for _ in range(args.runs):
        if runs:  # keep only the last run's outputs (about 1 GB at COCO sizes)
            del runs[-1]["_results"]
        runs.append(time_stages(model, inputs, device))
    return {
        "outputs": describe(runs[-1]["_results"]),
        "stages_s": {s: statistics.median(r[s] for r in runs) for s in STAGES},
        "total_s_runs": [sum(r[s] for s in STAGES) for r in runs],
        "end_to_end_s_runs": time_end_to_end(model, inputs, device, args.runs),
    }


def time_reference(model, inputs, device: str, runs: int) -> list[float]:
    """End-to-end fp32 times on the reference (unoptimised) path, after one warm-up."""
    from benchmarks.outputs_check import reference_path
    from mask2former.modeling.inference_precision import InferencePrecision

    model.inference_precision = InferencePrecision(False)
    with reference_path(model):
        return time_end_to_end(model, inputs, device, runs, warmup=1)


def run(args, device: str) -> dict:
    from benchmarks.flops import count_flops
    from benchmarks.models import ALL_OUTPUTS, build, synthetic_image
    from mask2former.modeling.pixel_decoder.ops import select_backend

    opts = list(args.opts) + (ALL_OUTPUTS if args.all_outputs else [])
    model = build(
        args.config_file, device, opts=opts, weights=args.weights, sharpen=args.sharpen
    ).model.eval()
    h, w = args.size
    inp = {"image": synthetic_image(h, w, seed=0)}
    if args.output_size:
        inp["height"], inp["width"] = args.output_size
    inputs = [inp]

    if args.channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    columns = {}
    for name in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        columns[name] = time_precision(model, inputs, device, name, args)
    reference_s = time_reference(model, inputs, device, args.runs) if args.reference else None
    gflops = None if args.no_flops else count_flops(model, (h, w), device)["gflops"]
    first = next((c for c in columns.values() if "stages_s" in c), {})
    return {
        "config": args.config_file,
        "device": device,
        "device_name": device_name(device),
        "msdeformattn_backend": select_backend("cuda" if device.startswith("cuda") else "cpu").name,
        "input": [h, w],
        "cpu": cpu_model(),
        "channels_last": args.channels_last,
        "outputs": first.get("outputs", ""),
        "stages_s": first.get("stages_s", {}),
        "total_s_runs": first.get("total_s_runs", []),
        "end_to_end_s_runs": first.get("end_to_end_s_runs", []),
        "precisions": columns,
        "reference_end_to_end_s_runs": reference_s,
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": gflops,
    }


def print_report(r: dict) -> None:
    print(
        f"\n{r['config']} on {r['device']} ({r['device_name']}, {r['cpu']}), input "
        f"{r['input'][0]}x{r['input'][1]}, MSDeformAttn backend: {r['msdeformattn_backend']}, "
        f"backbone channels-last: {r['channels_last']}"
    )
    cols = r["precisions"]
    names = list(cols)
    print("| stage | " + " | ".join(f"{n} s (share)" for n in names) + " |")
    print("|---|" + "---:|" * len(names))

    def cell(c, stage):
        if "skipped" in c:
            return c["skipped"]
        total = sum(c["stages_s"].values())
        return f"{c['stages_s'][stage]:.3f} ({100 * c['stages_s'][stage] / total:.1f}%)"

    for stage in STAGES:
        print(f"| {stage} | " + " | ".join(cell(cols[n], stage) for n in names) + " |")

    def total(c):
        return c["skipped"] if "skipped" in c else f"**{sum(c['stages_s'].values()):.3f}**"

    def e2e(c):
        if "skipped" in c:
            return c["skipped"]
        return f"{statistics.median(c['end_to_end_s_runs']):.3f}"

    print("| **sum of stage medians** | " + " | ".join(total(cols[n]) for n in names) + " |")
    print("| end-to-end forward (median) | " + " | ".join(e2e(cols[n]) for n in names) + " |")
    ref = r.get("reference_end_to_end_s_runs")
    if ref:
        med = statistics.median(ref)
        ratios = ", ".join(
            f"{n} {statistics.median(cols[n]['end_to_end_s_runs']) / med:.2f}x"
            for n in names
            if "skipped" not in cols[n]
        )
        print(f"reference path end to end (fp32, median): {med:.3f} s; ratio {ratios}")
    for n in names:
        if "outputs" in cols[n]:
            print(f"outputs ({n}): {cols[n]['outputs']}")
    flops = "n/a" if r["gflops"] is None else f"{r['gflops']:.1f} GFLOPs (fvcore, network only)"
    print(f"params: {r['params']:,} ({r['params'] / 1e6:.1f}M); {flops}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [args.device]
    if args.device == "all":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = []
    for d in devices:
        r = run(args, d)
        print_report(r)
        results.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
