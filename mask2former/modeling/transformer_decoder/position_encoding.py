"""Sine positional encoding of a 2-D feature map (DETR; Sec. 3.2.2 "sinusoidal positional embedding")."""

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """The DETR sine/cosine encoding of (y, x), normalised to [0, scale] when `normalize`.

    Output channels = 2 * num_pos_feats: the first half encodes y, the second x. It has no
    parameters; with no padding mask every image of the batch gets the same encoding.
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000,
        normalize: bool = False,
        scale: float | None = None,
    ):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: `scale` is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W) (only its shape and device are used); mask: (B, H, W) bool, True = pad.

        Returns (B, 2 * num_pos_feats, H, W) float32.
        """
        if mask is None:
            # Same encoding for every image: compute it once and broadcast over the batch.
            not_mask = torch.ones((1, x.size(2), x.size(3)), device=x.device, dtype=torch.bool)
        else:
            not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)

        pos_x = x_embed[:, :, :, None] / dim_t  # (B, H, W, F)
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack(
            (pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4
        ).flatten(3)
        pos_y = torch.stack(
            (pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4
        ).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)  # (B, 2F, H, W)
        if mask is None:
            pos = pos.expand(x.size(0), -1, -1, -1)
        return pos

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_pos_feats={self.num_pos_feats}, "
            f"temperature={self.temperature}, normalize={self.normalize}, scale={self.scale:.4f})"
        )
