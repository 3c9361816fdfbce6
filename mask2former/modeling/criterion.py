"""Set-prediction losses of Mask2Former (Sec. 3.3, Sec. 4.1 "Loss weights").

Glossary: B images, Q queries, K classes (+1 "no object"), M matched (query, mask) pairs in the
batch, P points per mask, h x w prediction resolution (1/4 of the padded input), H x W target
resolution (the padded input).

The criterion returns UNWEIGHTED losses; the model multiplies them by `weight_dict`.
"""

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from torch import Tensor, nn


def dice_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Dice loss summed over masks / num_masks. inputs (M, P) logits, targets (M, P) in [0, 1]."""
    inputs = inputs.sigmoid()
    numerator = 2 * (inputs * targets).sum(-1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)  # +1 smoothing, as in the reference
    return loss.sum() / num_masks


def sigmoid_ce_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """BCE averaged over points, summed over masks / num_masks. inputs (M, P) logits."""
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def calculate_uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty of (R, 1, P) mask logits: -|logit|, highest at the decision boundary."""
    return -torch.abs(logits)


def _pad_stack(masks: list[Tensor]) -> Tensor:
    """Stack (n_i, H_i, W_i) masks into (sum n_i, max H, max W), zero-padded bottom/right."""
    h = max(m.shape[-2] for m in masks)
    w = max(m.shape[-1] for m in masks)
    padded = [F.pad(m, (0, w - m.shape[-1], 0, h - m.shape[-2])) for m in masks]
    return torch.cat(padded, dim=0)


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class SetCriterion(nn.Module):
    """Hungarian-match predictions to targets, then supervise classes and matched masks.

    Losses (a dispatch table, one `loss_<name>` per entry of `losses`):
      * "labels": cross-entropy over K+1 classes for every query, unmatched queries -> "no object",
        whose class weight is `eos_coef` (buffer `empty_weight`).
      * "masks": sigmoid BCE and dice of matched pairs, on P = `num_points` points per pair chosen
        by PointRend importance sampling (`point_sampled=True`, Sec. 3.3), or on full masks
        (predictions upsampled to the target size) with `point_sampled=False`.
    Mask losses are normalised by the number of target masks averaged over all workers (>= 1).
    Every entry of `outputs["aux_outputs"]` (deep supervision) gets its own matching and the same
    losses, suffixed `_{i}`.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: dict[str, float],
        eos_coef: float,
        losses: list[str],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        point_sampled: bool = True,
    ):
        super().__init__()
        unknown = [loss for loss in losses if loss not in ("labels", "masks")]
        if unknown:
            raise ValueError(f"SetCriterion: unknown losses {unknown}; valid: 'labels', 'masks'")
        if point_sampled and num_points <= 0:
            raise ValueError(
                f"SetCriterion: point_sampled=True needs num_points > 0, got {num_points}; set "
                "MODEL.MASK_FORMER.TRAIN_NUM_POINTS or MODEL.MASK_FORMER.POINT_SAMPLED_LOSS False"
            )
        if point_sampled and oversample_ratio < 1:
            raise ValueError(
                f"SetCriterion: oversample_ratio must be >= 1, got {oversample_ratio} "
                "(MODEL.MASK_FORMER.OVERSAMPLE_RATIO)"
            )
        if point_sampled and not 0 <= importance_sample_ratio <= 1:
            raise ValueError(
                f"SetCriterion: importance_sample_ratio must be in [0, 1], got "
                f"{importance_sample_ratio} (MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO)"
            )
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.point_sampled = point_sampled
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef  # Sec. 4.1: weight 0.1 for "no object"
        self.register_buffer("empty_weight", empty_weight)

    # ---- losses -------------------------------------------------------------------------------
    def loss_labels(self, outputs, targets, indices, num_masks) -> dict[str, Tensor]:
        """Cross-entropy over K+1 classes; outputs["pred_logits"] is (B, Q, K+1) logits."""
        src_logits = outputs["pred_logits"].float()
        batch_idx, src_idx = self._src_permutation_idx(indices, src_logits.device)
        target_classes = torch.full(
            src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=src_logits.device
        )  # (B, Q), "no object" by default
        matched = [t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)]
        if batch_idx.numel() > 0:
            target_classes[batch_idx, src_idx] = torch.cat(matched).to(src_logits.device)
        loss_ce = F.cross_entropy(src_logits.transpose(1, 2), target_classes, self.empty_weight)
        return {"loss_ce": loss_ce}

    def loss_masks(self, outputs, targets, indices, num_masks) -> dict[str, Tensor]:
        """BCE + dice of the M matched pairs; outputs["pred_masks"] is (B, Q, h, w) logits."""
        pred_masks = outputs["pred_masks"]
        batch_idx, src_idx = self._src_permutation_idx(indices, pred_masks.device)
        if batch_idx.numel() == 0:  # no target in the whole batch: zero, but still in the graph
            zero = pred_masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        src_masks = pred_masks[batch_idx, src_idx].float()  # (M, h, w)
        target_masks = _pad_stack(
            [t["masks"][j.to(t["masks"].device)] for t, (_, j) in zip(targets, indices)]
        ).to(src_masks)  # (M, H, W), in the order of src_masks

        if self.point_sampled:
            # Sec. 3.3: a different set of P points per pair, by importance sampling.
            with torch.no_grad():
                coords = get_uncertain_point_coords_with_randomness(
                    src_masks[:, None],
                    calculate_uncertainty,
                    self.num_points,
                    self.oversample_ratio,
                    self.importance_sample_ratio,
                )  # (M, P, 2)
                point_labels = point_sample(
                    target_masks[:, None], coords, align_corners=False
                ).squeeze(1)  # (M, P)
            point_logits = point_sample(src_masks[:, None], coords, align_corners=False).squeeze(
                1
            )  # (M, P)
        else:
            # Full-mask losses (Table 5, "mask"): upsample the predictions to the target size.
            point_logits = F.interpolate(
                src_masks[:, None],
                size=target_masks.shape[-2:],
                mode="bilinear",
                align_corners=False,
            ).flatten(1)  # (M, H*W)
            point_labels = target_masks.flatten(1)  # (M, H*W)

        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    # ---- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _src_permutation_idx(indices, device: torch.device) -> tuple[Tensor, Tensor]:
        """(batch index, query index) of every matched prediction, image by image."""
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        return batch_idx.to(device), src_idx.to(device)

    def num_masks_across_workers(self, targets: list[dict], device: torch.device) -> float:
        """Number of target masks in the batch, averaged over all workers, at least 1."""
        num_masks = torch.as_tensor(
            [float(sum(len(t["labels"]) for t in targets))], dtype=torch.float, device=device
        )
        world_size = _world_size()
        if world_size > 1:
            torch.distributed.all_reduce(num_masks)
        return torch.clamp(num_masks / world_size, min=1).item()

    def get_loss(self, loss: str, outputs, targets, indices, num_masks) -> dict[str, Tensor]:
        loss_fns = {"labels": self.loss_labels, "masks": self.loss_masks}
        return loss_fns[loss](outputs, targets, indices, num_masks)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        """Unweighted losses: loss_ce, loss_mask, loss_dice and their `_{i}` aux versions.

        Args:
            outputs: "pred_logits" (B, Q, K+1), "pred_masks" (B, Q, h, w) logits, optional
                "aux_outputs": a list of dicts with the same two keys.
            targets: per image, "labels" (N,) int64 and "masks" (N, H, W) binary, zero-padded.
        """
        outputs_last = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        num_masks = self.num_masks_across_workers(targets, outputs["pred_logits"].device)

        losses = {}
        indices = self.matcher(outputs_last, targets)
        for loss in self.losses:
            losses.update(self.get_loss(loss, outputs_last, targets, indices, num_masks))

        # Deep supervision (Sec. 4.1): every intermediate prediction is matched and supervised.
        for i, aux_outputs in enumerate(outputs.get("aux_outputs", [])):
            indices = self.matcher(aux_outputs, targets)
            for loss in self.losses:
                l_dict = self.get_loss(loss, aux_outputs, targets, indices, num_masks)
                losses.update({f"{k}_{i}": v for k, v in l_dict.items()})
        return losses

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, losses={self.losses}, "
            f"weight_dict={self.weight_dict}, num_points={self.num_points}, "
            f"oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}, "
            f"point_sampled={self.point_sampled}"
        )
