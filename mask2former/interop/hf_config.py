"""Config translation between transformers' Mask2Former `config.json` and our YAML configs.

`cfg_from_hf` starts from one of our paper configs (chosen by the number of classes and the task,
for the dataset settings: inputs, test-time sizes, thresholds, DATASETS) and overrides every
architecture value from `config.json`; `hf_config_from_cfg` writes the other direction.
`layout_from_cfg` gives the name-map layout (`hf.Layout`) of a config.
"""

from __future__ import annotations

import glob
import math
import os

from detectron2.config import CfgNode

from ..config import load_config
from .hf import Layout

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "configs")
STAGES = ["stage1", "stage2", "stage3", "stage4"]
RESNET_DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
                 152: [3, 8, 36, 3]}  # fmt: skip
# number of classes -> (dataset folder, task) of the published models; the first is the default.
KNOWN_DATASETS = {
    133: [("coco", "panoptic")],
    80: [("coco", "instance")],
    150: [("ade20k", "semantic"), ("ade20k", "panoptic")],
    100: [("ade20k", "instance")],
    19: [("cityscapes", "semantic"), ("cityscapes", "panoptic")],
    8: [("cityscapes", "instance")],
    65: [("mapillary-vistas", "semantic"), ("mapillary-vistas", "panoptic")],
}
TASKS = ("semantic", "instance", "panoptic")
_MAPPER_TASK = {
    "mask_former_semantic": "semantic",
    "mask_former_instance": "instance",
    "coco_instance_lsj": "instance",
    "mask_former_panoptic": "panoptic",
    "coco_panoptic_lsj": "panoptic",
}


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"not supported by this converter: {what}")


# ---- layout -----------------------------------------------------------------------------------
def layout_from_cfg(cfg: CfgNode) -> Layout:
    """The name-map layout of a Mask2Former config (raises ValueError for what HF cannot hold)."""
    m = cfg.MODEL
    _require(m.SEM_SEG_HEAD.PIXEL_DECODER_NAME == "MSDeformAttnPixelDecoder",
             f"PIXEL_DECODER_NAME {m.SEM_SEG_HEAD.PIXEL_DECODER_NAME}")  # fmt: skip
    _require(m.MASK_FORMER.TRANSFORMER_DECODER_NAME == "MultiScaleMaskedTransformerDecoder",
             f"TRANSFORMER_DECODER_NAME {m.MASK_FORMER.TRANSFORMER_DECODER_NAME}")  # fmt: skip
    _require(list(m.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES)
             == ["res3", "res4", "res5"], "deformable encoder inputs other than res3-res5")  # fmt: skip
    _require(m.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS == 4, "N_POINTS != 4")
    common = {
        "enc_layers": m.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS,
        "dec_layers": m.MASK_FORMER.DEC_LAYERS - 1,
        "fpn_levels": int(math.log2(8) - math.log2(m.SEM_SEG_HEAD.COMMON_STRIDE)),
        "decoder_input_proj": m.SEM_SEG_HEAD.CONVS_DIM != m.MASK_FORMER.HIDDEN_DIM
        or m.MASK_FORMER.ENFORCE_INPUT_PROJ,
    }
    name = m.BACKBONE.NAME
    if name == "D2SwinTransformer":
        s = m.SWIN
        _require(
            not s.APE and s.PATCH_NORM and s.QK_SCALE is None, "Swin APE / no patch norm / QK_SCALE"
        )
        return Layout("swin", tuple(s.DEPTHS), swin_window=s.WINDOW_SIZE,
                      swin_qkv_bias=s.QKV_BIAS, **common)  # fmt: skip
    if name == "build_resnet_backbone":
        r = m.RESNETS
        _require(r.DEPTH in RESNET_DEPTHS, f"RESNETS.DEPTH {r.DEPTH}")
        _require(r.NUM_GROUPS == 1 and r.RES5_DILATION == 1 and not any(r.DEFORM_ON_PER_STAGE),
                 "ResNeXt groups, dilated res5 or deformable convolutions")  # fmt: skip
        block = "bottleneck" if r.DEPTH >= 50 else "basic"
        if block == "bottleneck":
            _require(r.WIDTH_PER_GROUP * 4 == r.RES2_OUT_CHANNELS, "bottleneck width != res2 / 4")
        return Layout("resnet", tuple(RESNET_DEPTHS[r.DEPTH]), resnet_block=block,
                      res2_shortcut=r.STEM_OUT_CHANNELS != r.RES2_OUT_CHANNELS,
                      bn_counters=r.NORM in ("BN", "SyncBN", "nnSyncBN"), **common)  # fmt: skip
    raise ValueError(
        f"MODEL.BACKBONE.NAME {name!r}: the HF converter handles 'D2SwinTransformer' and "
        "'build_resnet_backbone'"
    )


