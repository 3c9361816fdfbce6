"""Model parts; importing this package registers them with detectron2's registries."""

from .backbone.swin import D2SwinTransformer
from .backbone.timm import TimmBackbone
from .meta_arch.mask_former_head import MaskFormerHead
from .pixel_decoder.fpn import BasePixelDecoder
from .pixel_decoder.msdeformattn import MSDeformAttnPixelDecoder
from .transformer_decoder import TRANSFORMER_DECODER_REGISTRY, MultiScaleMaskedTransformerDecoder

__all__ = [
    "D2SwinTransformer",
    "TimmBackbone",
    "MaskFormerHead",
    "BasePixelDecoder",
    "MSDeformAttnPixelDecoder",
    "TRANSFORMER_DECODER_REGISTRY",
    "MultiScaleMaskedTransformerDecoder",
]
