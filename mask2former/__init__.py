"""Mask2Former: masked-attention mask transformer for universal image segmentation.

Importing the package registers its datasets, model parts and evaluators with Detectron2.
"""

from . import (
    data,  # noqa: F401  (registers datasets and mappers)
    evaluation,  # noqa: F401
    modeling,  # noqa: F401  (registers backbones, heads, pixel/transformer decoders)
)
from .config import add_maskformer2_config, load_config
from .maskformer_model import MaskFormer

__all__ = ["MaskFormer", "add_maskformer2_config", "load_config"]
