"""`MaskFormer`: the meta-architecture of Mask2Former (Sec. 3.1, Fig. 2).

backbone -> pixel decoder -> masked-attention transformer decoder -> (training) set criterion,
(inference) semantic / panoptic / instance post-processing. Follows detectron2's model contract:
input a list of dicts, training returns a dict of weighted losses, inference returns one dict per
image with any of `sem_seg`, `panoptic_seg`, `instances`.

Shapes: B images, Q queries, K classes (+1 "no object"), (Hp, Wp) the padded batch size.
"""

import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.structures import ImageList
from detectron2.utils.memory import retry_if_cuda_oom
from torch import nn

from .modeling import postprocessing as pp
from .modeling.inference_precision import InferencePrecision


def build_weight_dict(
    class_weight: float,
    mask_weight: float,
    dice_weight: float,
    dec_layers: int,
    deep_supervision: bool,
) -> dict[str, float]:
    """Loss weights (Sec. 4.1): ce/mask/dice, repeated with `_{i}` for the DEC_LAYERS-1 aux sets."""
    weight_dict = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
    if deep_supervision:
        aux = {}
        for i in range(dec_layers - 1):
            aux.update({f"{k}_{i}": v for k, v in weight_dict.items()})
        weight_dict.update(aux)
    return weight_dict


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask classification model for semantic, instance and panoptic segmentation."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: nn.Module | None,
        num_queries: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        metadata,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        semantic_on: bool = True,
        panoptic_on: bool = False,
        instance_on: bool = False,
        test_topk_per_image: int = 100,
        inference_precision: InferencePrecision | None = None,
    ):
        """
        Args:
            backbone: a detectron2 backbone.
            sem_seg_head: module mapping backbone features to the decoder's output dict.
            criterion: module `(outputs, targets) -> dict of unweighted losses` with a
                `weight_dict` attribute (the losses kept and their weights); None for an
                inference-only model.
            num_queries: Q.
            object_mask_threshold, overlap_threshold: panoptic post-processing thresholds.
            metadata: dataset metadata; `thing_dataset_id_to_contiguous_id` decides "thing".
            size_divisibility: pad the batch to a multiple of this (< 0: the backbone's).
            sem_seg_postprocess_before_inference: resize mask logits to the output size before
                the semantic fusion (required for panoptic and instance outputs).
            pixel_mean, pixel_std: per-channel normalisation of the input image.
            semantic_on, panoptic_on, instance_on: which outputs inference produces.
            test_topk_per_image: number of instances kept per image.
            inference_precision: autocast of the network at inference (TEST.AMP); None: fp32.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.overlap_threshold = overlap_threshold
        self.object_mask_threshold = object_mask_threshold
        self.metadata = metadata
        if size_divisibility < 0:
            size_divisibility = self.backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        self.test_topk_per_image = test_topk_per_image
        self.inference_precision = inference_precision or InferencePrecision(False)
        self.buffers = pp.CpuBuffers()  # CPU memory reused by post-processing
        if not (semantic_on or instance_on or panoptic_on):
            raise ValueError(
                "MaskFormer: all of MODEL.MASK_FORMER.TEST.{SEMANTIC,INSTANCE,PANOPTIC}_ON are "
                "False; turn at least one on"
            )
        if not self.semantic_on and not self.sem_seg_postprocess_before_inference:
            raise ValueError(
                "MaskFormer: with SEMANTIC_ON False, mask logits must be resized before inference "
                "(set MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE True)"
            )

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        mf = cfg.MODEL.MASK_FORMER
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": cls.build_criterion(cfg, sem_seg_head.num_classes),
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "object_mask_threshold": mf.TEST.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": mf.TEST.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(cfg.DATASETS.TRAIN[0]) if cfg.DATASETS.TRAIN else None,
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE
                or mf.TEST.PANOPTIC_ON
                or mf.TEST.INSTANCE_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": mf.TEST.SEMANTIC_ON,
            "instance_on": mf.TEST.INSTANCE_ON,
            "panoptic_on": mf.TEST.PANOPTIC_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "inference_precision": InferencePrecision.from_config(cfg),
        }

    @staticmethod
    def build_criterion(cfg, num_classes: int) -> nn.Module:
        """Hungarian matcher + set criterion with the Sec. 4.1 loss weights."""
        from .modeling.criterion import SetCriterion
        from .modeling.matcher import HungarianMatcher

        mf = cfg.MODEL.MASK_FORMER
        matcher = HungarianMatcher(
            cost_class=mf.CLASS_WEIGHT,
            cost_mask=mf.MASK_WEIGHT,
            cost_dice=mf.DICE_WEIGHT,
            num_points=mf.TRAIN_NUM_POINTS,
        )
        weight_dict = build_weight_dict(
            mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT, mf.DEC_LAYERS, mf.DEEP_SUPERVISION
        )
        return SetCriterion(
            num_classes,
            matcher=matcher,
            weight_dict=weight_dict,
            eos_coef=mf.NO_OBJECT_WEIGHT,
            losses=["labels", "masks"],
            num_points=mf.TRAIN_NUM_POINTS,
            oversample_ratio=mf.OVERSAMPLE_RATIO,
            importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
            point_sampled=mf.POINT_SAMPLED_LOSS,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def thing_ids(self) -> frozenset:
        """Contiguous ids of the "thing" classes (empty without metadata)."""
        mapping = (
            getattr(self.metadata, "thing_dataset_id_to_contiguous_id", None)
            if self.metadata
            else None
        )
        return frozenset(mapping.values()) if mapping else frozenset()

    # ---- forward ------------------------------------------------------------------------------
    def preprocess_image(self, batched_inputs: list[dict]) -> ImageList:
        """Normalise each (3, H, W) uint8 image and pad the batch to (B, 3, Hp, Wp)."""
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(images, self.size_divisibility)

    def forward(self, batched_inputs: list[dict]):
        """
        Args:
            batched_inputs: per image a dict with "image" (3, H, W) uint8 in the model's input
                format, optional "height"/"width" (the output size), and for training
                "instances" with `gt_classes` (N,) and `gt_masks` (N, H, W) (tensor or BitMasks).

        Returns:
            training: dict of weighted losses (only those in `criterion.weight_dict`).
            inference: per image a dict with "sem_seg" (K, height, width) scores,
            "panoptic_seg" (panoptic map (height, width) int32, segments_info) and/or
            "instances" (detectron2 Instances), as selected by the TEST.*_ON switches.
        """
        images = self.preprocess_image(batched_inputs)
        with self.inference_precision.network(self.device, self.training):  # TEST.AMP
            features = self.backbone(images.tensor)
            outputs = self.sem_seg_head(features)

        if self.training:
            if self.criterion is None:
                raise RuntimeError("MaskFormer was built without a criterion; it cannot be trained")
            if any("instances" not in x for x in batched_inputs):
                raise ValueError(
                    "MaskFormer training needs per-image 'instances' (gt_classes, gt_masks); got "
                    f"inputs with keys {sorted(batched_inputs[0])}. Use one of the Mask2Former "
                    "mappers (INPUT.DATASET_MAPPER_NAME mask_former_semantic | "
                    "mask_former_panoptic | mask_former_instance | coco_instance_lsj | "
                    "coco_panoptic_lsj)."
                )
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            targets = self.prepare_targets(gt_instances, images)
            losses = self.criterion(outputs, targets)
            weight_dict = self.criterion.weight_dict
            return {k: v * weight_dict[k] for k, v in losses.items() if k in weight_dict}

        with self.inference_precision.fp32(self.device):  # post-processing in float32
            outputs = {k: outputs[k].float() for k in ("pred_logits", "pred_masks")}
            return self.postprocess(outputs, batched_inputs, images)

    def prepare_targets(self, targets, images: ImageList) -> list[dict]:
        """Zero-pad each image's GT masks to the padded batch size (Hp, Wp)."""
        h_pad, w_pad = images.tensor.shape[-2:]
        new_targets = []
        for targets_per_image in targets:
            gt_masks = targets_per_image.gt_masks
            gt_masks = getattr(gt_masks, "tensor", gt_masks)  # BitMasks or a tensor
            padded_masks = torch.zeros(
                (gt_masks.shape[0], h_pad, w_pad), dtype=gt_masks.dtype, device=gt_masks.device
            )
            padded_masks[:, : gt_masks.shape[1], : gt_masks.shape[2]] = gt_masks
            new_targets.append({"labels": targets_per_image.gt_classes, "masks": padded_masks})
        return new_targets

    def postprocess(
        self, outputs: dict, batched_inputs: list[dict], images: ImageList
    ) -> list[dict]:
        """Final-layer predictions -> per-image outputs at the requested size (`forward`)."""
        self.buffers.begin_round()
        padded_size = tuple(images.tensor.shape[-2:])
        results = []
        for mask_cls, mask_pred, x, image_size in zip(
            outputs["pred_logits"], outputs["pred_masks"], batched_inputs, images.image_sizes
        ):
            output_size = (x.get("height", image_size[0]), x.get("width", image_size[1]))
            results.append(
                retry_if_cuda_oom(self.postprocess_image)(
                    mask_cls, mask_pred, padded_size, tuple(image_size), output_size
                )
            )
        return results

    def postprocess_image(self, mask_cls, mask_pred, padded_size, image_size, output_size) -> dict:
        """One image's (Q, K+1) class logits and (Q, Hp/4, Wp/4) mask logits -> its outputs.

        Masks are upsampled to the padded input (Hp, Wp), cropped to the image and resized to
        the output size (before the fusion, required for panoptic and instance outputs; after it
        for semantic-only models, as published). The three tasks share one in-place sigmoid.
        """
        buffers = self.buffers
        masks = pp.upsample_masks(mask_pred, padded_size, buffers)  # (Q, Hp, Wp) logits
        if self.sem_seg_postprocess_before_inference:
            masks = pp.masks_at_output_size(masks, image_size, output_size, buffers)
        if self.instance_on:  # instance masks are `logit > 0`: taken before the sigmoid
            selection = pp.select_instances(
                mask_cls,
                num_classes=self.sem_seg_head.num_classes,
                topk=self.test_topk_per_image,
                thing_ids=self.thing_ids if self.panoptic_on else None,
            )
            binary = pp.binary_masks(masks, selection.queries, buffers)
        mask_prob = masks.sigmoid() if masks.requires_grad else masks.sigmoid_()  # (Q, H, W)

        result = {}
        if self.semantic_on:
            sem_seg = pp.semantic_inference(mask_cls, mask_prob, buffers)  # (K, H, W)
            if not self.sem_seg_postprocess_before_inference:
                sem_seg = pp.crop_and_resize(sem_seg, image_size, output_size, buffers)
            result["sem_seg"] = sem_seg
        if self.panoptic_on:
            result["panoptic_seg"] = pp.panoptic_inference(
                mask_cls,
                mask_prob,
                num_classes=self.sem_seg_head.num_classes,
                thing_ids=self.thing_ids,
                object_mask_threshold=self.object_mask_threshold,
                overlap_threshold=self.overlap_threshold,
            )
        if self.instance_on:
            result["instances"] = pp.instance_inference(mask_prob, selection, binary)
        return result

    def train(self, mode: bool = True):
        if mode:  # give the inference memory back for training; outputs a caller holds stay valid
            self.buffers.clear()
        return super().train(mode)
