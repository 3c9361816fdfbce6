"""Point sampling for the mask losses (Sec. 3.3, after PointRend).

Glossary: R masks (predictions or targets), P points, (x, y) coordinates normalised to [0, 1]
over the (padded) mask, with (0, 0) the top-left corner of the top-left pixel.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def point_sample(masks: Tensor, point_coords: Tensor) -> Tensor:
    """Bilinearly sample `masks` (R, C, H, W) or (R, H, W) at `point_coords` (R, P, 2) in [0, 1].

    Returns (R, C, P), or (R, P) for 3-D input. `grid_sample` with align_corners=False, as in
    detectron2's PointRend; points outside the mask read zero.
    """
    squeeze = masks.dim() == 3
    if squeeze:
        masks = masks.unsqueeze(1)
    if masks.dtype != point_coords.dtype:
        point_coords = point_coords.to(masks.dtype)
    grid = 2.0 * point_coords.unsqueeze(2) - 1.0  # (R, P, 1, 2) in [-1, 1]
    out = F.grid_sample(masks, grid, align_corners=False)  # (R, C, P, 1)
    out = out.squeeze(3)
    return out.squeeze(1) if squeeze else out


def calculate_uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty of a binary mask logit: -|logit| (highest at the decision boundary, logit 0)."""
    return -torch.abs(logits)


def get_uncertain_point_coords_with_randomness(
    mask_logits: Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PointRend importance sampling: points biased towards uncertain regions of each mask.

    Draw k*P uniform candidates (k = `oversample_ratio`), keep the beta*P with the highest
    uncertainty (beta = `importance_sample_ratio`) and add (1-beta)*P fresh uniform points.

    Args:
        mask_logits: (R, 1, H, W) or (R, H, W) mask logits; only used to rank the candidates.
        num_points: P.
    Returns:
        (R, P, 2) point coordinates in [0, 1]; no gradient flows through the selection.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}"
        )
    num_masks = mask_logits.shape[0]
    device = mask_logits.device
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    with torch.no_grad():
        candidates = torch.rand(num_masks, num_sampled, 2, device=device, generator=generator)
        # Rank candidates by the uncertainty of the (bilinearly interpolated) logit.
        point_logits = point_sample(mask_logits.float(), candidates)
        point_logits = point_logits.reshape(num_masks, num_sampled)  # (R, k*P)
        uncertainty = calculate_uncertainty(point_logits)
        idx = torch.topk(uncertainty, k=num_uncertain, dim=1).indices  # (R, beta*P)
        coords = torch.gather(candidates, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
        if num_random > 0:
            fresh = torch.rand(num_masks, num_random, 2, device=device, generator=generator)
            coords = torch.cat([coords, fresh], dim=1)
    return coords  # (R, P, 2)
