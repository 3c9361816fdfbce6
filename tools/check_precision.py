#!/usr/bin/env python
"""Check reduced-precision inference (TEST.AMP) against fp32 on a dataset (docs/model.md).

    python tools/check_precision.py --config-file CFG [--precision bfloat16|float16] \
        [--dataset NAME] [--max-images N] [--evaluate] [--allow-emulated] \
        [--top-k 20] [--min-score 0.1] [--opts MODEL.WEIGHTS model_final.pth ...]

Runs the config's model with its weights on each test image of `--dataset` (default: the config's
first DATASETS.TEST) twice, in fp32 and with TEST.AMP in `--precision` (on a CPU: bf16), both with
the float32 post-processing, and prints the per-image agreement
(mask2former.evaluation.agreement): semantic argmax, panoptic category, and instances (every
detection scoring >= --min-score among either run's top --top-k has a partner of its class in the
other's top k; the IoU of those masks, pooled (sum of intersections / sum of unions) and per
instance; the exact top-k class sequence for information).
`--evaluate` also feeds both runs' results to the dataset's evaluator and prints the metrics side
by side (their files in OUTPUT_DIR/check_precision/{fp32,bf16}/<dataset>/).

Exit status 1 when a goal is missed, each named: a semantic or panoptic agreement below
--min-agreement (0.99), instance classes that differ, a pooled matched mask IoU below --min-iou
(0.95; per instance, a 9-pixel mask that loses two pixels would be 0.78), a metric further than
--max-metric-diff (0.5 points) from fp32.

On a CPU without native bf16 TEST.AMP runs fp32 (nothing to compare), so the tool refuses unless
--allow-emulated: bf16 then runs emulated, the same numbers as a CPU with AMX gives, at a fraction
of the speed (the demo model: 7.4 s per image on a 2-core AVX2 CPU against 0.14 s in fp32).
"""

import argparse
import itertools
import os
import sys
import time

import torch
from tqdm import tqdm

# Running from a checkout without `pip install -e .`: make the package importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import mask2former  # noqa: E402,F401  (registers the model parts)
from mask2former.config import load_config  # noqa: E402
from mask2former.engine.trainer import Trainer  # noqa: E402
from mask2former.evaluation import agreement as agree  # noqa: E402
from mask2former.modeling.inference_precision import InferencePrecision  # noqa: E402
from mask2former.predictor import load_weights  # noqa: E402

SHORT = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--precision", default="bfloat16", choices=["bfloat16", "float16"],
                   help="TEST.AMP.PRECISION to check (a CPU always runs bfloat16)")  # fmt: skip
    p.add_argument("--dataset", default="", help="a registered test dataset (default: the first "
                   "of the config's DATASETS.TEST)")  # fmt: skip
    p.add_argument("--max-images", type=int, default=0, help="compare only the first N (0: all)")
    p.add_argument("--evaluate", action="store_true", help="also compare the dataset's metrics")
    p.add_argument("--allow-emulated", action="store_true",
                   help="run bf16 on a CPU without native bf16 (slow, same numbers)")  # fmt: skip
    p.add_argument("--top-k", type=int, default=20, help="instances compared per image (20)")
    p.add_argument("--min-score", type=float, default=0.1,
                   help="instances below this score may differ in rank (0.1)")  # fmt: skip
    p.add_argument("--min-agreement", type=float, default=0.99, help="per image (0.99)")
    p.add_argument("--min-iou", type=float, default=0.95,
                   help="pooled over the matched instances of all images (0.95)")  # fmt: skip
    p.add_argument("--max-metric-diff", type=float, default=0.5, help="points (0.5)")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return p


