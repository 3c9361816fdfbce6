"""Semantic test-time augmentation: `sem_seg` averaged over scales and flips (TEST.AUG)."""

import copy

import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.modeling import DatasetMapperTTA
from fvcore.transforms import HFlipTransform
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["SemanticSegmentorWithTTA"]


class SemanticSegmentorWithTTA(nn.Module):
    """Wrap a semantic segmentor to run it on every TEST.AUG view of an image and average.

    Views come from detectron2's `DatasetMapperTTA` (TEST.AUG.MIN_SIZES x {no flip, flip}).
    The model returns `sem_seg` (K, H, W) at the original image size for every view; flipped
    predictions are flipped back before averaging. Instance and panoptic outputs are not produced.
    """

    def __init__(self, cfg, model: nn.Module, tta_mapper=None, batch_size: int = 1):
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.cfg = cfg.clone()
        self.model = model
        self.input_format = getattr(model, "input_format", cfg.INPUT.FORMAT)
        self.tta_mapper = tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg)
        self.batch_size = batch_size

    def _maybe_read_image(self, dataset_dict: dict) -> dict:
        ret = copy.copy(dataset_dict)
        if "image" not in ret:
            image = read_image(ret.pop("file_name"), self.input_format)
            ret["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if "height" not in ret and "width" not in ret:
            ret["height"], ret["width"] = ret["image"].shape[1:3]
        return ret

    def __call__(self, batched_inputs: list[dict]) -> list[dict]:
        return [self._inference_one_image(self._maybe_read_image(x)) for x in batched_inputs]

    @torch.no_grad()
    def _inference_one_image(self, inputs: dict) -> dict:
        augmented_inputs = self.tta_mapper(inputs)
        tfms = [x.pop("transforms") for x in augmented_inputs]
        total = None
        for start in range(0, len(augmented_inputs), self.batch_size):
            batch = augmented_inputs[start : start + self.batch_size]
            outputs = self.model(batch)
            for out, tfm in zip(outputs, tfms[start : start + self.batch_size]):
                sem_seg = out["sem_seg"]  # (K, H, W) at the original size
                if any(isinstance(t, HFlipTransform) for t in tfm.transforms):
                    sem_seg = sem_seg.flip(dims=[2])
                total = sem_seg if total is None else total + sem_seg
        return {"sem_seg": total / len(augmented_inputs)}
