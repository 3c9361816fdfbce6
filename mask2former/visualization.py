"""Model outputs drawn over their image with detectron2's `Visualizer` (class names, scores)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, Visualizer

TASKS = ("panoptic", "instance", "semantic")


def filter_predictions(predictions: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Drop instances and panoptic segments whose score is below `threshold`.

    Instances: `scores < threshold` are removed. Panoptic: segments that carry a "score" below the
    threshold become void (id 0) and leave `segments_info`. Semantic maps have no per-segment score
    and are returned unchanged. The input is not modified.
    """
    out = dict(predictions)
    if "instances" in predictions:
        inst = predictions["instances"]
        if inst.has("scores"):
            out["instances"] = inst[inst.scores >= threshold]
    if "panoptic_seg" in predictions:
        pan, segments = predictions["panoptic_seg"]
        dropped = [s["id"] for s in segments if s.get("score", 1.0) < threshold]
        if dropped:
            pan = pan.clone()
            pan[torch.isin(pan, torch.as_tensor(dropped, device=pan.device, dtype=pan.dtype))] = 0
            segments = [s for s in segments if s["id"] not in dropped]
        out["panoptic_seg"] = (pan, segments)
    return out


def for_drawing(instances: Instances) -> Instances:
    """Instances on the CPU, without boxes when they are placeholders (all zero)."""
    inst = instances.to(torch.device("cpu"))
    if inst.has("pred_boxes") and not (inst.pred_boxes.tensor.abs().sum() > 0):
        inst.remove("pred_boxes")
    return inst


def draw_predictions(
    image_rgb: np.ndarray,
    predictions: dict[str, Any],
    metadata,
    task: str = "auto",
    scale: float = 1.0,
    instance_mode: ColorMode = ColorMode.IMAGE,
) -> np.ndarray:
    """Draw one task's predictions on `image_rgb` (H, W, 3); returns an RGB uint8 image.

    task: "panoptic", "instance", "semantic", or "auto" (panoptic if present, else semantic
    and / or instances, as in the published demo). A task the outputs lack draws the image alone.
    """
    if task not in ("auto",) + TASKS:
        raise ValueError(f"task must be one of {('auto',) + TASKS}, got {task!r}")
    v = Visualizer(image_rgb, metadata, scale=scale, instance_mode=instance_mode)
    cpu = torch.device("cpu")
    if task == "auto":
        if "panoptic_seg" in predictions:
            task = "panoptic"
        else:
            if "sem_seg" in predictions:
                v.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to(cpu))
            if "instances" in predictions:
                v.draw_instance_predictions(for_drawing(predictions["instances"]))
            return v.get_output().get_image()
    if task == "panoptic" and "panoptic_seg" in predictions:
        pan, segments = predictions["panoptic_seg"]
        v.draw_panoptic_seg(pan.to(cpu), segments)
    elif task == "instance" and "instances" in predictions:
        v.draw_instance_predictions(for_drawing(predictions["instances"]))
    elif task == "semantic" and "sem_seg" in predictions:
        v.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to(cpu))
    return v.get_output().get_image()
