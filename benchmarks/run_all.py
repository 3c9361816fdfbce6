#!/usr/bin/env python
"""Every Mask2Former performance number in one run: `python -m benchmarks.run_all --device cuda`.

Tables (each row names device, dtype and shape; a row that could not run says OOM / skipped / error):
  1. device: matmul rates (bf16 = the MFU denominator)
  2. MSDeformAttn forward and forward+backward per backend and dtype
  3. inference throughput (batch 1, COCO sizes, all three outputs, post-processing included) with
     time per stage, fp32/TF32 and bf16
  4. masked attention's share of the transformer-decoder time
  5. outputs unchanged: optimised/bf16 paths against the reference in the same run
  6. FLOPs (fvcore) and inference MFU
  7. training iteration time and peak memory (1024x1024, batch 2 and 8, AMP fp16/bf16,
     point-sampled vs full-mask losses) with training MFU
`--device cpu --small` runs all of it at tiny sizes; `--standin` uses benchmarks/standin.py instead
of the real models; `--json` / `--markdown` save the results. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks import (  # noqa: E402
    common,
    flops,
    inference,
    models,
    msdeformattn,
    outputs_check,
    training,
)
from benchmarks.common import Table, dtype_label, run_row  # noqa: E402

PAPER = {  # Table 1, COCO panoptic, V100: params, GFLOPs (fvcore, averaged over val images), fps
    "R50": dict(params_m=44, gflops=226, fps=8.6),
    "Swin-L": dict(params_m=216, gflops=868, fps=4.0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--small", action="store_true", help="tiny sizes and few iterations (CPU smoke run)"
    )
    p.add_argument(
        "--standin", action="store_true", help="use benchmarks.standin, not the real models"
    )
    p.add_argument("--models", default="R50,Swin-L", help="comma list: R50, Swin-L or config paths")
    p.add_argument(
        "--sections",
        default="msda,inference,check,flops,training",
        help="comma list of msda, inference, check, flops, training",
    )
    p.add_argument("--infer-dtypes", default="fp32,bf16")
    p.add_argument(
        "--train-amp",
        default=None,
        help="fp16,bf16 (default; on the CPU fp16 rows are skipped unless named here: "
        "fp16 autocast is emulated there and takes minutes per step)",
    )
    p.add_argument("--train-batches", default="2,8")
    p.add_argument("--losses", default="point,full")
    p.add_argument(
        "--crop", type=int, default=None, help="training crop (default 1024; --small 64)"
    )
    p.add_argument(
        "--num-targets", type=int, default=11, help="ground-truth segments per training image"
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="warm-up iterations (default 10 GPU / 1 small)"
    )
    p.add_argument(
        "--iters",
        type=int,
        default=None,
        help="timed iterations (default 50 inference, 10 training)",
    )
    p.add_argument(
        "--images", default="", help="folder of real images for inference (default synthetic)"
    )
    p.add_argument("--weights", default="", help="NAME=path[,NAME=path]: checkpoints to load")
    p.add_argument(
        "--time-budget-s",
        type=float,
        default=None,
        help="rows not started within this many seconds are marked skipped, so that a run under a "
        "wall-clock limit still prints every table (default: no limit)",
    )
    p.add_argument("--json", default="", help="write all rows to this JSON file")
    p.add_argument("--markdown", default="", help="write the tables to this file")
    p.add_argument(
        "--profile",
        default="",
        help="folder: write a torch.profiler operator table per model and dtype (3 images)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave)")
    return p.parse_args(argv)


class Harness:
    def __init__(self, args):
        self.a = args
        self.dev = args.device
        self.small = args.small
        self.t0 = time.time()
        self.sections = set(args.sections.split(","))
        self.models = [m for m in args.models.split(",") if m]
        self.weights = dict(kv.split("=", 1) for kv in args.weights.split(",") if kv)
        gpu = self.dev.startswith("cuda")
        self.warmup = (
            args.warmup if args.warmup is not None else (10 if gpu and not self.small else 1)
        )
        self.iters = args.iters if args.iters is not None else (50 if gpu and not self.small else 2)
        self.train_iters = (
            args.iters if args.iters is not None else (10 if gpu and not self.small else 1)
        )
        self.train_warmup = (
            args.warmup if args.warmup is not None else (3 if gpu and not self.small else 1)
        )
        self.crop = args.crop or (64 if self.small else 1024)
        self.train_amp = (args.train_amp or "fp16,bf16").split(",")
        self.skip_fp16 = args.train_amp is None and not gpu
        self.shapes = models.SMALL_SHAPES if self.small else models.COCO_SHAPES
        self.dname = common.device_name(self.dev)
        self.paper = {} if args.standin else PAPER
        self.peak_bf16 = float("nan")
        self.train_gflops: dict[str, float] = {}
        self.infer_rows: dict[tuple[str, str], dict] = {}
        self.T = {
            "device": Table(
                "Device",
                [
                    ("device", "device"),
                    ("dtype", "dtype"),
                    ("shape", "shape"),
                    ("tflops", "matmul TFLOP/s"),
                    ("status", "status"),
                ],
            ),
            "msda": Table(
                "MSDeformAttn forward / forward+backward",
                [
                    ("device", "device"),
                    ("dtype", "dtype"),
                    ("shape", "shape"),
                    ("backend", "backend"),
                    ("fwd_ms", "fwd ms"),
                    ("fwdbwd_ms", "fwd+bwd ms"),
                    ("spread", "p10-p90"),
                    ("speedup", "fwd+bwd speed-up vs pytorch"),
                    ("peak_mib", "fwd+bwd mem MiB"),
                    ("rel_err", "rel err vs fp32 pytorch"),
                    ("status", "status"),
                ],
            ),
            "infer": Table(
                "Inference throughput (batch 1, all three outputs, post-processing included)",
                [
                    ("model", "model"),
                    ("device", "device"),
                    ("dtype", "dtype"),
                    ("shape", "shape"),
                    ("batch", "batch"),
                    ("img_s", "img/s"),
                    ("ms", "ms/img"),
                    ("spread", "p10-p90"),
                    ("backbone_ms", "backbone"),
                    ("pixdec_ms", "pixel dec"),
                    ("decoder_ms", "tr. decoder"),
                    ("post_ms", "pre+post"),
                    ("peak_gib", "peak GiB"),
                    ("paper_fps", "paper fps (V100)"),
                    ("status", "status"),
                ],
            ),
            "attn": Table(
                "Masked attention's share of the transformer decoder (ms, medians)",
                [
                    ("model", "model"),
                    ("device", "device"),
                    ("dtype", "dtype"),
                    ("shape", "shape"),
                    ("decoder_ms", "decoder"),
                    ("cross_ms", "masked cross-attn"),
                    ("cross_share", "share %"),
                    ("self_ms", "self-attn"),
                    ("ffn_ms", "FFN"),
                    ("rest_ms", "heads+masks"),
                    ("status", "status"),
                ],
            ),
            "check": Table(
                "Outputs unchanged (candidate vs reference, worst image)",
                [
                    ("model", "model"),
                    ("device", "device"),
                    ("dtype", "dtype"),
                    ("shape", "shape"),
                    ("variant", "variant"),
                    ("logits_rel", "logits rel"),
                    ("masks_rel", "mask rel"),
                    ("pan_agree", "panoptic px agree %"),
                    ("sem_agree", "semantic px agree %"),
                    ("segments", "segments ref/cand"),
                    ("inst_dscore", "max Δ inst score"),
                    ("tolerance", "tolerance"),
                    ("verdict", "verdict"),
                    ("status", "status"),
                ],
            ),
            "flops": Table(
                "FLOPs (fvcore, 1 multiply-add = 1) and inference MFU",
                [
                    ("model", "model"),
                    ("device", "device"),
                    ("dtype", "dtype"),
                    ("shape", "shape"),
                    ("params_m", "params M"),
                    ("gflops", "GFLOPs"),
                    ("backbone_gflops", "backbone"),
                    ("pixdec_gflops", "pixel dec"),
                    ("decoder_gflops", "tr. decoder"),
                    ("paper", "paper"),
                    ("img_s", "img/s"),
                    ("tflops", "achieved TFLOP/s"),
                    ("mfu", "MFU %"),
                    ("unsupported", "uncounted ops"),
                    ("status", "status"),
                ],
            ),
            "train": Table(
                "Training iteration (forward, matching, losses, backward, clip, AdamW step)",
                [
                    ("model", "model"),
                    ("device", "device"),
                    ("dtype", "AMP"),
                    ("shape", "shape"),
                    ("batch", "batch"),
                    ("loss", "loss"),
                    ("ms", "ms/iter"),
                    ("spread", "p10-p90"),
                    ("img_s", "img/s"),
                    ("peak_gib", "peak GiB"),
                    ("gib_per_img", "GiB/img"),
                    ("act_gib_per_img", "Δ GiB/img"),
                    ("mfu", "MFU %"),
                    ("optimizer", "optimizer"),
                    ("status", "status"),
                ],
            ),
        }
        mem = (
            "CUDA max_memory_allocated" if self.dev.startswith("cuda") else "process RSS (sampled)"
        )
        self.T["infer"].notes += [
            f"img/s = 1000 / median latency; memory: {mem}; stage times from module "
            "hooks in a separate pass (pre+post = total - backbone - head)."
        ]
        self.T["train"].notes += [
            f"peak = {mem} over warm-up and timed iterations (weights, grads, "
            "AdamW state, activations); GiB/img = peak / batch; Δ = (peak - weights) / batch.",
            "paper Table 5: 18 GB (full-mask) vs 6 GB (point) per image, R50.",
        ]
        self.T["flops"].notes += [
            "MFU = 2 x GFLOPs x img/s / measured bf16 matmul TFLOP/s (table Device)."
        ]

    # ---- helpers ----------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        print(f"[{time.time() - self.t0:6.0f}s] {msg}", flush=True)

    def over_budget(self) -> bool:
        budget = self.a.time_budget_s
        return budget is not None and time.time() - self.t0 > budget

    def row(self, table: str, fn, **fields) -> dict:
        r = dict(section=table, device=self.dname, **fields)
        self.T[table].add(r)
        if self.over_budget():
            r["status"] = "skipped: time budget"
            return r
        return run_row(r, fn, self.dev, log=self.log)

    # ---- sections -----------------------------------------------------------------------------
    def device_rates(self) -> None:
        n = None if not self.small else 512
        for dt in ("bf16", "fp32"):
            label = dtype_label(self.dev, dt)

            def fill(r, dt=dt):
                common.set_tf32(self.dev, True)
                r["tflops"] = flops.matmul_peak_tflops(
                    self.dev, dt, n=n, iters=5 if self.small else 20
                )

            r = self.row(
                "device",
                fill,
                dtype=label,
                shape=f"{n or (8192 if self.dev.startswith('cuda') else 1024)}^3 mm",
            )
            if dt == "bf16" and r.get("tflops"):
                self.peak_bf16 = r["tflops"]

    def msda(self) -> None:
        s = msdeformattn.SHAPES["small" if self.small else "full"]
        label = msdeformattn.shape_label(s)
        ref = None
        try:
            from mask2former.modeling.pixel_decoder.ops import ms_deform_attn_pytorch

            v, sh, _, loc, w = msdeformattn.make_inputs(s, self.dev, "fp32")
            with torch.no_grad():
                ref = ms_deform_attn_pytorch(v, sh, loc, w)
        except Exception as e:  # noqa: BLE001
            self.log(f"MSDeformAttn reference failed: {e}")
        dtypes = ["fp32", "bf16", "fp16"] if self.dev.startswith("cuda") else ["fp32"]
        for dt in dtypes:
            base = None
            for be in msdeformattn.backends_for(self.dev)[::-1]:  # pytorch first: the speed-up base
                r = self.row(
                    "msda",
                    lambda r, be=be, dt=dt: msdeformattn.bench(
                        be, s, self.dev, dt, self.warmup, self.iters, r, reference=ref
                    ),
                    dtype=dtype_label(self.dev, dt),
                    shape=label,
                    backend=be,
                )
                if be == "pytorch":
                    base = r.get("fwdbwd_ms")
                elif base and r.get("fwdbwd_ms"):
                    r["speedup"] = base / r["fwdbwd_ms"]
        self.log("MSDeformAttn done")

    def model_inference(self, name: str) -> None:
        shape_inputs = models.inference_inputs(self.shapes, self.a.images)
        shape = inference.shape_label(shape_inputs)
        holder = {}

        def build(r):
            holder["b"] = models.build(
                name,
                self.dev,
                standin=self.a.standin,
                opts=models.ALL_OUTPUTS,
                weights=self.weights.get(name, ""),
                train=False,
            )

        want = self.sections & {"inference", "check", "flops"}
        r = run_row({}, build, self.dev, log=self.log)
        if "b" not in holder:
            for dt in self.a.infer_dtypes.split(","):
                self.T["infer"].add(
                    dict(
                        model=name,
                        device=self.dname,
                        dtype=dtype_label(self.dev, dt),
                        shape=shape,
                        batch=1,
                        status="build " + r["status"],
                    )
                )
            return
        b = holder["b"]
        params_m = sum(p.numel() for p in b.model.parameters()) / 1e6
        if "inference" in want:
            for dt in self.a.infer_dtypes.split(","):
                common.set_tf32(self.dev, True)
                lab = dtype_label(self.dev, dt)
                attn = dict(
                    section="attn",
                    model=name,
                    device=self.dname,
                    dtype=lab,
                    shape=shape,
                    status="ok",
                )

                def fill(r, dt=dt, attn=attn):
                    inference.throughput(
                        b.model, shape_inputs, self.dev, dt, self.warmup, self.iters, r
                    )
                    try:
                        inference.breakdown(
                            b.model, shape_inputs, self.dev, dt, max(3, self.iters // 5), r, attn
                        )
                    except Exception as e:  # noqa: BLE001  the throughput numbers stand without it
                        attn["status"] = f"error: {type(e).__name__}: {e}"[:140]

                if self.a.profile and not self.over_budget():
                    run_row(
                        {},
                        lambda r, dt=dt: inference.profile_table(
                            b.model,
                            shape_inputs[:3],
                            self.dev,
                            dt,
                            os.path.join(
                                self.a.profile, f"profile_{name}_{dtype_label(self.dev, dt)}.txt"
                            ),
                        ),
                        self.dev,
                        log=self.log,
                    )
                r = self.row(
                    "infer",
                    fill,
                    model=name,
                    dtype=lab,
                    shape=shape,
                    batch=1,
                    paper_fps=self.paper.get(name, {}).get("fps"),
                )
                if r["status"] != "ok" and attn["status"] == "ok":
                    attn["status"] = r["status"]
                self.T["attn"].add(attn)
                self.infer_rows[(name, dt)] = r
                self.log(
                    f"{name} inference {lab}: {r.get('img_s', float('nan')):.2f} img/s ({r['status']})"
                )
        if "check" in want:
            rows: list[dict] = []
            base = dict(
                section="check",
                model=name,
                device=self.dname,
                dtype=dtype_label(self.dev, "fp32"),
                shape=inference.shape_label(shape_inputs[:2]),
            )
            r = run_row(
                dict(base),
                lambda r: outputs_check.outputs_check(
                    b.model,
                    shape_inputs[:2],
                    self.dev,
                    rows,
                    base,
                    trained_weights=bool(self.weights.get(name)),
                ),
                self.dev,
                log=self.log,
            )
            if r["status"] != "ok":  # the rows finished before the failure stay
                rows.append(dict(base, variant="(check aborted)", status=r["status"]))
            for x in rows:
                self.T["check"].add(x)
            self.log(f"{name} outputs check: {[x.get('verdict', x['status']) for x in rows]}")
        if "flops" in want:
            self.flops_rows(name, b, shape_inputs, params_m)
        del holder["b"]
        b = None  # the closures above hold `b` in a cell: drop the model before freeing memory
        common.free_memory(self.dev)

    def flops_rows(self, name, b, shape_inputs, params_m) -> None:
        cache: dict[tuple, dict] = {}

        def count(hw):
            # H x W and W x H have the same count (square kernels, same token numbers): trace once.
            key = tuple(sorted(flops.padded(*hw)))
            if key not in cache:
                cache[key] = flops.count_flops(b.model, hw, self.dev)
            return cache[key]

        shape = inference.shape_label(shape_inputs)

        def fill(r):
            cs = [count(tuple(x["image"].shape[1:])) for x in shape_inputs]
            for k in ("gflops", "backbone_gflops", "pixdec_gflops", "decoder_gflops"):
                r[k] = sum(c[k] for c in cs) / len(cs)
            r["unsupported"] = cs[0]["unsupported"] or "none"
            if "training" in self.sections:
                self.train_gflops[name] = count((self.crop, self.crop))["gflops"]

        paper = self.paper.get(name)
        base = self.row(
            "flops",
            fill,
            model=name,
            dtype="fp32",
            shape=shape + " (mean)",
            params_m=params_m,
            paper=f"{paper['gflops']}G, {paper['params_m']}M" if paper else None,
        )
        self.log(f"{name} FLOPs: {base.get('gflops', float('nan')):.1f} G ({base['status']})")
        for dt in self.a.infer_dtypes.split(","):
            ir = self.infer_rows.get((name, dt))
            if not ir or not ir.get("img_s") or not base.get("gflops"):
                continue
            tf, m = flops.mfu(base["gflops"], ir["img_s"], self.peak_bf16)
            self.T["flops"].add(
                dict(
                    section="flops",
                    model=name,
                    device=self.dname,
                    dtype=dtype_label(self.dev, dt),
                    shape=shape,
                    gflops=base["gflops"],
                    img_s=ir["img_s"],
                    tflops=tf,
                    mfu=m,
                    status="ok",
                )
            )

    def model_training(self, name: str) -> None:
        shape = f"{self.crop}x{self.crop}"
        for loss in self.a.losses.split(","):
            holder = {}

            def build(r, loss=loss, holder=holder):
                torch.manual_seed(0)
                b = models.build(
                    name,
                    self.dev,
                    standin=self.a.standin,
                    weights=self.weights.get(name, ""),
                    train=True,
                    point_sampled=(loss == "point"),
                )
                holder["b"] = b
                holder["init"] = {
                    k: v.detach().to("cpu", copy=True) for k, v in b.model.state_dict().items()
                }

            br = run_row({}, build, self.dev, log=self.log)
            for bs in [int(x) for x in self.a.train_batches.split(",")]:
                batch = None
                for amp in self.train_amp:
                    fields = dict(model=name, dtype=amp, shape=shape, batch=bs, loss=loss)
                    if amp == "fp16" and self.skip_fp16:
                        self.T["train"].add(
                            dict(
                                section="train",
                                device=self.dname,
                                status="skipped: fp16 autocast "
                                "is emulated on the CPU (--train-amp fp16 forces it)",
                                **fields,
                            )
                        )
                        continue
                    if "b" not in holder:
                        self.T["train"].add(
                            dict(
                                section="train",
                                device=self.dname,
                                status="build " + br["status"],
                                **fields,
                            )
                        )
                        continue

                    def fill(r, bs=bs, amp=amp, holder=holder):
                        nonlocal batch
                        if batch is None:
                            batch = models.training_batch(
                                bs, self.crop, holder["b"].num_classes, self.a.num_targets
                            )
                        holder["b"].model.load_state_dict(holder["init"])
                        training.train_iterations(
                            holder["b"],
                            batch,
                            self.dev,
                            amp,
                            self.train_warmup,
                            self.train_iters,
                            r,
                        )
                        g = self.train_gflops.get(name)
                        if g:
                            r["mfu"] = flops.mfu(g, r["img_s"], self.peak_bf16, train=True)[1]

                    r = self.row("train", fill, **fields)
                    self.log(
                        f"{name} train {loss} bs{bs} {amp}: {r.get('ms', float('nan')):.0f} ms, "
                        f"{r.get('peak_gib', float('nan')):.2f} GiB ({r['status']})"
                    )
            holder.clear()
            common.free_memory(self.dev)

    # ---- the run ------------------------------------------------------------------------------
    def run(self) -> list[Table]:
        self.log(
            f"device {self.dname}; torch {torch.__version__}; small={self.small}; standin={self.a.standin}"
        )
        self.device_rates()
        if "msda" in self.sections:
            self.msda()
        for name in self.models:
            if self.sections & {"inference", "check", "flops"}:
                self.model_inference(name)
            if "training" in self.sections:
                self.model_training(name)
        return [t for t in self.T.values() if t.rows]


def main(argv=None) -> list[Table]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    h = Harness(args)
    tables = h.run()
    text = "\n".join(t.render() for t in tables)
    print("\n" + text, flush=True)
    meta = dict(
        device=h.dname, torch=torch.__version__, args=vars(args), seconds=time.time() - h.t0
    )
    if args.json:
        common.dump_json(args.json, tables, meta)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"<!-- {meta} -->\n\n{text}")
    return tables


if __name__ == "__main__":
    main()
