#!/usr/bin/env python
"""Inference latency per stage, parameter count and FLOPs of a Mask2Former config.

    python tools/benchmark_inference.py \
        --config-file configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml \
        --size 800 1216 --device cpu --runs 3

Stages: preprocess (normalise + pad), backbone, pixel decoder, transformer decoder and
post-processing (mask upsampling + the outputs enabled by TEST.{SEMANTIC,PANOPTIC,INSTANCE}_ON;
`--all-outputs` turns all three on), each timed separately (CUDA-synchronised on a GPU), the
median over `--runs` after `--warmup` runs. The total is also measured end to end with the
model's own forward.

Without `--weights` the model is randomly initialised; its class logits are then sharpened
(`--sharpen`, a scale on the class head) so that, as with trained weights, some queries are
confident and panoptic/instance post-processing does real work (R50 COCO 800x1216 with the
default 30: 14 of 100 queries pass the panoptic 0.8 threshold; with 10, none did). FLOPs are counted with fvcore
on the network (backbone + head, no post-processing), like the paper's Table 1 (226 GFLOPs for
R50 on COCO, averaged over val images); attention through scaled_dot_product_attention is
counted, the deformable-attention sampling (a custom op, uncounted by fvcore in the paper too) is
not.
"""

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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
        help="also time the unoptimised reference path end to end (benchmarks/inference.py "
        "reference_path: grid_sample MSDeformAttn, nn.MultiheadAttention), fp32",
    )
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def build(args, device: str):
    from detectron2.modeling import build_model

    import mask2former  # noqa: F401
    from mask2former.checkpoint import MaskFormerCheckpointer
    from mask2former.config import load_config

    opts = ["MODEL.DEVICE", device, "MODEL.WEIGHTS", ""] + list(args.opts)
    if args.all_outputs:
        opts += [
            "MODEL.MASK_FORMER.TEST.SEMANTIC_ON",
            "True",
            "MODEL.MASK_FORMER.TEST.PANOPTIC_ON",
            "True",
            "MODEL.MASK_FORMER.TEST.INSTANCE_ON",
            "True",
        ]
    cfg = load_config(args.config_file, opts)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if args.weights:
        MaskFormerCheckpointer(model).load(args.weights)
    elif args.sharpen != 1.0:
        with torch.no_grad():
            model.sem_seg_head.predictor.class_embed.weight.mul_(args.sharpen)
    return cfg, model


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def time_stages(model, inputs, device: str) -> dict[str, float]:
    """One inference, split into stages; returns seconds per stage. The network runs in the
    model's TEST.AMP precision, post-processing in fp32 (as `MaskFormer.forward`)."""
    t = {}
    amp = model.inference_precision
    sync(device)
    t0 = time.perf_counter()
    images = model.preprocess_image(inputs)
    sync(device)
    t1 = time.perf_counter()
    with amp.network(device):
        features = model.backbone(images.tensor)
    sync(device)
    t2 = time.perf_counter()
    with amp.network(device):
        mask_features, _, ms = model.sem_seg_head.pixel_decoder.forward_features(features)
    sync(device)
    t3 = time.perf_counter()
    with amp.network(device):
        outputs = model.sem_seg_head.predictor(ms, mask_features)
    sync(device)
    t4 = time.perf_counter()
    with amp.fp32(device):
        outputs = {k: outputs[k].float() for k in ("pred_logits", "pred_masks")}
        results = model.postprocess(outputs, inputs, images)
    sync(device)
    t5 = time.perf_counter()
    t["preprocess"], t["backbone"], t["pixel decoder"] = t1 - t0, t2 - t1, t3 - t2
    t["transformer decoder"], t["post-processing"] = t4 - t3, t5 - t4
    t["_results"] = results
    return t


@torch.no_grad()
def time_end_to_end(model, inputs, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    model(inputs)
    sync(device)
    return time.perf_counter() - t0


def count_flops(model, images_tensor) -> float | None:
    """fvcore FLOPs (multiply-adds) of backbone + head on one padded, normalised image."""
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        return None

    class Net(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            out = self.m.sem_seg_head(self.m.backbone(x))
            return out["pred_logits"], out["pred_masks"]

    def sdpa_flop(inputs, outputs):
        q, k, v = (i.type().sizes() for i in inputs[:3])
        batch = 1
        for s in q[:-2]:
            batch *= s
        return batch * q[-2] * k[-2] * (q[-1] + v[-1])  # q k^T and attn v

    analysis = FlopCountAnalysis(Net(model), (images_tensor,))
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings(
        "none"
    )
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    return analysis.total()


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


def run(args, device: str) -> dict:
    cfg, model = build(args, device)
    h, w = args.size
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    inp = {"image": image}
    if args.output_size:
        inp["height"], inp["width"] = args.output_size
    inputs = [inp]

    if args.channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    columns = {}
    for name in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        columns[name] = time_precision(model, inputs, device, name, args)
    reference_s = None
    if args.reference:
        reference_s = time_reference(model, inputs, device, args.runs)

    params = sum(p.numel() for p in model.parameters())
    flops = None
    if not args.no_flops:
        with torch.no_grad():
            flops = count_flops(model, model.preprocess_image(inputs).tensor)
    from mask2former.modeling.pixel_decoder.ops import select_backend

    first = next((c for c in columns.values() if "stages_s" in c), {})
    return {
        "config": args.config_file,
        "device": device,
        "device_name": torch.cuda.get_device_name()
        if device.startswith("cuda")
        else f"CPU x{torch.get_num_threads()} threads",
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
        "params": params,
        "gflops": None if flops is None else flops / 1e9,
    }


STAGES = ["preprocess", "backbone", "pixel decoder", "transformer decoder", "post-processing"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


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
    e2e = [time_end_to_end(model, inputs, device) for _ in range(args.runs)]
    return {
        "outputs": describe(runs[-1]["_results"]),
        "stages_s": {s: statistics.median(r[s] for r in runs) for s in STAGES},
        "total_s_runs": [sum(r[s] for s in STAGES) for r in runs],
        "end_to_end_s_runs": e2e,
    }


def time_reference(model, inputs, device: str, runs: int) -> list[float]:
    """End-to-end fp32 times on the reference (unoptimised) path of benchmarks/inference.py."""
    from benchmarks.inference import reference_path
    from mask2former.modeling.inference_precision import InferencePrecision

    model.inference_precision = InferencePrecision(False)
    with reference_path(model):
        time_end_to_end(model, inputs, device)  # warm-up
        return [time_end_to_end(model, inputs, device) for _ in range(runs)]


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
