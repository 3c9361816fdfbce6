"""Does an exported network give the model's results? Eager vs exported on the same images.

`compare(reference, exported, batches)` runs both `ExportedModel`s (the reference is usually the
eager network, `ExportedModel(cfg, None, runner=ExportableMaskFormer(model))`, whose results are
exactly `MaskFormer`'s) on every image and gathers, per image: the largest |difference| of the
network outputs, the share of pixels with the same panoptic category and the same semantic class,
and whether the instance classes are the same. tools/deploy/verify_export.py prints the summary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from ..evaluation.agreement import panoptic_agreement, panoptic_categories, semantic_agreement
from .runtime import ExportedModel

__all__ = ["Agreement", "compare", "panoptic_categories"]  # the last from evaluation.agreement


@dataclass
class Agreement:
    """Per-image agreement of an exported model with the reference (lists in image order)."""

    logits_diff: list[float] = field(default_factory=list)
    masks_diff: list[float] = field(default_factory=list)
    panoptic: list[float] = field(default_factory=list)  # share of pixels, same category
    semantic: list[float] = field(default_factory=list)  # share of pixels, same argmax
    instance_classes_equal: list[bool] = field(default_factory=list)

    @property
    def images(self) -> int:
        return len(self.logits_diff)

    def rows(self) -> list[tuple[str, str]]:
        """(what, value) lines of the summary; the agreements as worst and mean over images."""

        def worst_mean(values: list[float]) -> str:
            if not values:
                return "- (output off)"
            return f"min {min(values):.5f}, mean {sum(values) / len(values):.5f}"

        same = self.instance_classes_equal
        return [
            ("images", str(self.images)),
            ("max |diff| pred_logits", f"{max(self.logits_diff, default=0.0):.3g}"),
            ("max |diff| pred_masks", f"{max(self.masks_diff, default=0.0):.3g}"),
            ("panoptic category agreement", worst_mean(self.panoptic)),
            ("semantic argmax agreement", worst_mean(self.semantic)),
            (
                "instance classes equal",
                f"{sum(same)} of {len(same)} images" if same else "- (output off)",
            ),
        ]


def compare(
    reference: ExportedModel, exported: ExportedModel, batches: Iterable[list[dict]]
) -> Agreement:
    """Run both models on every record of `batches` (dataset-mapper dicts with "image" (3, H, W)
    and optionally "height"/"width") and return their per-image agreement."""
    out = Agreement()
    for batch in batches:
        for inputs in batch:
            image = torch.as_tensor(inputs["image"])
            with torch.no_grad():
                (l1, m1, x), (l2, m2, _) = reference.network(image), exported.network(image)
                a = reference.postprocess(l1, m1, x, inputs)
                b = exported.postprocess(l2, m2, x, inputs)
            out.logits_diff.append(float((l1 - l2).abs().max()))
            out.masks_diff.append(float((m1 - m2).abs().max()))
            if "panoptic_seg" in a:
                out.panoptic.append(panoptic_agreement(a, b))
            if "sem_seg" in a:
                out.semantic.append(semantic_agreement(a, b))
            if "instances" in a:
                ca, cb = a["instances"].pred_classes, b["instances"].pred_classes
                out.instance_classes_equal.append(bool(torch.equal(ca, cb)))
    return out
