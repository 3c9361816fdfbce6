"""Bipartite (Hungarian) matching between predicted and ground-truth masks (Sec. 3.1, 3.3).

Glossary: B images, Q queries, K classes (+1 "no object"), N ground-truth masks of one image,
P sampled points, h x w prediction resolution (1/4 of the padded input), H x W target resolution.
"""

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import point_sample
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn


def batch_dice_cost(inputs: Tensor, targets: Tensor) -> Tensor:
    """Pairwise dice loss. inputs (Q, P) logits, targets (N, P) in [0, 1] -> (Q, N)."""
    inputs = inputs.sigmoid()
    numerator = 2 * inputs @ targets.T  # (Q, N)
    denominator = inputs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)  # +1 smoothing, as in the reference


def batch_sigmoid_ce_cost(inputs: Tensor, targets: Tensor) -> Tensor:
    """Pairwise sigmoid BCE averaged over points. inputs (Q, P) logits, targets (N, P) -> (Q, N).

    BCE(x, t) = t * BCE(x, 1) + (1 - t) * BCE(x, 0), so the (Q, N, P) tensor is never built.
    """
    num_points = inputs.shape[1]
    pos = F.softplus(-inputs)  # BCE(x, 1) = log(1 + exp(-x))
    neg = F.softplus(inputs)  # BCE(x, 0) = log(1 + exp(x))
    return (pos @ targets.T + neg @ (1 - targets).T) / num_points


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to ground-truth masks minimising a weighted cost.

    cost = cost_class * (-p(class)) + cost_mask * BCE + cost_dice * dice, with the mask terms
    evaluated on `num_points` points drawn uniformly once per image and shared by all predictions
    and targets of that image (Sec. 3.3). `num_points <= 0` evaluates them on full masks instead
    (predictions bilinearly upsampled to the target size), as MaskFormer did.
    """

    def __init__(
        self,
        cost_class: float = 1,
        cost_mask: float = 1,
        cost_dice: float = 1,
        num_points: int = 0,
    ):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0; give at least one a weight > 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """Match each image independently.

        Args:
            outputs: "pred_logits" (B, Q, K+1) class logits, "pred_masks" (B, Q, h, w) mask logits.
            targets: per image, "labels" (N,) int64 and "masks" (N, H, W) binary.
        Returns:
            per image (pred_idx, tgt_idx), int64 tensors of length min(Q, N), on the CPU;
            empty for an image without targets.
        """
        pred_logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        indices = []
        # Costs in fp32 regardless of autocast: fp16 sigmoid/BCE would distort the assignment.
        with torch.autocast(device_type=pred_logits.device.type, enabled=False):
            for b, target in enumerate(targets):
                indices.append(self._match_one(pred_logits[b], pred_masks[b], target))
        return indices

    def _match_one(self, logits: Tensor, masks: Tensor, target: dict) -> tuple[Tensor, Tensor]:
        labels = target["labels"]
        if labels.numel() == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return empty, empty.clone()
        prob = logits.float().softmax(-1)  # (Q, K+1)
        cost_class = -prob[:, labels]  # (Q, N): -p(target class), the 1 - p constant dropped

        out_mask = masks.float()  # (Q, h, w) logits
        tgt_mask = target["masks"].to(out_mask)  # (N, H, W)
        if self.num_points > 0:
            # Sec. 3.3: the same P uniform points for all predictions and targets of this image.
            coords = torch.rand(1, self.num_points, 2, device=out_mask.device)
            tgt_pts = point_sample(
                tgt_mask[:, None], coords.expand(tgt_mask.shape[0], -1, -1), align_corners=False
            ).squeeze(1)  # (N, P)
            out_pts = point_sample(
                out_mask[:, None], coords.expand(out_mask.shape[0], -1, -1), align_corners=False
            ).squeeze(1)  # (Q, P)
        else:
            out_mask = F.interpolate(
                out_mask[:, None], size=tgt_mask.shape[-2:], mode="bilinear", align_corners=False
            )[:, 0]  # (Q, H, W)
            out_pts, tgt_pts = out_mask.flatten(1), tgt_mask.flatten(1)

        cost_mask = batch_sigmoid_ce_cost(out_pts, tgt_pts)  # (Q, N)
        cost_dice = batch_dice_cost(out_pts, tgt_pts)  # (Q, N)
        cost = (
            self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice
        )
        cost = cost.cpu()
        if not torch.isfinite(cost).all():
            raise ValueError(
                "HungarianMatcher: the cost matrix has NaN/inf entries; the predictions are not "
                "finite (check the learning rate, AMP settings and input normalisation)"
            )
        pred_idx, tgt_idx = linear_sum_assignment(cost.numpy())
        return (
            torch.as_tensor(pred_idx, dtype=torch.int64),
            torch.as_tensor(tgt_idx, dtype=torch.int64),
        )

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points}"
        )
