"""Models for the deployment tests: real configs, random weights, CPU."""

from pathlib import Path

import torch
from detectron2.modeling import build_model

import mask2former  # noqa: F401  (registers the model parts)
from mask2former.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CASES = {
    "R50": "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "SwinT": "coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
    "demo": "demo/panoptic.yaml",
}
# All three outputs on, so every post-processing runs on the exported predictions.
ALL_OUTPUTS = [
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "True",
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "True",
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "True",
]  # fmt: skip


def build(case: str, opts=()):
    """(cfg, eval model) with random weights; the class head sharpened so that queries pass the
    panoptic/instance thresholds and post-processing has segments to compare."""
    torch.manual_seed(0)
    cfg = load_config(
        str(CONFIGS / CASES[case]),
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *ALL_OUTPUTS, *opts],
    )
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.sem_seg_head.predictor.class_embed.weight.mul_(30.0)
    return cfg, model


def image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