class Summary:
    """Per-image agreement of the reduced-precision run with fp32 (lists in image order)."""

    def __init__(self):
        self.semantic: list[float] = []
        self.panoptic: list[float] = []
        self.instances: list[agree.InstanceAgreement] = []
        self.seconds = {"fp32": 0.0, "low": 0.0}

    def add(self, a: dict, b: dict, top_k: int, min_score: float) -> None:
        if "sem_seg" in a:
            self.semantic.append(agree.semantic_agreement(a, b))
        if "panoptic_seg" in a:
            self.panoptic.append(agree.panoptic_agreement(a, b))
        if "instances" in a:
            self.instances.append(agree.instance_agreement(a, b, top_k, min_score))

    def rows(self, low: str, top_k: int, min_score: float, min_iou: float) -> list[tuple[str, str]]:
        n = max(len(self.semantic), len(self.panoptic), len(self.instances))

        def worst_mean(values: list[float]) -> str:
            if not values:
                return "- (output off)"
            return f"min {min(values):.5f}, mean {sum(values) / len(values):.5f}"

        rows = [
            ("images", str(n)),
            (
                "seconds per image",
                f"fp32 {self.seconds['fp32'] / max(n, 1):.3f}, "
                f"{low} {self.seconds['low'] / max(n, 1):.3f}",
            ),  # fmt: skip
            ("semantic argmax agreement", worst_mean(self.semantic)),
            ("panoptic category agreement", worst_mean(self.panoptic)),
        ]
        if self.instances:
            overlaps = [o for i in self.instances for o in i.overlaps]
            ious = [iou for i in self.instances for iou in i.ious]
            same = sum(i.classes_equal for i in self.instances)
            strict = sum(i.strict_classes_equal for i in self.instances)
            below = sum(iou < min_iou for iou in ious)
            rows += [
                (f"instances, score >= {min_score:g}", f"same classes on {same} of {n} images"),
                ("  matched mask IoU, pooled", f"{agree.pooled_iou(overlaps):.5f}"),
                (
                    "  per instance",
                    worst_mean(ious) + f"; {below} of {len(ious)} below {min_iou:g}",
                ),
                (f"  exact top-{top_k} class order", f"{strict} of {n} images (information)"),
            ]
        return rows

    def failures(self, min_agreement: float, min_iou: float) -> list[str]:
        failed = []
        for name, shares in (("semantic", self.semantic), ("panoptic", self.panoptic)):
            if shares and min(shares) < min_agreement:
                failed.append(
                    f"{name} agreement {min(shares):.5f} < --min-agreement {min_agreement:g} "
                    f"(image {shares.index(min(shares))})"
                )
        differ = [k for k, i in enumerate(self.instances) if not i.classes_equal]
        if differ:
            failed.append(
                f"instance classes differ on {len(differ)} image(s), first: image {differ[0]}"
            )
        pooled = agree.pooled_iou([o for i in self.instances for o in i.overlaps])
        if pooled < min_iou:
            failed.append(f"pooled matched mask IoU {pooled:.4f} < --min-iou {min_iou:g}")
        return failed


def metric_failures(fp32: dict, low: dict, max_diff: float) -> list[str]:
    return [
        f"{key} {low.get(key, float('nan')):.2f} vs fp32 {value:.2f}: "
        f"more than --max-metric-diff {max_diff:g} apart"
        for key, value in fp32.items()
        if not abs(low.get(key, float("nan")) - value) <= max_diff
    ]


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.evaluate and args.max_images > 0:
        raise SystemExit(
            "check_precision.py: --evaluate scores the whole split (PQ and AP need every image); "
            "drop --max-images, or drop --evaluate to compare the first N images only."
        )
    setup_logger(name="mask2former")
    cfg = load_config(args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit(
            "check_precision.py: MODEL.WEIGHTS is empty, so both runs would use a new random "
            "model. Pass the trained weights: --opts MODEL.WEIGHTS FILE"
        )
    model = build_model(cfg).eval()
    load_weights(model, cfg.MODEL.WEIGHTS)  # clear errors; refuses a mismatched file
    runs = {
        "fp32": InferencePrecision(False),
        "low": InferencePrecision(True, args.precision, allow_emulated=args.allow_emulated),
    }
    low_dtype = runs["low"].dtype(model.device)
    if low_dtype is None:
        raise SystemExit(
            f"check_precision.py: {args.precision} inference falls back to fp32 on this "
            f"{model.device.type} (no native bf16: see the log line above), so there is nothing "
            "to compare. Add --allow-emulated to run bf16 emulated (slow, same numbers)."
        )
    low_name = SHORT[low_dtype]
    name = args.dataset or cfg.DATASETS.TEST[0]
    loader = Trainer.build_test_loader(cfg, name)
    batches = itertools.islice(loader, args.max_images) if args.max_images > 0 else loader
    evaluators = {}
    if args.evaluate:  # one folder each: the evaluators write prediction and results files
        folder = os.path.join(cfg.OUTPUT_DIR, "check_precision", "{}", name)
        names = {"fp32": "fp32", "low": low_name}
        evaluators = {
            key: Trainer.build_evaluator(cfg, name, output_folder=folder.format(names[key]))
            for key in runs
        }
    for evaluator in evaluators.values():
        evaluator.reset()
    summary = Summary()
    # The evaluators report their own progress.
    progress = tqdm(batches, desc=f"fp32 and {low_name}", unit="image", disable=bool(evaluators))
    for batch in progress:
        outputs = {}
        for key, precision in runs.items():
            model.inference_precision = precision
            start = time.perf_counter()
            with torch.no_grad():
                outputs[key] = model(batch)
            summary.seconds[key] += time.perf_counter() - start
            if evaluators:
                evaluators[key].process(batch, outputs[key])
        for a, b in zip(outputs["fp32"], outputs["low"]):
            summary.add(a, b, args.top_k, args.min_score)
    print(f"\n{low_name} vs fp32 on {name}:")
    for what, value in summary.rows(low_name, args.top_k, args.min_score, args.min_iou):
        print(f"  {what:<30} {value}")
    failed = summary.failures(args.min_agreement, args.min_iou)
    if evaluators:
        scores = {key: agree.headline_metrics(e.evaluate()) for key, e in evaluators.items()}
        agree.print_metrics(scores["fp32"], scores["low"], ("fp32", low_name))
        failed += metric_failures(scores["fp32"], scores["low"], args.max_metric_diff)
    return agree.print_verdict(failed)


if __name__ == "__main__":
    raise SystemExit(main())