# ---- config.json -> our config ----------------------------------------------------------------
def class_names_from_hf(hf: dict) -> list[str]:
    """Class names in contiguous-id order from `id2label` (ids must be 0..K-1)."""
    id2label = {int(k): v for k, v in hf.get("id2label", {}).items()}
    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise ValueError(f"config.json id2label must have ids 0..K-1, got {sorted(id2label)[:10]}")
    return [id2label[i] for i in range(len(id2label))]


def _task_hint(hf: dict, task: str | None, choices: list) -> tuple[str, str]:
    hint = task or next((t for t in TASKS if t in str(hf.get("_name_or_path", ""))), None)
    for dataset, t in choices:
        if hint is None or t == hint:
            return dataset, t
    raise ValueError(f"task {hint!r} has no published config for {len(hf['id2label'])} classes")


def base_config_for(hf: dict, task: str | None = None) -> str | None:
    """Our R50 paper config of the dataset/task the HF model was trained for (None: unknown)."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task {task!r}: expected one of {TASKS}")
    choices = KNOWN_DATASETS.get(len(class_names_from_hf(hf)))
    if not choices:
        return None
    dataset, t = _task_hint(hf, task, choices)
    found = sorted(glob.glob(os.path.join(CONFIGS_DIR, dataset, f"{t}-segmentation", "*R50*.yaml")))
    return found[0] if found else None


def _backbone_opts(bb: dict) -> list:
    kind = bb.get("model_type")
    if kind == "swin":
        _require(not bb.get("use_absolute_embeddings", False), "Swin absolute position embeddings")
        _require(bb.get("hidden_act", "gelu") == "gelu", f"Swin hidden_act {bb.get('hidden_act')}")
        _require(bb.get("layer_norm_eps", 1e-5) == 1e-5, f"Swin layer_norm_eps {bb.get('layer_norm_eps')}")  # fmt: skip
        _require(bb.get("num_channels", 3) == 3, f"{bb.get('num_channels')} input channels")
        _require(list(bb.get("out_features", STAGES)) == STAGES, "out_features != stage1..4")
        return [
            ("MODEL.BACKBONE.NAME", "D2SwinTransformer"),
            ("MODEL.SWIN.EMBED_DIM", bb["embed_dim"]),
            ("MODEL.SWIN.DEPTHS", list(bb["depths"])),
            ("MODEL.SWIN.NUM_HEADS", list(bb["num_heads"])),
            ("MODEL.SWIN.WINDOW_SIZE", bb["window_size"]),
            ("MODEL.SWIN.PATCH_SIZE", bb.get("patch_size", 4)),
            ("MODEL.SWIN.MLP_RATIO", float(bb.get("mlp_ratio", 4.0))),
            ("MODEL.SWIN.QKV_BIAS", bool(bb.get("qkv_bias", True))),
            ("MODEL.SWIN.PRETRAIN_IMG_SIZE", bb.get("image_size", 224)),
            ("MODEL.SWIN.DROP_PATH_RATE", float(bb.get("drop_path_rate", 0.3))),
            ("MODEL.SWIN.APE", False),
            ("MODEL.SWIN.PATCH_NORM", True),
        ]
    if kind == "resnet":
        depths, widths = list(bb["depths"]), list(bb["hidden_sizes"])
        block = bb.get("layer_type", "bottleneck")
        matches = [d for d, v in RESNET_DEPTHS.items() if v == depths and (d >= 50) == (block == "bottleneck")]  # fmt: skip
        _require(bool(matches), f"ResNet depths {depths} ({block})")
        _require(widths == [widths[0] * 2**i for i in range(4)], f"hidden_sizes {widths}")
        _require(not bb.get("downsample_in_first_stage", False), "downsample_in_first_stage")
        _require(
            bb.get("hidden_act", "relu") == "relu", f"ResNet hidden_act {bb.get('hidden_act')}"
        )
        _require(list(bb.get("out_features", STAGES)) == STAGES, "out_features != stage1..4")
        return [
            ("MODEL.BACKBONE.NAME", "build_resnet_backbone"),
            ("MODEL.RESNETS.DEPTH", matches[0]),
            ("MODEL.RESNETS.STEM_OUT_CHANNELS", bb.get("embedding_size", 64)),
            ("MODEL.RESNETS.RES2_OUT_CHANNELS", widths[0]),
            ("MODEL.RESNETS.WIDTH_PER_GROUP", widths[0] // 4 if block == "bottleneck" else 64),
            ("MODEL.RESNETS.NUM_GROUPS", 1),
            ("MODEL.RESNETS.STRIDE_IN_1X1", bool(bb.get("downsample_in_bottleneck", False))),
            ("MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"]),
        ]
    raise ValueError(
        f"backbone model_type {kind!r}: the converter handles 'swin' and 'resnet' "
        "(timm backbones are not supported)"
    )


def cfg_from_hf(
    hf: dict,
    task: str | None = None,
    base_config: str | None = None,
    preprocessor: dict | None = None,
    opts: list[str] | None = None,
) -> tuple[CfgNode, str]:
    """Our config for an HF Mask2Former `config.json` (dict). Returns (cfg, base config used).

    task: "semantic" | "instance" | "panoptic" picks between published configs with the same
    number of classes (default: from the checkpoint name, else the first in KNOWN_DATASETS).
    preprocessor: `preprocessor_config.json`, if any (mean/std, test sizes).
    opts: KEY VALUE overrides applied last (e.g. MODEL.RESNETS.NORM SyncBN).
    """
    bb = hf.get("backbone_config")
    if not isinstance(bb, dict) or hf.get("use_timm_backbone"):
        raise ValueError("config.json has no transformers backbone_config (timm backbones are not supported)")  # fmt: skip
    _require(hf.get("activation_function", "relu") == "relu", "decoder activation != relu")
    _require(hf.get("encoder_feedforward_dim", 1024) == 1024, "encoder_feedforward_dim != 1024")
    _require(list(hf.get("feature_strides", [4, 8, 16, 32])) == [4, 8, 16, 32], "feature_strides")
    names = class_names_from_hf(hf)
    known = base_config or base_config_for(hf, task)
    base = known or sorted(glob.glob(os.path.join(
        CONFIGS_DIR, "coco", "panoptic-segmentation", "*R50*.yaml")))[0]  # fmt: skip
    values = _backbone_opts(bb) + [
        ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", len(names)),
        ("MODEL.SEM_SEG_HEAD.CONVS_DIM", hf.get("feature_size", 256)),
        ("MODEL.SEM_SEG_HEAD.MASK_DIM", hf.get("mask_feature_size", 256)),
        ("MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", hf.get("encoder_layers", 6)),
        ("MODEL.SEM_SEG_HEAD.COMMON_STRIDE", hf.get("common_stride", 4)),
        ("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", hf.get("ignore_value", 255)),
        ("MODEL.MASK_FORMER.HIDDEN_DIM", hf.get("hidden_dim", 256)),
        ("MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", hf.get("num_queries", 100)),
        ("MODEL.MASK_FORMER.NHEADS", hf.get("num_attention_heads", 8)),
        ("MODEL.MASK_FORMER.DIM_FEEDFORWARD", hf.get("dim_feedforward", 2048)),
        ("MODEL.MASK_FORMER.DEC_LAYERS", hf.get("decoder_layers", 10)),
        ("MODEL.MASK_FORMER.PRE_NORM", bool(hf.get("pre_norm", False))),
        ("MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ", bool(hf.get("enforce_input_projection", False))),
        ("MODEL.MASK_FORMER.DROPOUT", float(hf.get("dropout", 0.0))),
        ("MODEL.MASK_FORMER.NO_OBJECT_WEIGHT", float(hf.get("no_object_weight", 0.1))),
        ("MODEL.MASK_FORMER.CLASS_WEIGHT", float(hf.get("class_weight", 2.0))),
        ("MODEL.MASK_FORMER.MASK_WEIGHT", float(hf.get("mask_weight", 5.0))),
        ("MODEL.MASK_FORMER.DICE_WEIGHT", float(hf.get("dice_weight", 5.0))),
        ("MODEL.MASK_FORMER.TRAIN_NUM_POINTS", hf.get("train_num_points", 12544)),
        ("MODEL.MASK_FORMER.OVERSAMPLE_RATIO", float(hf.get("oversample_ratio", 3.0))),
        (
            "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO",
            float(hf.get("importance_sample_ratio", 0.75)),
        ),  # fmt: skip
        ("MODEL.MASK_FORMER.DEEP_SUPERVISION", bool(hf.get("use_auxiliary_loss", True))),
        ("INPUT.FORMAT", "RGB"),  # transformers models take RGB
    ]
    if preprocessor:
        scale = 255.0 if preprocessor.get("do_rescale", True) else 1.0
        if "image_mean" in preprocessor:
            values.append(("MODEL.PIXEL_MEAN", [v * scale for v in preprocessor["image_mean"]]))
            values.append(("MODEL.PIXEL_STD", [v * scale for v in preprocessor["image_std"]]))
        size = preprocessor.get("size") or {}
        if "shortest_edge" in size:
            values.append(("INPUT.MIN_SIZE_TEST", int(size["shortest_edge"])))
        if "longest_edge" in size:
            values.append(("INPUT.MAX_SIZE_TEST", int(size["longest_edge"])))
    if known is None:  # a dataset we do not know: no dataset metadata, semantic output only
        values += [("DATASETS.TRAIN", ()), ("DATASETS.TEST", ()),
                 ("MODEL.MASK_FORMER.TEST.PANOPTIC_ON", False),
                 ("MODEL.MASK_FORMER.TEST.INSTANCE_ON", False)]  # fmt: skip
    cfg = load_config(base, freeze=False)
    for key, value in values:
        node, _, leaf = key.rpartition(".")
        parent = cfg
        for part in node.split("."):
            parent = parent[part]
        parent[leaf] = value
    if opts:
        cfg.merge_from_list(list(opts))
    layout_from_cfg(cfg)  # fail now on anything the name map cannot do
    return cfg, base


def yaml_from_hf(cfg: CfgNode, base: str, names: list[str], source: str) -> str:
    """The YAML text of a converted config, with the class names in a comment."""
    lines = [
        f"# Converted from the transformers Mask2Former checkpoint {source}",
        f"# by tools/convert_hf_checkpoint.py; dataset/test settings from {os.path.relpath(base, CONFIGS_DIR + '/..')}.",  # fmt: skip
        f"# Classes (contiguous id: name), {len(names)} + 'no object' at index {len(names)}:",
    ]
    lines += [f"#   {i}: {n}" for i, n in enumerate(names)]
    if not cfg.DATASETS.TRAIN:
        lines.append(
            "# Unknown dataset: register yours (docs/datasets.md) and set DATASETS.TRAIN/TEST"
        )
    return "\n".join(lines) + "\n" + cfg.dump()


# ---- our config -> config.json ----------------------------------------------------------------
def class_names_of(cfg: CfgNode) -> list[str]:
    """Names of the K classes from DATASETS.TRAIN[0]'s metadata, else 'class_{i}'."""
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if cfg.DATASETS.TRAIN:
        from detectron2.data import MetadataCatalog

        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
        for field in ("stuff_classes", "thing_classes"):
            try:
                names = list(getattr(meta, field))
            except (AttributeError, KeyError, OSError):
                continue
            if len(names) == k:
                return names
    return [f"class_{i}" for i in range(k)]


