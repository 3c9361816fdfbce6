"""Building the models under test and making their inputs.

The real models come from the project's configs (`mask2former.config.load_config`) through
`detectron2.modeling.build_model`; `--standin` swaps in `benchmarks/standin.py`. Inputs are
synthetic (no data set is needed), and this module is the only place that makes them: smooth
random images at COCO test sizes, and LSJ-sized training images with random object masks.
`--images DIR` uses real images.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {
    "R50": "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "Swin-L": "configs/coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
}

# All three outputs on: the paper's fps counts panoptic + instance + semantic post-processing.
ALL_OUTPUTS = [
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON",
    "True",
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON",
    "True",
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON",
    "True",
]

# COCO val images after ResizeShortestEdge(800, max_size=1333): 640x480 and 480x640 (4:3, the
# most common), 640x427 and 427x640 (3:2), 640x360 (16:9, capped by the long side).
COCO_SHAPES = [(800, 1067), (1067, 800), (800, 1199), (1199, 800), (750, 1333)]
SMALL_SHAPES = [(64, 96), (96, 64)]


@dataclass
class Built:
    name: str
    model: torch.nn.Module
    cfg: object | None
    num_classes: int


# Random weights give flat class probabilities: no query passes OBJECT_MASK_THRESHOLD (0.8) and the
# panoptic/instance post-processing has nothing to do. The class head is therefore scaled so that
# some queries are confident and post-processing does real work (R50, one 800x1216 image: 14 of
# 100 queries pass the 0.8 threshold with 30; none with 10).
SHARPEN = 30.0


def build(
    name: str,
    device: str,
    *,
    standin: bool = False,
    opts: list[str] | tuple = (),
    weights: str = "",
    train: bool = False,
    point_sampled: bool = True,
    sharpen: float = SHARPEN,
    seed: int = 0,
) -> Built:
    """The model `name` ("R50", "Swin-L" or a config path) on `device`, in train or eval mode,
    its random weights drawn after `torch.manual_seed(seed)`. In eval mode without `weights` the
    class head is scaled by `sharpen` (see SHARPEN; 1 leaves it)."""
    torch.manual_seed(seed)
    if standin:
        from .standin import build_standin

        model = build_standin(device, point_sampled=point_sampled)
        model.train(train)
        return Built(name, model, None, model.num_classes)

    from detectron2.modeling import build_model

    import mask2former  # noqa: F401  (registers the model parts)
    from mask2former.config import load_config

    path = MODELS.get(name, name)
    if not os.path.isabs(path):
        path = os.path.join(REPO, path)
    full_opts = list(opts) + ["MODEL.DEVICE", device, "MODEL.WEIGHTS", weights or ""]
    full_opts += ["MODEL.MASK_FORMER.POINT_SAMPLED_LOSS", str(bool(point_sampled))]
    cfg = load_config(path, full_opts)
    model = build_model(cfg)
    if weights:
        from mask2former.checkpoint import MaskFormerCheckpointer  # the one checkpointer

        MaskFormerCheckpointer(model).load(weights)
    elif not train and sharpen != 1.0:
        with torch.no_grad():
            model.sem_seg_head.predictor.class_embed.weight.mul_(sharpen)
    model.train(train)
    return Built(name, model, cfg, int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES))


# ---- inputs -----------------------------------------------------------------------------------


def synthetic_image(h: int, w: int, seed: int) -> torch.Tensor:
    """uint8 (3, h, w): smooth colour blobs plus noise (never all zeros: zeros can run faster
    than real data and hide indexing errors)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(2, h // 64), max(2, w // 64), generator=g)
    img = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0]
    img = img * 200 + torch.rand(3, h, w, generator=g) * 55
    return img.clamp(0, 255).to(torch.uint8)


def load_images(pattern_dir: str, shapes_hw=None) -> list[torch.Tensor]:
    """Real images from a folder, resized as the COCO test mapper does (short 800, long <= 1333)."""
    from PIL import Image

    files = sorted(
        glob.glob(os.path.join(pattern_dir, "*.jpg"))
        + glob.glob(os.path.join(pattern_dir, "*.png"))
    )
    out = []
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        h, w = img.shape[:2]
        s = min(800 / min(h, w), 1333 / max(h, w))
        t = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float()
        t = F.interpolate(
            t, size=(int(h * s + 0.5), int(w * s + 0.5)), mode="bilinear", align_corners=False
        )
        out.append(t[0].round().clamp(0, 255).to(torch.uint8))
    return out


def inference_inputs(shapes, images_dir: str = "") -> list[dict]:
    """One detectron2 input dict per image: uint8 'image' on the CPU (as a data loader gives it),
    'height'/'width' = the image size (outputs at input resolution)."""
    imgs = (
        load_images(images_dir)
        if images_dir
        else [synthetic_image(h, w, i) for i, (h, w) in enumerate(shapes)]
    )
    return [{"image": im, "height": im.shape[1], "width": im.shape[2]} for im in imgs]


def training_batch(
    batch: int, size: int, num_classes: int, num_targets: int = 11, seed: int = 0
) -> list[dict]:
    """LSJ-like training inputs: `size` x `size` images (the padded crop), each with `num_targets`
    random rectangles/ellipses as `instances.gt_masks` (bool tensor, as the LSJ mappers give) and
    `gt_classes`. COCO panoptic has about 11 segments per image on average."""
    from detectron2.structures import Instances

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for b in range(batch):
        masks = []
        for k in range(num_targets):
            cy, cx = (torch.rand(2, generator=g) * size).tolist()
            ry, rx = ((torch.rand(2, generator=g) * 0.3 + 0.05) * size).tolist()
            if k % 2:
                m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            else:
                m = ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
            masks.append(m)
        inst = Instances((size, size))
        inst.gt_classes = torch.randint(0, num_classes, (num_targets,), generator=g)
        inst.gt_masks = torch.stack(masks)
        out.append(
            {
                "image": synthetic_image(size, size, 1000 + seed * 64 + b),
                "instances": inst,
                "height": size,
                "width": size,
            }
        )
    return out


# ---- where to hook -----------------------------------------------------------------------------


def stage_groups(model) -> dict[str, list]:
    """Top-level stages. The pixel decoder is called as `pixel_decoder.forward_features(...)` in the
    published head (no module hooks fire), so it is timed as head minus transformer decoder."""
    head = model.sem_seg_head
    return {"backbone": [model.backbone], "head": [head], "transformer_decoder": [head.predictor]}


def decoder_groups(model) -> dict[str, list]:
    """The transformer decoder and its layer kinds (published attribute names)."""
    pred = model.sem_seg_head.predictor
    groups = {"decoder": [pred]}
    for key, attr in (
        ("cross_attn", "transformer_cross_attention_layers"),
        ("self_attn", "transformer_self_attention_layers"),
        ("ffn", "transformer_ffn_layers"),
    ):
        mods = getattr(pred, attr, None)
        if mods is not None:
            groups[key] = list(mods)
    return groups
