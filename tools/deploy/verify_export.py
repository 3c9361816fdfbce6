#!/usr/bin/env python
"""Check an exported model against the PyTorch model on a dataset (docs/deploy.md, "Verify").

    python tools/deploy/verify_export.py --config-file CFG --exported DIR/model.onnx \
        [--dataset NAME] [--max-images N] [--evaluate] [--opts MODEL.WEIGHTS model_final.pth ...]

Runs the eager network and the exported file (`.onnx` on ONNX Runtime, `.pt2` as the exported
program) on the test images of `--dataset` (default: the config's first DATASETS.TEST), both with
the model's post-processing, and prints per-image agreement: max |diff| of pred_logits and
pred_masks, the share of pixels with the same panoptic category and semantic class, and whether the
instance classes are equal. `--evaluate` also runs the dataset's evaluator on both and prints the
metrics side by side. Exit status 1 when a check fails (max |diff| > --atol, a panoptic or
semantic agreement below --min-agreement, different instance classes), naming it.
"""

import argparse
import itertools
import os
import sys

import torch

# Running from a checkout without `pip install -e .`: make the package importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from detectron2.evaluation import inference_on_dataset  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import mask2former  # noqa: E402,F401  (registers the model parts)
from mask2former.config import load_config  # noqa: E402
from mask2former.deploy import ExportableMaskFormer, ExportedModel  # noqa: E402
from mask2former.deploy.verify import Agreement, compare  # noqa: E402
from mask2former.engine.trainer import Trainer  # noqa: E402
from mask2former.evaluation.agreement import (  # noqa: E402
    headline_metrics,
    print_metrics,
    print_verdict,
)
from mask2former.predictor import load_weights  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE", help="the export's config")
    p.add_argument("--exported", required=True, metavar="FILE", help="model.onnx or model.pt2")
    p.add_argument("--dataset", default="", help="a registered test dataset (default: the first "
                   "of the config's DATASETS.TEST)")  # fmt: skip
    p.add_argument("--max-images", type=int, default=0, help="compare only the first N (0: all)")
    p.add_argument("--evaluate", action="store_true", help="also compare the dataset's metrics")
    p.add_argument("--atol", type=float, default=1e-4, help="max |diff| allowed (default 1e-4)")
    p.add_argument("--min-agreement", type=float, default=0.999, help="per image (default 0.999)")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    return p


def failures(agreement: Agreement, atol: float, min_agreement: float) -> list[str]:
    """The checks that failed, each a line naming it and the worst value."""
    failed = []
    for name, diffs in (
        ("pred_logits", agreement.logits_diff),
        ("pred_masks", agreement.masks_diff),
    ):
        if diffs and max(diffs) > atol:
            failed.append(f"max |diff| of {name} {max(diffs):.3g} > --atol {atol:g}")
    for name, shares in (("panoptic", agreement.panoptic), ("semantic", agreement.semantic)):
        if shares and min(shares) < min_agreement:
            image = shares.index(min(shares))
            failed.append(
                f"{name} agreement {min(shares):.5f} < --min-agreement {min_agreement:g} "
                f"(image {image})"
            )
    differ = [i for i, same in enumerate(agreement.instance_classes_equal) if not same]
    if differ:
        failed.append(
            f"instance classes differ on {len(differ)} image(s), first: image {differ[0]}"
        )
    return failed


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="mask2former")
    cfg = load_config(args.config_file, ["MODEL.DEVICE", "cpu", *args.opts])
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit(
            "verify_export.py: MODEL.WEIGHTS is empty, so the PyTorch side would be a new random "
            "model, not the one exported. Pass the exported weights: --opts MODEL.WEIGHTS FILE"
        )
    model = build_model(cfg).eval()
    load_weights(model, cfg.MODEL.WEIGHTS)  # clear errors; refuses a mismatched file
    reference = ExportedModel(cfg, None, runner=ExportableMaskFormer(model).eval())
    exported = ExportedModel(cfg, args.exported)
    name = args.dataset or cfg.DATASETS.TEST[0]
    loader = Trainer.build_test_loader(cfg, name)
    batches = itertools.islice(loader, args.max_images) if args.max_images > 0 else loader
    agreement = compare(reference, exported, batches)
    print(f"\n{args.exported} vs the PyTorch model on {name}:")
    for what, value in agreement.rows():
        print(f"  {what:<30} {value}")
    if args.evaluate:
        scores = []
        for side, m in (("pytorch", model), ("exported", exported)):
            folder = os.path.join(cfg.OUTPUT_DIR, "verify_export", side, name)  # one each
            evaluator = Trainer.build_evaluator(cfg, name, output_folder=folder)
            with torch.no_grad():
                scores.append(headline_metrics(inference_on_dataset(m, loader, evaluator)))
        print_metrics(scores[0], scores[1], ("PyTorch", "exported"))
    return print_verdict(failures(agreement, args.atol, args.min_agreement))


if __name__ == "__main__":
    raise SystemExit(main())
