#!/usr/bin/env python
"""Export Mask2Former's inference network to ONNX or a torch.export program (docs/deploy.md).

    python tools/deploy/export_model.py --config-file CFG --format {onnx,torch_export} \
        --output DIR [--height H --width W] [--dynamic] [--opts MODEL.WEIGHTS model.pkl ...]

Writes DIR/model.onnx (opset 18) or DIR/model.pt2: normalisation, backbone, pixel decoder and
masked-attention decoder as one graph, (1, 3, H, W) float32 pixels -> pred_logits (1, Q, K+1),
pred_masks (1, Q, H/4, W/4). Run it with `mask2former.deploy.ExportedModel`.
"""

import argparse
import logging
import os
import sys

import torch

# Running from a checkout without `pip install -e .`: make the package importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import mask2former  # noqa: E402,F401  (registers the model parts)
from mask2former.config import load_config  # noqa: E402
from mask2former.deploy.export import FORMATS, ExportableMaskFormer, export_model  # noqa: E402
from mask2former.predictor import load_weights  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, metavar="DIR", help="directory for model.{onnx,pt2}")
    p.add_argument("--height", type=int, default=800, help="padded input height (default 800)")
    p.add_argument("--width", type=int, default=1216, help="padded input width (default 1216)")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="any height/width that is a multiple of the size divisibility (the traced "
        "--height/--width is only the example)",
    )
    p.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE config overrides"
    )
    return p


def main(argv: list[str] | None = None) -> str:
    args = get_parser().parse_args(argv)
    setup_logger(name="mask2former")
    logger = logging.getLogger("mask2former")
    cfg = load_config(args.config_file, ["MODEL.DEVICE", "cpu", *args.opts])
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        load_weights(model, cfg.MODEL.WEIGHTS)  # clear errors; refuses a mismatched file
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting random weights")
    net = ExportableMaskFormer(model).eval()
    with torch.no_grad():
        path = export_model(net, args.format, args.output, args.height, args.width, args.dynamic)
    print(path)
    return str(path)


if __name__ == "__main__":
    main()
