from .swin import D2SwinTransformer
from .timm import TimmBackbone

__all__ = ["D2SwinTransformer", "TimmBackbone"]
