"""The multi-scale deformable attention layer (Deformable DETR, Zhu et al. 2021, Sec. 4.1).

Parameter names, shapes and initialisation follow the published checkpoints, so Mask2Former
weights load unchanged. Shape letters as in `functional.py`; C = d_model = M * D.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import ms_deform_attn


class MSDeformAttn(nn.Module):
    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        """
        Args:
            d_model: hidden size C, split evenly over the heads.
            n_levels: number of feature levels L.
            n_heads: attention heads M.
            n_points: sampling points P per head and level.
        """
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = (
            d_model,
            n_levels,
            n_heads,
            n_points,
        )
        self.im2col_step = 128  # kept for compatibility with the published op; unused
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Offsets start on a star: head h points at angle 2*pi*h/M, point p at distance p+1 (in
        # pixels of each level, after the max-abs normalisation of the direction).
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)  # (M, 2)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid[:, None, None, :].repeat(1, self.n_levels, self.n_points, 1)  # (M, L, P, 2)
        grid *= torch.arange(1, self.n_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
        *,
        input_shapes: list[tuple[int, int]] | None = None,
    ) -> Tensor:
        """
        Args:
            query: (N, Lq, C).
            reference_points: (N, Lq, L, 2) normalised (x, y) in [0, 1] (offsets are then in
                pixels of each level), or (N, Lq, L, 4) boxes (cx, cy, w, h) (offsets relative
                to half the box size, divided by P).
            input_flatten: (N, S, C) all levels, flattened level by level.
            input_spatial_shapes: (L, 2) int64 (H_l, W_l).
            input_level_start_index: (L,) int64.
            input_padding_mask: (N, S) bool, True at padding (read as zero), or None.
            input_shapes: `input_spatial_shapes` as Python ints, if known (see `ms_deform_attn`).

        Returns:
            (N, Lq, C).
        """
        N, Lq, _ = query.shape
        S = input_flatten.shape[1]
        M, L, P = self.n_heads, self.n_levels, self.n_points

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(N, S, M, self.d_model // M)

        # Locations and weights in float32 even under autocast: a bf16 location in [0, 1] is only
        # good to 2^-9, over half a pixel on a 152-pixel-wide level.
        with torch.autocast(query.device.type, enabled=False):
            query = query.float() if query.dtype in (torch.bfloat16, torch.float16) else query
            offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)
            weights = self.attention_weights(query).view(N, Lq, M, L * P)
            weights = F.softmax(weights, -1).view(N, Lq, M, L, P)  # over all L*P samples
            if reference_points.shape[-1] == 2:
                normalizer = input_spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) = (W, H)
                locations = (
                    reference_points[:, :, None, :, None, :] + offsets / normalizer[:, None, :]
                )
            elif reference_points.shape[-1] == 4:
                boxes = reference_points[:, :, None, :, None, :]
                locations = boxes[..., :2] + offsets / P * boxes[..., 2:] * 0.5
            else:
                raise ValueError(
                    "reference_points must end in 2 (x, y) or 4 (cx, cy, w, h) coordinates, got "
                    f"shape {tuple(reference_points.shape)}"
                )
        out = ms_deform_attn(
            value,
            input_spatial_shapes,
            input_level_start_index,
            locations,
            weights,
            self.im2col_step,
            shapes=input_shapes,
        )  # (N, Lq, C)
        return self.output_proj(out)
