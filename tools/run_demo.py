#!/usr/bin/env python
"""`make demo`: train Mask2Former on the built-in demo_shapes dataset, on this CPU, and show results.

1. generates the demo_shapes dataset if it is not there yet (tools/generate_demo_shapes.py into
   datasets/demo_shapes/, ~30 s);
2. runs `tools/train_net.py --config-file configs/demo/panoptic.yaml` with a progress display
   (periodic evaluation on the val split included), in bf16 where the CPU has it natively
   (--precision auto), else in fp32;
3. prints PQ, mask AP and mIoU on the val split as a table (also written as metrics.md);
4. plots the training curves (losses and metrics over iterations) from metrics.json;
5. draws prediction overlays for a few val images with demo/demo.py: panoptic, instance and
   semantic side by side, under the ground truth.

Everything is written under output/demo/ (see the summary printed at the end).

    python tools/run_demo.py [--config-file F] [--output-dir D] [--skip-train] [--num-images N]
                             [--precision auto|fp32] [--time-budget MIN]
                             [KEY VALUE ...]   (config overrides, passed on to train_net.py)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# plot_training_curves, generate_demo_shapes (detectron2 owns `tools`)
sys.path.insert(0, os.path.join(REPO, "tools"))

import generate_demo_shapes  # noqa: E402
import plot_training_curves  # noqa: E402

DEFAULT_CONFIG = "configs/demo/panoptic.yaml"
# What the table shows: key -> (task, metric, target of the demo (issue 8) or None).
METRICS = {
    "panoptic_seg/PQ": ("Panoptic", "PQ", 50.0),
    "panoptic_seg/PQ_th": ("Panoptic", "PQ things", None),
    "panoptic_seg/PQ_st": ("Panoptic", "PQ stuff", None),
    "segm/AP": ("Instance", "mask AP", 50.0),
    "segm/AP50": ("Instance", "mask AP50", None),
    "sem_seg/mIoU": ("Semantic", "mIoU", 70.0),
    "sem_seg/pACC": ("Semantic", "pixel accuracy", None),
}
ITER_RE = re.compile(r"\biter: (\d+)\b.*?total_loss: ([\d.e+-]+)")
ETA_RE = re.compile(r"eta: ([\d:]+(?: day[s]?, [\d:]+)?)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    p.add_argument("--output-dir", default="output/demo")
    p.add_argument(
        "--skip-train",
        action="store_true",
        help="reuse <output-dir>/train/model_final.pth and its metrics.json",
    )
    p.add_argument("--num-images", type=int, default=4, help="val images to draw (default 4)")
    p.add_argument(
        "--time-budget",
        type=float,
        default=20.0,
        metavar="MIN",
        help="minutes for the whole run (default 20): on a machine too slow to train "
        "the config's SOLVER.MAX_ITER in time, train fewer iterations (measured by a "
        "short calibration run); 0 always trains the full schedule",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32"],
        default="auto",
        help="auto (default): train in bf16 (SOLVER.AMP bfloat16) where this CPU computes it "
        "natively (AMX / AVX512_BF16), else fp32; fp32: as the config says",
    )
    p.add_argument(
        "--readme-assets",
        metavar="DIR",
        help="also write small copies of an overlay and the curves into DIR (e.g. "
        "docs/images) and print the README's Markdown snippet",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for train_net.py")
    return p.parse_args()


def _config_value(config_file: str, opts: list[str], key: str):
    """One value of the merged config (to size the progress bar), without importing the model."""
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    from mask2former.config import add_maskformer2_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


class Progress:
    """A one-line progress bar on a terminal; a line every few iterations in a log."""

    def __init__(self, total: int):
        self.total, self.tty = total, sys.stdout.isatty()
        self.start = time.time()
        self.last_print = 0.0
        self.state = "starting"

    def update(
        self,
        it: int | None = None,
        loss: float | None = None,
        eta: str | None = None,
        state: str | None = None,
    ) -> None:
        if it is not None:
            self.it, self.loss, self.eta = it, loss, eta
            self.state = "training"
        if state:
            self.state = state
        now = time.time()
        if not self.tty and now - self.last_print < 30 and state is None:
            return
        self.last_print = now
        it = getattr(self, "it", 0)
        frac = min(1.0, it / max(self.total, 1))
        bar = "#" * int(frac * 30) + "-" * (30 - int(frac * 30))
        msg = (
            f"[{bar}] iter {it:>5}/{self.total}  loss {getattr(self, 'loss', float('nan')):.3f}"
            f"  {self.state}  elapsed {_fmt(now - self.start)}"
        )
        if getattr(self, "eta", None):
            msg += f"  eta {self.eta}"
        if self.tty:
            sys.stdout.write("\r" + msg[:150].ljust(150))
        else:
            sys.stdout.write(msg + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        if self.tty:
            sys.stdout.write("\n")


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def calibrate(args, out_dir: str, iters: int = 12) -> tuple[float, float]:
    """Run `iters` training iterations: (seconds per iteration, start-up seconds)."""
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "train_net.py"),
        "--config-file",
        args.config_file,
        *args.opts,
        "SOLVER.MAX_ITER",
        str(iters),
        "TEST.EVAL_PERIOD",
        "0",
        "SOLVER.CHECKPOINT_PERIOD",
        "100000",
        "OUTPUT_DIR",
        out_dir,
    ]
    shutil.rmtree(out_dir, ignore_errors=True)
    start = time.time()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - start
    records = plot_training_curves.read_metrics(os.path.join(out_dir, "metrics.json"))
    times = [r["time"] for r in records if isinstance(r.get("time"), (int, float))]
    if res.returncode != 0 or not times:
        sys.stdout.write(res.stdout[-3000:])
        raise SystemExit("The calibration run of train_net.py failed (see above).")
    per_iter = times[-1]
    return per_iter, max(0.0, wall - iters * per_iter)


def precision_overrides(precision: str) -> list[str]:
    """SOLVER.AMP overrides for --precision, and one line saying which precision and why."""
    import torch

    from mask2former.utils.precision import cpu_has_native_bf16

    capability = torch.backends.cpu.get_cpu_capability()
    if precision == "fp32":
        print("Training precision: as the config says (--precision fp32).", flush=True)
        return []
    if not cpu_has_native_bf16():
        print(
            f"Training precision: fp32 (this CPU ({capability}) has no native bf16; emulated "
            "bf16 would be many times slower).",
            flush=True,
        )
        return []
    print(f"Training precision: bf16 (native on this CPU, {capability}).", flush=True)
    return ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "bfloat16"]


def plan_iterations(args, out: str, start_time: float) -> list[str]:
    """Config overrides that fit training into the time budget (none if it fits as it is)."""
    max_iter = int(_config_value(args.config_file, args.opts, "SOLVER.MAX_ITER"))
    if args.time_budget <= 0:
        return []
    print("Measuring the training speed on this machine (a short calibration run) ...", flush=True)
    per_iter, startup = calibrate(args, os.path.join(out, "calibration"))
    batch = int(_config_value(args.config_file, args.opts, "SOLVER.IMS_PER_BATCH"))
    period = int(_config_value(args.config_file, args.opts, "TEST.EVAL_PERIOD"))
    num_val = 100
    # Inference on one 256-px val image ~ a third of a training image's forward-backward at the
    # crop size, x the area ratio; plus the evaluators; plus drawing the overlays at the end.
    eval_s = num_val * per_iter / batch * 0.6 + 15
    n_evals = max_iter // period if period > 0 else 1
    left = args.time_budget * 60 - (time.time() - start_time) - startup - 40
    fits = int((left - n_evals * eval_s) / per_iter)
    eta = startup + max_iter * per_iter + n_evals * eval_s
    print(
        f"  {per_iter:.2f} s per iteration (batch {batch}); the full schedule ({max_iter} "
        f"iterations) needs about {eta / 60:.0f} min.",
        flush=True,
    )
    if fits >= max_iter:
        return []
    new = max(50, fits // 10 * 10)
    print(
        f"  This machine is too slow for {max_iter} iterations in the {args.time_budget:.0f}-min "
        f"budget: training {new} instead. Expect lower metrics than the README's (they are for "
        "the full schedule); --time-budget 0 trains it in full.",
        flush=True,
    )
    overrides = ["SOLVER.MAX_ITER", str(new)]
    if period > 0:
        overrides += ["TEST.EVAL_PERIOD", str(max(10, new // max(1, n_evals)))]
    return overrides


def train(args, train_dir: str, log_path: str, overrides: list[str]) -> None:
    opts = [*args.opts, *overrides]
    max_iter = int(_config_value(args.config_file, opts, "SOLVER.MAX_ITER"))
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "train_net.py"),
        "--config-file",
        args.config_file,
        *opts,
        "OUTPUT_DIR",
        train_dir,
    ]
    print(f"Training: {' '.join(cmd[1:])}\n  (full log: {log_path})", flush=True)
    shutil.rmtree(train_dir, ignore_errors=True)  # metrics.json is appended to: start afresh
    progress = Progress(max_iter)
    tail = deque(maxlen=60)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with (
        open(log_path, "w") as log,
        subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        ) as proc,
    ):
        for line in proc.stdout:
            log.write(line)
            tail.append(line)
            m = ITER_RE.search(line)
            if m:
                eta = ETA_RE.search(line)
                progress.update(
                    int(m.group(1)) + 1, float(m.group(2)), eta.group(1) if eta else None
                )
            elif "Start inference on" in line:
                progress.update(state="evaluating on val")
            elif "Evaluation results for" in line or "copypaste: Task" in line:
                progress.update(state="evaluated")
        proc.wait()
    progress.close()
    if proc.returncode != 0:
        sys.stdout.write("".join(tail))
        raise SystemExit(f"train_net.py failed (exit code {proc.returncode}); log: {log_path}")


def metrics_table(metrics: dict[str, float]) -> tuple[str, str]:
    """(plain-text table for the terminal, Markdown table for the README)."""
    rows = []
    for key, (task, name, target) in METRICS.items():
        v = metrics.get(key)
        if target is None and v is None:
            continue
        value = "n/a" if v is None else f"{v:.1f}"
        reached = "" if target is None or v is None else ("yes" if v >= target else "no")
        rows.append((task, name, value, "" if target is None else f">= {target:.0f}", reached))
    header = ("Task", "Metric", "Val", "Target", "Reached")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    text = "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
    md = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(r) + " |" for r in rows]
    )
    return text, md


def draw_overlays(args, weights: str, out_dir: str, num_images: int) -> list[str]:
    val_dir = os.path.join(generate_demo_shapes.prepare_demo_shapes(), "val")
    images = [os.path.join(val_dir, f"{i:06d}.jpg") for i in range(num_images)]
    cmd = [
        sys.executable,
        os.path.join(REPO, "demo", "demo.py"),
        "--config-file",
        args.config_file,
        "--input",
        *images,
        "--output",
        out_dir,
        "--task",
        "all",
        "--ground-truth",
        "demo_shapes_panoptic_val",
        "--opts",
        *args.opts,
        "MODEL.WEIGHTS",
        weights,
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stdout.write(res.stdout[-3000:] + res.stderr[-3000:])
        raise SystemExit("demo/demo.py failed")
    return [os.path.join(out_dir, os.path.basename(p)[:-4] + ".png") for p in images]


def write_readme_assets(
    dst: str, overlays: list[str], curves: str, md_table: str, summary: str
) -> None:
    """Small PNGs for the README (palette-quantised) and the Markdown that shows them."""
    from PIL import Image

    os.makedirs(dst, exist_ok=True)
    panels = [Image.open(p).convert("RGB") for p in overlays[:2]]
    width = max(p.width for p in panels)
    sheet = Image.new(
        "RGB", (width, sum(p.height for p in panels) + 6 * (len(panels) - 1)), (255, 255, 255)
    )
    y = 0
    for p in panels:
        sheet.paste(p, (0, y))
        y += p.height + 6
    sheet = sheet.resize((sheet.width * 3 // 4, sheet.height * 3 // 4), Image.LANCZOS)
    out_overlay = os.path.join(dst, "demo_predictions.png")
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(out_overlay, optimize=True)
    out_curves = os.path.join(dst, "demo_training_curves.png")
    Image.open(curves).convert("RGB").quantize(128).save(out_curves, optimize=True)
    rel = os.path.relpath(dst, REPO)
    print("\nREADME snippet:\n")
    print(
        f"![make demo: ground truth (top) and predictions (bottom) on demo_shapes val]"
        f"({rel}/demo_predictions.png)\n"
    )
    print(md_table + "\n")
    print(summary + "\n")
    print(f"![make demo: training curves]({rel}/demo_training_curves.png)")


def main() -> None:
    args = parse_args()
    start = time.time()
    out = os.path.abspath(args.output_dir)
    train_dir = os.path.join(out, "train")
    os.makedirs(out, exist_ok=True)
    import torch

    print(
        f"Mask2Former demo on {torch.get_num_threads()} CPU thread(s); writing to {out}", flush=True
    )

    # 1. the dataset
    t = time.time()
    root = generate_demo_shapes.prepare_demo_shapes()
    print(f"Dataset demo_shapes ready in {root} ({time.time() - t:.0f} s)", flush=True)

    # 2. training, with periodic evaluation (the calibration run included: same precision)
    log_path = os.path.join(out, "train.log")
    if not args.skip_train:
        args.opts = [*precision_overrides(args.precision), *args.opts]  # the user's opts win
        overrides = plan_iterations(args, out, start)
        train(args, train_dir, log_path, overrides)
    weights = os.path.join(train_dir, "model_final.pth")
    metrics_json = os.path.join(train_dir, "metrics.json")
    if not os.path.exists(weights):
        raise SystemExit(f"No trained model at {weights}; run without --skip-train.")
    train_time = time.time() - start

    # 3. the metrics
    records = plot_training_curves.read_metrics(metrics_json)
    metrics = plot_training_curves.last_metrics(records)
    text, md = metrics_table(metrics)
    with open(os.path.join(out, "metrics.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1, sort_keys=True)

    # 4. curves, 5. overlays
    curves = plot_training_curves.plot(metrics_json, os.path.join(out, "training_curves.png"))
    overlays = draw_overlays(args, weights, os.path.join(out, "overlays"), args.num_images)

    iters = max((r["iteration"] + 1 for r in records if "total_loss" in r), default=0)
    print(
        f"\nResults on demo_shapes val after {iters} iterations ({_fmt(time.time() - start)} "
        f"min:s in all, {_fmt(train_time)} up to the end of training):\n"
    )
    print(text)
    print("\nWritten:")
    print(f"  model            {weights}")
    print(f"  training log     {log_path}")
    print(f"  metrics          {os.path.join(out, 'metrics.md')} (and metrics.json)")
    print(f"  training curves  {curves}")
    print(
        f"  overlays         {os.path.dirname(overlays[0])}/ ({len(overlays)} images: input | "
        "panoptic | instance | semantic, ground truth above predictions)"
    )
    if args.readme_assets:
        summary = (
            f"`make demo`: {iters} iterations, {_fmt(time.time() - start)} (min:s) in "
            f"all on {torch.get_num_threads()} CPU threads."
        )
        write_readme_assets(args.readme_assets, overlays, curves, md, summary)

    # Paths relative to where the user is (the config file is read relative to the repository,
    # where the training and demo subprocesses run).
    def here(path: str) -> str:
        return os.path.relpath(os.path.join(REPO, path))

    print(
        f"\nTry the model on your own images (from {os.getcwd()}):\n  "
        f"{here(os.path.join('.venv', 'bin', 'python'))} {here(os.path.join('demo', 'demo.py'))} "
        f"--config-file {here(args.config_file)} --input <image|folder|glob> --output out/ "
        f"--weights {here(weights)}"
    )


if __name__ == "__main__":
    main()
