"""`MaskFormer`: the meta-architecture of Mask2Former (Sec. 3.1, Fig. 2).

backbone -> pixel decoder -> masked-attention transformer decoder -> (training) set criterion,
(inference) semantic / panoptic / instance post-processing. Follows detectron2's model contract:
input a list of dicts, training returns a dict of weighted losses, inference returns one dict per
image with any of `sem_seg`, `panoptic_seg`, `instances`.

Shapes: B images, Q queries, K classes (+1 "no object"), (Hp, Wp) the padded batch size.
"""

import logging
import threading

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from detectron2.utils.memory import retry_if_cuda_oom
from torch import nn

from .modeling import postprocessing as pp
from .modeling.inference_precision import InferencePrecision
from .utils.output_pool import OutputPool

logger = logging.getLogger(__name__)


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
        self._workspace: dict[tuple[int, str], torch.Tensor] = {}  # see `_buffer`
        self._outputs = OutputPool()  # see `_output`
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
        """Final-layer predictions -> per-image outputs at the requested size (Sec. 9 of the
        reference: masks upsampled to the padded input, cropped to the image, resized)."""
        mask_cls_results = outputs["pred_logits"]  # (B, Q, K+1)
        mask_pred_results = outputs["pred_masks"]  # (B, Q, H/4, W/4)
        self._outputs.begin_round()
        mask_pred_results = self._upsample_masks(mask_pred_results, images.tensor.shape[-2:])
        del outputs

        processed_results = []
        for mask_cls_result, mask_pred_result, input_per_image, image_size in zip(
            mask_cls_results, mask_pred_results, batched_inputs, images.image_sizes
        ):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            processed_results.append({})

            if self.sem_seg_postprocess_before_inference:
                mask_pred_result = retry_if_cuda_oom(self._masks_at_output_size)(
                    mask_pred_result, image_size, height, width
                )
                mask_cls_result = mask_cls_result.to(mask_pred_result)
            # Instances need the logits only where they are > 0, for the top-k queries: their
            # output masks are thresholded first, then the three tasks share one sigmoid, taken
            # in place (fewer full-size buffers).
            selection = binary = None
            if self.instance_on:
                selection = pp.select_instances(
                    mask_cls_result,
                    num_classes=self.sem_seg_head.num_classes,
                    topk=self.test_topk_per_image,
                    thing_ids=self.thing_ids if self.panoptic_on else None,
                )
                binary = retry_if_cuda_oom(pp.binary_masks)(
                    mask_pred_result,
                    selection.queries,
                    self._output(
                        mask_pred_result,
                        (selection.queries.numel(), *mask_pred_result.shape[-2:]),
                        torch.float32,
                    ),  # masks are float32 0/1 whatever the model's dtype
                )
            mask_prob = retry_if_cuda_oom(_sigmoid_)(mask_pred_result)
            if mask_prob.device != mask_cls_result.device:  # fell back to the CPU after a CUDA OOM
                mask_cls_result = mask_cls_result.to(mask_prob.device)
                if selection is not None:
                    selection = pp.InstanceSelection(*(t.to(mask_prob.device) for t in selection))
                    binary = binary.to(mask_prob.device)

            if self.semantic_on:
                sem_seg = self._output(
                    mask_prob, (mask_cls_result.shape[-1] - 1, *mask_prob.shape[-2:])
                )
                r = retry_if_cuda_oom(pp.semantic_inference)(
                    mask_cls_result, mask_prob, mask_prob, sem_seg
                )
                if not self.sem_seg_postprocess_before_inference:
                    resized = (
                        None
                        if tuple(image_size) == (height, width)
                        else self._output(r, (r.shape[0], height, width))
                    )
                    r = retry_if_cuda_oom(self._resize_to_output)(
                        r, image_size, height, width, resized
                    )
                processed_results[-1]["sem_seg"] = r
            if self.panoptic_on:
                processed_results[-1]["panoptic_seg"] = retry_if_cuda_oom(self.panoptic_inference)(
                    mask_cls_result, mask_prob, mask_prob
                )
            if self.instance_on:
                processed_results[-1]["instances"] = retry_if_cuda_oom(self.instance_inference)(
                    mask_cls_result, mask_prob, mask_prob, selection, binary
                )
        return processed_results

    # ---- CPU memory for the full-size intermediates and outputs of post-processing -------------
    # The upsampled mask logits/probabilities (B, Q, Hp, Wp) float and the outputs (semantic
    # scores (K, H, W), instance masks (N, H, W)) are several hundred MB each at COCO sizes. A
    # fresh CPU allocation that large is mapped page by page on first write, which costs about as
    # much as computing it. Intermediates live in one workspace per thread, reused across images
    # (nothing returned aliases it); outputs come from an `OutputPool`, which reuses the memory of
    # outputs the caller has dropped. R50 800x1216, all outputs, random weights: post-processing
    # 0.78 s -> 0.53 s with the workspace -> 0.37 s with the pool. CUDA has its own caching
    # allocator: neither is used there.
    def _buffer(self, name: str, like: torch.Tensor, shape, dtype=None) -> torch.Tensor:
        key = (threading.get_ident(), name)
        dtype = dtype or like.dtype
        buf = self._workspace.get(key)
        if buf is None or buf.dtype != dtype or buf.device != like.device:
            buf = self._workspace[key] = torch.empty(0, dtype=dtype, device=like.device)
        return buf.resize_(shape)  # keeps the storage when it is large enough

    def _output(self, like: torch.Tensor, shape, dtype=None) -> torch.Tensor | None:
        """Memory for an output returned to the caller; None: let the op allocate it (off the
        CPU, where allocating inside `retry_if_cuda_oom` matters)."""
        if not self._use_workspace(like):
            return None
        return self._outputs.empty(shape, dtype or like.dtype)

    def _use_workspace(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and not x.requires_grad and not self.training

    def train(self, mode: bool = True):
        if mode:  # give the inference memory back for training; outputs a caller holds stay valid
            self._workspace.clear()
            self._outputs.clear()
        return super().train(mode)

    def _upsample_masks(self, masks: torch.Tensor, size) -> torch.Tensor:
        """(B, Q, h, w) mask logits -> (B, Q, *size), bilinear (align_corners=False)."""
        if not self._use_workspace(masks):
            return F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        out = self._buffer("masks", masks, (*masks.shape[:2], *size))
        return torch.ops.aten.upsample_bilinear2d.out(masks, list(size), False, None, None, out=out)

    def _masks_at_output_size(
        self, masks: torch.Tensor, img_size, height: int, width: int
    ) -> torch.Tensor:
        """(Q, Hp, Wp) padded mask logits -> (Q, height, width), contiguous (as the published
        resize, even to the same size, returns: the fusion's summation order depends on it); on
        the CPU in the workspace."""
        workspace = self._use_workspace(masks)
        shape = (masks.shape[0], height, width)
        if tuple(img_size) != (height, width):
            out = self._buffer("masks_out", masks, shape) if workspace else None
            return self._resize_to_output(masks, img_size, height, width, out)
        crop = masks[:, :height, :width]  # the resize would be the identity
        if crop.is_contiguous():
            return crop
        return (
            self._buffer("masks_out", masks, shape).copy_(crop) if workspace else crop.contiguous()
        )

    @staticmethod
    def _resize_to_output(
        result: torch.Tensor, img_size, height: int, width: int, out=None
    ) -> torch.Tensor:
        """detectron2's `sem_seg_postprocess`: crop the padding of (C, Hp, Wp), bilinear resize
        to (C, height, width), into `out` if given. When the resize would be the identity it is
        skipped (same result): the crop, a view, is returned."""
        crop = result[:, : img_size[0], : img_size[1]]
        if tuple(img_size) == (height, width):
            return crop
        if out is None:
            return sem_seg_postprocess(result, img_size, height, width)
        return torch.ops.aten.upsample_bilinear2d.out(
            crop[None], [height, width], False, None, None, out=out[None]
        )[0]

    # ---- panoptic and instance inference (kept as methods: the published names) -------------------------------
    def panoptic_inference(self, mask_cls, mask_pred, mask_prob=None):
        """(Q, K+1) logits, (Q, H, W) logits -> (panoptic_seg (H, W) int32, segments_info).
        With `mask_prob` given, `mask_pred` only provides the shape."""
        return pp.panoptic_inference(
            mask_cls,
            mask_pred,
            num_classes=self.sem_seg_head.num_classes,
            thing_ids=self.thing_ids,
            object_mask_threshold=self.object_mask_threshold,
            overlap_threshold=self.overlap_threshold,
            mask_prob=mask_prob,
        )

    def instance_inference(self, mask_cls, mask_pred, mask_prob=None, selection=None, binary=None):
        """(Q, K+1) logits, (Q, H, W) logits -> Instances with masks, boxes, scores, classes.
        With `mask_prob`, `selection` and `binary` given (see `pp.instance_inference`),
        `mask_pred` only provides the shape."""
        return pp.instance_inference(
            mask_cls,
            mask_pred,
            num_classes=self.sem_seg_head.num_classes,
            topk=self.test_topk_per_image,
            thing_ids=self.thing_ids if self.panoptic_on else None,
            mask_prob=mask_prob,
            selection=selection,
            binary=binary,
        )


def _sigmoid_(x: torch.Tensor) -> torch.Tensor:
    """In-place sigmoid (a fresh copy when `x` cannot be written, e.g. it needs grad)."""
    return x.sigmoid_() if not x.requires_grad else x.sigmoid()
