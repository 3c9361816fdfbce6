"""Registry of transformer decoders: `MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME` picks one."""

from detectron2.utils.registry import Registry
from torch import nn

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry for transformer decoders of MaskFormer-style heads. A registered class is called as
`cls(cfg, in_channels, mask_classification)` (use `@configurable` to keep `__init__` typed) and its
`forward(multi_scale_features, mask_features, mask=None)` returns a dict with `pred_logits`,
`pred_masks` and `aux_outputs` (the deep-supervision predictions; the criterion reads them in
training, inference does not, so a decoder may leave them empty in eval mode).
"""


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True) -> nn.Module:
    """Build the transformer decoder named by `cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME`."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if name not in TRANSFORMER_DECODER_REGISTRY:
        raise ValueError(
            f"MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME={name!r} is not registered; "
            f"choose one of {sorted(k for k, _ in TRANSFORMER_DECODER_REGISTRY)}"
        )
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)
