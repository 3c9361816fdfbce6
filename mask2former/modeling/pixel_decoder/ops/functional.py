"""Multi-scale deformable attention, the functional core (Deformable DETR, Zhu et al. 2021, Eq. 3).

Glossary of shape letters:
    N  batch                 S  value positions, sum of H_l * W_l over levels
    M  attention heads       D  channels per head
    Lq queries               L  feature levels       P  sampling points per level and head

For every query, head, level and point the value map of that level is sampled bilinearly at a
normalised location (x, y) in [0, 1] (pixel-centre convention of `grid_sample(align_corners=False)`:
pixel j covers [j/W, (j+1)/W]; samples outside the map read zeros), and the samples are summed with
the attention weights. Three backends compute the same function; `backends.py` picks one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .backends import select_backend


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int = 64,
    *,
    shapes: list[tuple[int, int]] | None = None,
) -> Tensor:
    """Multi-scale deformable attention with the automatically chosen (or forced) backend.

    Under `torch.export` (and so the ONNX exporter) the `grid_sample` formulation always runs:
    the compiled kernels are opaque to the exporter, `grid_sample` is a standard op.

    Args:
        value: (N, S, M, D) values of all levels, flattened level by level.
        spatial_shapes: (L, 2) int64, (H_l, W_l) of each level.
        level_start_index: (L,) int64, offset of each level in S.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y); may lie outside [0, 1].
        attention_weights: (N, Lq, M, L, P), normally a softmax over L * P.
        im2col_step: accepted for compatibility with the published op; the compiled kernels
            process the whole batch in one launch, so it has no effect.
        shapes: the same (H_l, W_l) as Python ints, when the caller has them: the `grid_sample`
            path then does not read `spatial_shapes` back (a host sync on CUDA; impossible
            under `torch.export`, where sizes are symbolic).

    Returns:
        (N, Lq, M * D) in value's dtype.
    """
    del im2col_step  # see docstring
    _check_shapes(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, shapes
    )
    backend = None if torch.compiler.is_exporting() else select_backend(value.device.type)
    if backend is None or backend.ext is None:
        return ms_deform_attn_pytorch(
            value,
            spatial_shapes if shapes is None else shapes,
            sampling_locations,
            attention_weights,
        )
    return MSDeformAttnFunction.apply(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, backend.ext
    )


def ms_deform_attn_pytorch(
    value: Tensor,
    spatial_shapes: Tensor | list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """The `grid_sample` formulation; runs anywhere autograd does (and exports to standard ops).

    Shapes as in `ms_deform_attn`; `spatial_shapes` may also be the (H_l, W_l) as Python ints.
    """
    N, _, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    if isinstance(spatial_shapes, Tensor):
        shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    else:
        shapes = list(spatial_shapes)
    value_list = value.to(dtype).split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations.to(dtype) - 1  # grid_sample wants [-1, 1]
    samples = []
    for lvl, (h, w) in enumerate(shapes):
        v = value_list[lvl].flatten(2).transpose(1, 2).reshape(N * M, D, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (N*M, Lq, P, 2)
        samples.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1)  # (N*M, D, Lq)
    return out.view(N, M * D, Lq).transpose(1, 2).to(value.dtype).contiguous()


class MSDeformAttnFunction(torch.autograd.Function):
    """Autograd wrapper around a compiled extension (`forward` / `backward` entry points).

    The kernels read sampling locations and attention weights in the accumulation type (float32,
    or float64 for float64 values), so a bfloat16 value map does not round the locations.
    """

    @staticmethod
    def forward(
        ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, ext
    ):
        acc = torch.float64 if value.dtype == torch.float64 else torch.float32
        loc = sampling_locations.to(acc).contiguous()
        attn = attention_weights.to(acc).contiguous()
        value = value.contiguous()
        spatial_shapes = spatial_shapes.to(value.device, torch.int64).contiguous()
        level_start_index = level_start_index.to(value.device, torch.int64).contiguous()
        ctx.ext = ext
        ctx.dtypes = (sampling_locations.dtype, attention_weights.dtype)
        ctx.save_for_backward(value, spatial_shapes, level_start_index, loc, attn)
        return ext.forward(value, spatial_shapes, level_start_index, loc, attn)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, loc, attn = ctx.saved_tensors
        grad_value, grad_loc, grad_attn = ctx.ext.backward(
            value, spatial_shapes, level_start_index, loc, attn, grad_output.contiguous()
        )
        loc_dtype, attn_dtype = ctx.dtypes
        return grad_value, None, None, grad_loc.to(loc_dtype), grad_attn.to(attn_dtype), None


def _check_shapes(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, shapes=None
):
    if value.dim() != 4:
        raise ValueError(f"value must be (N, S, M, D), got {tuple(value.shape)}")
    N, S, M, _ = value.shape
    L = spatial_shapes.shape[0]
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            f"sampling_locations must be (N, Lq, M, L, P, 2), got {tuple(sampling_locations.shape)}"
        )
    n, lq, m, levels, p, _ = sampling_locations.shape
    if (n, m, levels) != (N, M, L) or tuple(attention_weights.shape) != (n, lq, m, levels, p):
        raise ValueError(
            "inconsistent shapes: value (N, S, M, D) = "
            f"{tuple(value.shape)}, spatial_shapes (L, 2) = {tuple(spatial_shapes.shape)}, "
            f"sampling_locations (N, Lq, M, L, P, 2) = {tuple(sampling_locations.shape)}, "
            f"attention_weights (N, Lq, M, L, P) = {tuple(attention_weights.shape)}"
        )
    if tuple(level_start_index.shape) != (L,):
        raise ValueError(f"level_start_index must be ({L},), got {tuple(level_start_index.shape)}")
    if shapes is not None:
        if len(shapes) != L:
            raise ValueError(f"shapes has {len(shapes)} levels, spatial_shapes {L}")
        total = sum(h * w for h, w in shapes)
        if isinstance(total, int) and total != S:  # symbolic under torch.export: not checked
            raise ValueError(f"value has S={S} positions but shapes {shapes} sum to {total}")
    elif not torch.compiler.is_compiling() and int(spatial_shapes.prod(1).sum()) != S:
        raise ValueError(
            f"value has S={S} positions but spatial_shapes {spatial_shapes.tolist()} sum to "
            f"{int(spatial_shapes.prod(1).sum())}"
        )
