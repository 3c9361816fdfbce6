#!/usr/bin/env python
"""Plot losses and evaluation metrics over iterations from a detectron2 `metrics.json`.

    python tools/plot_training_curves.py output/demo/train/metrics.json -o curves.png

Left: the total loss and the final decoder layer's class / mask / dice losses (smoothed, log
scale). Right: PQ, mask AP and mIoU (whichever were evaluated) at each evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict

# Evaluation keys written by the evaluators, and how to label them.
METRIC_KEYS = {
    "panoptic_seg/PQ": "PQ",
    "panoptic_seg/PQ_th": "PQ things",
    "panoptic_seg/PQ_st": "PQ stuff",
    "segm/AP": "mask AP",
    "sem_seg/mIoU": "mIoU",
}
LOSS_KEYS = {
    "total_loss": "total (all layers, weighted)",
    "loss_ce": "class CE (last layer)",
    "loss_mask": "mask BCE (last layer)",
    "loss_dice": "dice (last layer)",
}


def read_metrics(path: str) -> list[dict]:
    """The records of a metrics.json (one JSON object per line); a restarted run's stale records
    after a later restart point are dropped."""
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a partially written last line
            if "iteration" in rec:
                records.append(rec)
    return records


def series(records: list[dict], keys) -> dict[str, tuple[list[int], list[float]]]:
    out = defaultdict(lambda: ([], []))
    for rec in records:
        for k in keys:
            v = rec.get(k)
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[k][0].append(rec["iteration"] + 1)
                out[k][1].append(float(v))
    return dict(out)


def last_metrics(records: list[dict]) -> dict[str, float]:
    """The most recent value of every evaluation metric (keys with a '/')."""
    out = {}
    for rec in records:
        for k, v in rec.items():
            if "/" in k and isinstance(v, (int, float)):
                out[k] = float(v)
    return out


def _smooth(values: list[float], k: int = 5) -> list[float]:
    out = []
    for i in range(len(values)):
        window = values[max(0, i - k + 1) : i + 1]
        out.append(sum(window) / len(window))
    return out


def plot(metrics_json: str, out_png: str, title: str = "Mask2Former on demo_shapes") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_json)
    losses = series(records, LOSS_KEYS)
    metrics = series(records, METRIC_KEYS)
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for k, label in LOSS_KEYS.items():
        if k in losses:
            it, v = losses[k]
            ax_l.plot(it, _smooth(v), label=label, lw=2 if k == "total_loss" else 1.2)
    ax_l.set_yscale("log")
    ax_l.set_xlabel("iteration")
    ax_l.set_title("training losses")
    ax_l.grid(alpha=0.3, which="both")
    if losses:
        ax_l.legend(fontsize=8)
    for k, label in METRIC_KEYS.items():
        if k in metrics:
            it, v = metrics[k]
            style = "--" if k.endswith(("_th", "_st")) else "-"
            ax_m.plot(it, v, style, marker="o", ms=4, label=f"{label} ({v[-1]:.1f})")
    ax_m.set_ylim(0, 100)
    ax_m.set_xlabel("iteration")
    ax_m.set_title("validation metrics")
    ax_m.grid(alpha=0.3)
    if metrics:
        ax_m.legend(fontsize=8, loc="lower right")
    else:
        ax_m.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax_m.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("metrics_json")
    p.add_argument("-o", "--output", default="training_curves.png")
    p.add_argument("--title", default="Mask2Former on demo_shapes")
    args = p.parse_args()
    print(plot(args.metrics_json, args.output, args.title))


if __name__ == "__main__":
    main()
