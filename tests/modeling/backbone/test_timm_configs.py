"""The timm-backbone configs (configs/*/timm/) build, with the timm trunk's parameter count."""

from pathlib import Path

import pytest
import timm
import torch
from detectron2.modeling import build_model

import mask2former  # noqa: F401
from mask2former.config import load_config
from mask2former.modeling.backbone.timm import TimmBackbone

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
TIMM_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if "timm" in p.relative_to(CONFIGS).parts)


def test_timm_configs_present():
    names = {str(p.relative_to(CONFIGS)) for p in TIMM_CONFIGS}
    assert {
        "coco/panoptic-segmentation/timm/maskformer2_convnext_tiny_bs16_50ep.yaml",
        "coco/panoptic-segmentation/timm/maskformer2_vit_small_simple_pyramid_bs16_50ep.yaml",
        "ade20k/semantic-segmentation/timm/maskformer2_convnext_tiny_bs16_160k.yaml",
    } <= names


@pytest.mark.parametrize("path", TIMM_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_timm_config_builds(path):
    # PRETRAINED off: no network in the tests; the architecture is the same.
    cfg = load_config(str(path), ["MODEL.DEVICE", "meta", "MODEL.TIMM.PRETRAINED", "False"])
    with torch.device("meta"):
        model = build_model(cfg)
        full = timm.create_model(cfg.MODEL.TIMM.NAME)
    backbone = model.backbone
    assert isinstance(backbone, TimmBackbone)
    assert list(backbone.output_shape()) == list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
    # the trunk is timm's model without its classifier head and final norm
    dropped = sum(
        p.numel() for n, p in full.named_parameters() if n.startswith(("head", "norm.", "fc_norm"))
    )
    trunk = sum(p.numel() for p in backbone.body.parameters())
    assert trunk == sum(p.numel() for p in full.parameters()) - dropped
    mean = [255 * m for m in full.pretrained_cfg["mean"]]
    assert list(cfg.MODEL.PIXEL_MEAN) == pytest.approx(mean, abs=0.01)
    assert cfg.MODEL.WEIGHTS == ""
