"""Simple feature pyramid of a plain (single-scale) ViT: ViTDet (Li et al., ECCV 2022, Sec. 3).

A plain ViT gives one feature map at stride p (its patch size). ViTDet builds the multi-scale
maps a detection head needs from that last map alone, without an FPN's top-down path:
"convolutions of strides {2, 1, 1/2, 1/4}, where a fractional stride indicates a deconvolution"
(Fig. 2 / Sec. 3), i.e. for p = 16 the strides 32, 16, 8, 4 of res5..res2:

    stride p/4: 2x2 deconv (stride 2) -> LayerNorm -> GELU -> 2x2 deconv (stride 2)
    stride p/2: 2x2 deconv (stride 2)
    stride p:   identity
    stride 2p:  2x2 max pooling (stride 2)

each followed by a 1x1 conv and a 3x3 conv, each with a LayerNorm over channels (no bias), to
`out_channels` (256 in ViTDet). Its layers are new: they train at the full learning rate even
though they sit inside the backbone (`trains_at_base_lr`, see `mask2former/solver/build.py`).
"""

import math

import torch
from timm.layers import LayerNorm2d
from torch import nn

# Scale factor of each output relative to the ViT map, finest first (Sec. 3: strides 1/4 .. 2).
SCALES = (4.0, 2.0, 1.0, 0.5)


class SimpleFeaturePyramid(nn.Module):
    """One (B, C, H/p, W/p) map -> four maps at strides p/4, p/2, p, 2p with `out_channels`."""

    # New layers trained from scratch: the solver gives them the base LR, not the backbone's.
    trains_at_base_lr = True

    def __init__(self, in_channels: int, out_channels: int = 256, scales=SCALES):
        """
        Args:
            in_channels: C, channels of the ViT map.
            out_channels: channels of every output map.
            scales: resize factor of each output relative to the input map, from
                {4.0, 2.0, 1.0, 0.5}.
        """
        super().__init__()
        unknown = [s for s in scales if s not in SCALES]
        if unknown:
            raise ValueError(f"SimpleFeaturePyramid: scales {unknown} not in {SCALES}")
        self.scales = tuple(scales)
        self.out_channels = out_channels
        self.levels = nn.ModuleList()
        for scale in self.scales:
            if scale == 4.0:
                c = in_channels // 4
                resize = nn.Sequential(
                    nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2),
                    LayerNorm2d(in_channels // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(in_channels // 2, c, 2, stride=2),
                )
            elif scale == 2.0:
                c = in_channels // 2
                resize = nn.ConvTranspose2d(in_channels, c, 2, stride=2)
            elif scale == 1.0:
                c, resize = in_channels, nn.Identity()
            else:
                c, resize = in_channels, nn.MaxPool2d(2, stride=2)
            self.levels.append(
                nn.Sequential(
                    resize,
                    nn.Conv2d(c, out_channels, 1, bias=False),
                    LayerNorm2d(out_channels),
                    nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                    LayerNorm2d(out_channels),
                )
            )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                # c2_msra_fill, as detectron2 initialises its FPN / ViTDet convs
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def strides(self, in_stride: int) -> list[int]:
        """Output strides for an input map of stride `in_stride` (e.g. 16 -> [4, 8, 16, 32])."""
        out = [in_stride / s for s in self.scales]
        if not all(float(o).is_integer() and o >= 1 for o in out):
            raise ValueError(
                f"SimpleFeaturePyramid: input stride {in_stride} gives output strides {out}; "
                "they must be whole numbers (a power-of-two patch size such as 16)"
            )
        return [int(o) for o in out]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, h, w) -> [(B, out_channels, h*s, w*s) for s in scales] (pooling floors odd h/w)."""
        return [level(x) for level in self.levels]


def is_power_of_two(n: float) -> bool:
    return n >= 1 and float(n).is_integer() and math.log2(n).is_integer()
