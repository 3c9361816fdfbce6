"""Pixel decoders: the builder and the plain FPN `BasePixelDecoder` (Table 4e).

A pixel decoder is a module with `forward_features(features) -> (mask_features, extra,
multi_scale_features)`: per-pixel embeddings at 1/4 (B, D, H/4, W/4), an optional extra output
(the encoder memory, or None) and the 3 maps fed to the transformer decoder, lowest resolution
first (1/32, 1/16, 1/8). As in the published code, pixel decoders are registered in
detectron2's `SEM_SEG_HEADS_REGISTRY` and picked by `MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME`.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from fvcore.nn import weight_init
from torch import nn


def build_pixel_decoder(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Build the pixel decoder named by `cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME`."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    if name not in SEM_SEG_HEADS_REGISTRY:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} is not registered; known pixel "
            "decoders: BasePixelDecoder, MSDeformAttnPixelDecoder (or register your own in "
            "detectron2's SEM_SEG_HEADS_REGISTRY)"
        )
    model = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(
            f"Pixel decoder {name} has no `forward_features(features)` method; every pixel "
            "decoder must return (mask_features, extra_or_None, multi_scale_features) from it"
        )
    return model


def add_fpn_convs(
    module: nn.Module,
    feature_channels: list[int],
    conv_dim: int,
    norm: str | Callable | None,
    *,
    coarsest_without_lateral: bool = False,
) -> tuple[list[nn.Module | None], list[nn.Module]]:
    """Build the FPN convs of a pixel decoder and register them on `module`.

    Per level `idx` (feature_channels from high to low resolution, e.g. res2..res5): a 1x1
    lateral conv registered as `adapter_{idx + 1}` and a 3x3 output conv (ReLU) registered as
    `layer_{idx + 1}`, both normalised by `norm` and c2-xavier initialised (these names are the
    published checkpoints' parameter names). With `coarsest_without_lateral` the last level has
    no lateral conv (None) and its output conv reads the `feature_channels[-1]` input directly.

    Returns (lateral_convs, output_convs) in top-down order (low to high resolution), as plain
    lists: the modules are registered on `module` under the names above.
    """
    lateral_convs, output_convs = [], []
    use_bias = norm == ""
    for idx, in_channels in enumerate(feature_channels):
        if coarsest_without_lateral and idx == len(feature_channels) - 1:
            lateral_conv = None
            output_in_channels = in_channels
        else:
            lateral_conv = Conv2d(
                in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim)
            )
            output_in_channels = conv_dim
        output_conv = Conv2d(
            output_in_channels,
            conv_dim,
            kernel_size=3,
            stride=1,
            padding=1,
            bias=use_bias,
            norm=get_norm(norm, conv_dim),
            activation=F.relu,
        )
        if lateral_conv is not None:
            weight_init.c2_xavier_fill(lateral_conv)
            module.add_module(f"adapter_{idx + 1}", lateral_conv)
        weight_init.c2_xavier_fill(output_conv)
        module.add_module(f"layer_{idx + 1}", output_conv)
        lateral_convs.append(lateral_conv)
        output_convs.append(output_conv)
    return lateral_convs[::-1], output_convs[::-1]


def pixel_decoder_config(cfg, input_shape: dict[str, ShapeSpec]) -> dict:
    """The `from_config` arguments every pixel decoder takes: the backbone features named in
    `MODEL.SEM_SEG_HEAD.IN_FEATURES`, and SEM_SEG_HEAD's CONVS_DIM, MASK_DIM and NORM."""
    return {
        "input_shape": {
            k: v for k, v in input_shape.items() if k in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
        },
        "conv_dim": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
        "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
        "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
    }


@SEM_SEG_HEADS_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    """FPN: top-down path with nearest upsampling over res5..res2, then a 3x3 conv to mask_dim."""

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        conv_dim: int,
        mask_dim: int,
        norm: str | Callable | None = None,
    ):
        super().__init__()
        input_shape = sorted(input_shape.items(), key=lambda x: x[1].stride)
        self.in_features = [k for k, v in input_shape]  # "res2" .. "res5"
        feature_channels = [v.channels for k, v in input_shape]

        # The coarsest level (res5) has no lateral conv: its output conv reads the backbone map.
        self.lateral_convs, self.output_convs = add_fpn_convs(
            self, feature_channels, conv_dim, norm, coarsest_without_lateral=True
        )

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = 3  # always 3 scales

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        return pixel_decoder_config(cfg, input_shape)

    def forward_features(self, features: dict[str, torch.Tensor]):
        """features: {"res2": (B, C2, H/4, W/4), ..., "res5": (B, C5, H/32, W/32)}."""
        multi_scale_features = []
        y = None
        for idx, f in enumerate(self.in_features[::-1]):
            x = features[f]
            lateral_conv, output_conv = self.lateral_convs[idx], self.output_convs[idx]
            if lateral_conv is None:
                y = output_conv(x)
            else:
                cur_fpn = lateral_conv(x)
                y = output_conv(cur_fpn + F.interpolate(y, size=cur_fpn.shape[-2:], mode="nearest"))
            if len(multi_scale_features) < self.maskformer_num_feature_levels:
                multi_scale_features.append(y)
        return self.mask_features(y), None, multi_scale_features

    def forward(self, features):
        raise NotImplementedError("pixel decoders are called through forward_features(features)")
