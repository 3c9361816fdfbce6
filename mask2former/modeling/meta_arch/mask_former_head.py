"""`MaskFormerHead`: the pixel decoder and the transformer decoder of Fig. 2, as one head.

Unlike the published code there is no `_load_from_state_dict` hook that rewrites checkpoint
keys: published checkpoints already carry the `pixel_decoder.` prefix, and the hook silently
broke re-saved checkpoints (upstream issues #95, #129). Names are mapped explicitly in
`mask2former/checkpoint.py` instead.
"""

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..pixel_decoder.fpn import build_pixel_decoder
from ..transformer_decoder.build import build_transformer_decoder

# The value of MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE that feeds the transformer decoder
# the pixel decoder's 3 multi-scale maps (Sec. 3.2.2). The MaskFormer-v1 choices
# ("transformer_encoder", "pixel_embedding", a backbone feature) need the v1 decoder, which
# this project does not ship.
MULTI_SCALE = "multi_scale_pixel_decoder"


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ):
        """
        Args:
            input_shape: shapes of the backbone features the head reads.
            num_classes: K, classes without the "no object" class.
            pixel_decoder: module with `forward_features(features)`.
            loss_weight, ignore_value: kept for config compatibility; unused by the mask loss.
            transformer_predictor: the transformer decoder.
            transformer_in_feature: what feeds the transformer decoder (multi_scale_pixel_decoder).
        """
        super().__init__()
        if transformer_in_feature != MULTI_SCALE:
            raise ValueError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={transformer_in_feature!r} is not "
                f"supported; set it to {MULTI_SCALE!r} (the MaskFormer-v1 inputs need the v1 decoder)"
            )
        input_shape = sorted(input_shape.items(), key=lambda x: x[1].stride)
        self.in_features = [k for k, v in input_shape]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        return {
            "input_shape": {
                k: v for k, v in input_shape.items() if k in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
            },
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "transformer_in_feature": cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE,
            "transformer_predictor": build_transformer_decoder(
                cfg, cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, mask_classification=True
            ),
        }

    def forward(self, features: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> dict:
        """features: backbone maps by name. Returns the transformer decoder's output dict."""
        return self.layers(features, mask)

    def layers(self, features: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> dict:
        mask_features, _, multi_scale_features = self.pixel_decoder.forward_features(features)
        return self.predictor(multi_scale_features, mask_features, mask)
