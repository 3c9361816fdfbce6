"""Slow float64 references shared by the modeling tests (written from the definitions)."""

import itertools
import math

import torch


def bilinear64(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Sample (R, H, W) at points (P, 2) or (R, P, 2), (x, y) in [0, 1] -> (R, P) float64.

    Pixel (i, j) covers [j, j+1] x [i, i+1] / (W, H), its value sits at its centre; bilinear
    between centres, zero outside the mask (grid_sample's align_corners=False, zero padding).
    """
    masks = masks.double()
    r, h, w = masks.shape
    if coords.dim() == 2:
        coords = coords[None].expand(r, -1, -1)
    out = torch.zeros(r, coords.shape[1], dtype=torch.float64)
    for k in range(r):
        for p, (x, y) in enumerate(coords[k].double().tolist()):
            u, v = x * w - 0.5, y * h - 0.5
            u0, v0 = math.floor(u), math.floor(v)
            for du, dv in itertools.product((0, 1), (0, 1)):
                uu, vv = u0 + du, v0 + dv
                if 0 <= uu < w and 0 <= vv < h:
                    weight = (1 - abs(u - uu)) * (1 - abs(v - vv))
                    out[k, p] += weight * masks[k, vv, uu]
    return out
