"""Shared set-up of the timm backbone tests: tiny variants of four timm families."""

import torch
from detectron2.modeling import build_backbone

import mask2former  # noqa: F401  (registers TimmBackbone)
from mask2former.config import load_config

# name -> (timm model, constructor kwargs shrinking it for the tests)
FAMILIES = {
    "resnet18": ("resnet18", {}),  # CNN with BatchNorm
    "convnext": ("convnext_atto", {}),
    "swinv2": (  # hierarchical transformer, shrunk: 1 block per stage, 16 channels, 4x4 windows
        "swinv2_tiny_window8_256",
        {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4},
    ),
    "vit": ("vit_tiny_patch16_224", {"depth": 2}),  # plain ViT -> simple feature pyramid
}


def timm_cfg(family: str, **timm_keys):
    """A config with MODEL.BACKBONE.NAME TimmBackbone for `family`; MODEL.TIMM.<k> = v."""
    name, kwargs = FAMILIES[family]
    cfg = load_config("", ["MODEL.BACKBONE.NAME", "TimmBackbone"], freeze=False)
    cfg.MODEL.TIMM.NAME = name
    cfg.MODEL.TIMM.PYRAMID_CHANNELS = 32
    for k, v in kwargs.items():
        cfg.MODEL.TIMM.KWARGS[k] = v
    for k, v in timm_keys.items():
        setattr(cfg.MODEL.TIMM, k, v)
    return cfg


def build(family: str, seed: int = 0, **timm_keys):
    torch.manual_seed(seed)
    return build_backbone(timm_cfg(family, **timm_keys))