def hf_config_from_cfg(cfg: CfgNode, names: list[str]) -> dict:
    """A transformers `config.json` (dict) for our config."""
    lay, m = layout_from_cfg(cfg), cfg.MODEL
    if lay.backbone == "swin":
        s = m.SWIN
        bb = {"model_type": "swin", "embed_dim": s.EMBED_DIM, "depths": list(s.DEPTHS),
              "num_heads": list(s.NUM_HEADS), "window_size": s.WINDOW_SIZE,
              "patch_size": s.PATCH_SIZE, "mlp_ratio": s.MLP_RATIO, "qkv_bias": s.QKV_BIAS,
              "image_size": s.PRETRAIN_IMG_SIZE, "drop_path_rate": s.DROP_PATH_RATE,
              "use_absolute_embeddings": False, "hidden_act": "gelu", "layer_norm_eps": 1e-5}  # fmt: skip
    else:
        r = m.RESNETS
        bb = {"model_type": "resnet", "embedding_size": r.STEM_OUT_CHANNELS,
              "hidden_sizes": [r.RES2_OUT_CHANNELS * 2**i for i in range(4)],
              "depths": list(lay.stage_depths), "layer_type": lay.resnet_block,
              "hidden_act": "relu", "downsample_in_first_stage": False,
              "downsample_in_bottleneck": bool(r.STRIDE_IN_1X1)}  # fmt: skip
    bb["out_features"] = list(STAGES)
    mf, head = m.MASK_FORMER, m.SEM_SEG_HEAD
    task = _MAPPER_TASK.get(cfg.INPUT.DATASET_MAPPER_NAME, "unknown-task")
    return {
        # Read back by cfg_from_hf to pick the task where the class count is ambiguous.
        "_name_or_path": f"mask2former-{lay.backbone}-{task}",
        "architectures": ["Mask2FormerForUniversalSegmentation"],
        "model_type": "mask2former",
        "backbone_config": bb,
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
        "feature_size": head.CONVS_DIM,
        "mask_feature_size": head.MASK_DIM,
        "encoder_layers": head.TRANSFORMER_ENC_LAYERS,
        "encoder_feedforward_dim": 1024,
        "common_stride": head.COMMON_STRIDE,
        "ignore_value": head.IGNORE_VALUE,
        "feature_strides": [4, 8, 16, 32],
        "hidden_dim": mf.HIDDEN_DIM,
        "num_queries": mf.NUM_OBJECT_QUERIES,
        "num_attention_heads": mf.NHEADS,
        "dim_feedforward": mf.DIM_FEEDFORWARD,
        "decoder_layers": mf.DEC_LAYERS,
        "pre_norm": mf.PRE_NORM,
        "enforce_input_projection": mf.ENFORCE_INPUT_PROJ,
        "dropout": mf.DROPOUT,
        "activation_function": "relu",
        "no_object_weight": mf.NO_OBJECT_WEIGHT,
        "class_weight": mf.CLASS_WEIGHT,
        "mask_weight": mf.MASK_WEIGHT,
        "dice_weight": mf.DICE_WEIGHT,
        "train_num_points": mf.TRAIN_NUM_POINTS,
        "oversample_ratio": mf.OVERSAMPLE_RATIO,
        "importance_sample_ratio": mf.IMPORTANCE_SAMPLE_RATIO,
        "use_auxiliary_loss": mf.DEEP_SUPERVISION,
    }


def preprocessor_config_from_cfg(cfg: CfgNode) -> dict:
    """`preprocessor_config.json` for transformers' Mask2FormerImageProcessor (RGB, 0-1 scale)."""
    mean, std = list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)
    if cfg.INPUT.FORMAT == "BGR":  # the converted model takes RGB (first conv flipped)
        mean, std = mean[::-1], std[::-1]
    return {
        "image_processor_type": "Mask2FormerImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": cfg.INPUT.MIN_SIZE_TEST, "longest_edge": cfg.INPUT.MAX_SIZE_TEST},
        "size_divisor": 32,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [v / 255 for v in mean],
        "image_std": [v / 255 for v in std],
        "ignore_index": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        "do_reduce_labels": False,
        "num_labels": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
    }
