"""Config keys of Mask2Former, with the published implementation's names and defaults.

`add_maskformer2_config(cfg)` must be called on a detectron2 config (after `add_deeplab_config`,
which provides the poly LR keys) before merging a Mask2Former YAML. Keys that exist only in this
project are grouped at the end under "extensions"; their defaults keep the published behaviour.
"""

import os

from detectron2.config import CfgNode as CN

from .config_validation import validate_config


def add_maskformer2_config(cfg: CN) -> None:
    """Add every Mask2Former config key, with its default, to `cfg` in place."""
    # ---- data -------------------------------------------------------------------------------
    # Train mapper: mask_former_semantic | mask_former_panoptic | mask_former_instance |
    # coco_instance_lsj | coco_panoptic_lsj | detectron2 (detectron2's DatasetMapper; else an error).
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    cfg.INPUT.COLOR_AUG_SSD = False  # SSD photometric jitter
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0  # 1.0 = plain random crop
    cfg.INPUT.SIZE_DIVISIBILITY = -1  # mapper-side padding: pad up to this fixed size

    # ---- solver -----------------------------------------------------------------------------
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"  # ADAMW | SGD
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1

    # ---- loss and decoder (MaskFormer) --------------------------------------------------------
    cfg.MODEL.MASK_FORMER = CN()
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.DICE_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.MASK_WEIGHT = 20.0
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.1
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 0
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 6  # number of predictions; decoder layers = DEC_LAYERS - 1
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "res5"
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False

    # ---- inference --------------------------------------------------------------------------
    cfg.MODEL.MASK_FORMER.TEST = CN()
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False

    # Model-side padding of the batched image; < 0 means the backbone's size_divisibility.
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32

    # ---- pixel decoder ----------------------------------------------------------------------
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"

    # ---- Swin backbone ----------------------------------------------------------------------
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    cfg.MODEL.SWIN.EMBED_DIM = 96
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    cfg.MODEL.SWIN.QKV_BIAS = True
    cfg.MODEL.SWIN.QK_SCALE = None
    cfg.MODEL.SWIN.DROP_RATE = 0.0
    cfg.MODEL.SWIN.ATTN_DROP_RATE = 0.0
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    cfg.MODEL.SWIN.APE = False
    cfg.MODEL.SWIN.PATCH_NORM = True
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SWIN.USE_CHECKPOINT = False

    # ---- transformer decoder ----------------------------------------------------------------
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"

    # ---- large-scale jitter (LSJ) -----------------------------------------------------------
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0

    # ---- MSDeformAttn pixel decoder ---------------------------------------------------------
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8

    # ---- point-sampled losses (Sec. 3.3) ----------------------------------------------------
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 112 * 112
    cfg.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75

    # ---- extensions: training (this project only) ---------------------------------------------
    # False = BCE/dice on full masks (predictions upsampled to the target size), Table 5 "mask";
    # the matcher still uses TRAIN_NUM_POINTS uniform points.
    cfg.MODEL.MASK_FORMER.POINT_SAMPLED_LOSS = True
    # Autocast dtype when SOLVER.AMP.ENABLED: "float16" (with loss scaling) | "bfloat16" (no
    # scaling; also on the CPU).
    cfg.SOLVER.AMP.PRECISION = "float16"
    # Checkpoint files: "pth" (one .pth, as Detectron2) | "safetensors" (weights as .safetensors,
    # training state as .state.pth); both written atomically, see docs/reliability.md.
    cfg.SOLVER.CHECKPOINT_FORMAT = "pth"
    # Iterations between training log lines (losses, lr, time, ETA); detectron2 hard-codes 20,
    # minutes of silence on a CPU.
    cfg.SOLVER.LOG_PERIOD = 20

    # ---- extensions: timm backbone (this project only; MODEL.BACKBONE.NAME "TimmBackbone") ----
    # Any timm model as the backbone, see docs/model.md. NAME: a `timm.list_models()` name,
    # optionally with its pretrained tag ("convnext_tiny.fb_in22k").
    cfg.MODEL.TIMM = CN()
    cfg.MODEL.TIMM.NAME = ""
    cfg.MODEL.TIMM.PRETRAINED = False  # timm's own weights (its hub / URL source and cache)
    # A local .safetensors / .pth of the same timm model (offline machines); wins over PRETRAINED.
    # MODEL.WEIGHTS (a whole Mask2Former checkpoint) is loaded afterwards and overrides both.
    cfg.MODEL.TIMM.PRETRAINED_FILE = ""
    # Indices into the model's feature_info (negative: from the end). Empty: the last four
    # levels, or for a plain ViT the last block (fed to the simple feature pyramid).
    cfg.MODEL.TIMM.OUT_INDICES = []
    # As MODEL.BACKBONE.FREEZE_AT for ResNets: 0 none, 1 the stem, k the stem and res2..res_k
    # (BatchNorm in frozen parts becomes frozen BN); a plain ViT: 1 the patch embedding and
    # tokens, >= 2 the whole ViT.
    cfg.MODEL.TIMM.FREEZE_AT = 0
    cfg.MODEL.TIMM.FROZEN_BN = False  # every BatchNorm frozen (as RESNETS.NORM "FrozenBN")
    cfg.MODEL.TIMM.DROP_PATH_RATE = 0.0  # stochastic depth; 0 = the model's default
    cfg.MODEL.TIMM.PYRAMID_CHANNELS = 256  # channels of the ViTDet simple pyramid (plain ViTs)
    # Extra constructor arguments of the timm model, e.g. {patch_size: 16, window_size: 8}.
    cfg.MODEL.TIMM.KWARGS = CN(new_allowed=True)

    # ---- extensions: evaluation (this project only) -------------------------------------------
    # Boundary AP (Cheng et al., CVPR 2021) next to mask AP in the instance evaluator; the
    # boundary band is dilation_ratio x image diagonal wide (the paper's Table 2 uses 0.02).
    cfg.TEST.BOUNDARY_AP = False
    cfg.TEST.BOUNDARY_AP_DILATION_RATIO = 0.02
    # Classes the semantic mIoU averages over: "v0.6" = in the ground truth or the prediction (a
    # class only predicted counts as IoU 0; detectron2 v0.6, the paper's numbers) | "gt_classes"
    # = in the ground truth only (detectron2 after v0.6). See docs/evaluation.md.
    cfg.TEST.MIOU_CONVENTION = "v0.6"

    # ---- extensions: inference precision (this project only) ----------------------------------
    # Autocast for the network (backbone, pixel decoder, transformer decoder) at inference;
    # post-processing always runs in float32. PRECISION "bfloat16" | "float16". On a CPU: bf16
    # only where the CPU computes it natively (AVX512_BF16 / AMX), else float32 with one log line
    # (mask2former.utils.precision); float16 is never used on a CPU.
    cfg.TEST.AMP = CN({"ENABLED": False})
    cfg.TEST.AMP.PRECISION = "bfloat16"


# ---- loading, with errors that say how to fix them -----------------------------------------
class ConfigKeyError(KeyError):
    """An unknown config key; the message suggests the closest valid keys."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def _all_keys(cfg: CN, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CN):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _closest_keys(cfg: CN, bad_key: str, n: int = 3) -> list[str]:
    import difflib

    candidates = _all_keys(cfg)
    upper = {c.upper(): c for c in candidates}
    # Compare the whole dotted path and, separately, the last component within the same parent.
    parent, _, leaf = bad_key.rpartition(".")
    siblings = [c for c in candidates if c.rpartition(".")[0] == parent]
    leaf_matches = difflib.get_close_matches(
        leaf.upper(), [s.rpartition(".")[2].upper() for s in siblings], n=n, cutoff=0.6
    )
    found = [f"{parent}.{m}" if parent else m for m in leaf_matches]
    found = [upper.get(f.upper(), f) for f in found]
    for m in difflib.get_close_matches(bad_key.upper(), list(upper), n=n, cutoff=0.75):
        if upper[m] not in found:
            found.append(upper[m])
    return found[:n]


def _explain_merge_error(cfg: CN, err: Exception, source: str) -> Exception:
    msg = str(err.args[0]) if err.args else str(err)
    if isinstance(err, KeyError) and "Non-existent config key" in msg:
        bad = msg.split("Non-existent config key:")[-1].strip().strip("'\"")
        hint = _closest_keys(cfg, bad)
        suggestion = f" Did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
        return ConfigKeyError(
            f"{source}: unknown config key '{bad}'.{suggestion} Fix the spelling, or call "
            "add_maskformer2_config(cfg) (and any add_*_config your project needs) before merging."
        )
    if isinstance(err, ValueError) and "Type mismatch" in msg:
        key = msg.split("for config key:")[-1].strip()
        return ValueError(
            f"{source}: wrong type for config key '{key}': {msg.split(' for config key')[0]}. "
            "The first type/value is the default's; give a value of that type (e.g. a list in "
            "brackets, a quoted string, True/False)."
        )
    return err


def load_config(config_file: str = "", opts: list[str] | None = None, freeze: bool = True) -> CN:
    """Detectron2 defaults + DeepLab keys + Mask2Former keys, then `config_file` and `opts`.

    Unknown keys raise `ConfigKeyError` naming the file and the closest valid keys; values of
    the wrong type raise `ValueError` naming the key and the expected type.
    """
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):  # else yacs asserts (AssertionError)
            raise FileNotFoundError(f"config file {config_file} does not exist.")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError) as e:
            raise _explain_merge_error(cfg, e, f"config file {config_file}") from None
        except FileNotFoundError as e:
            raise _explain_missing_base(config_file, e) from None
    if opts:
        try:
            cfg.merge_from_list(list(opts))
        except AssertionError as e:  # yacs asserts on odd-length lists and unknown keys
            msg = str(e)
            if "Non-existent key:" in msg:
                e = KeyError("Non-existent config key: " + msg.split("Non-existent key:")[-1])
            else:
                raise ValueError(
                    f"command-line overrides {list(opts)}: expected KEY VALUE pairs "
                    "(an even number of items), e.g. SOLVER.MAX_ITER 100"
                ) from None
            raise _explain_merge_error(cfg, e, "command-line override") from None
        except (KeyError, ValueError) as e:
            raise _explain_merge_error(cfg, e, "command-line override") from None
    # Every value in its valid range, checked once here (config_validation.py).
    validate_config(cfg, f"config file {config_file}" if config_file else "config")
    if freeze:
        cfg.freeze()
    return cfg


def _explain_missing_base(config_file: str, err: FileNotFoundError) -> Exception:
    """Name the config whose `_BASE_` points to a missing file."""
    import yaml

    path, seen = config_file, set()
    while path and os.path.isfile(path) and path not in seen:
        seen.add(path)
        with open(path) as f:
            data = yaml.safe_load(f)
        base = data.get("_BASE_") if isinstance(data, dict) else None
        if not isinstance(base, str):
            break
        base_path = os.path.expanduser(base)
        if not os.path.isabs(base_path):
            base_path = os.path.normpath(os.path.join(os.path.dirname(path), base_path))
        if not os.path.isfile(base_path):
            return FileNotFoundError(
                f"config file {path} has _BASE_: {base!r}, but {base_path} does not exist"
                + (f" (while loading {config_file})" if path != config_file else "")
                + ". _BASE_ is relative to the config that names it. Fix: correct the path, or "
                "restore the base config."
            )
        path = base_path
    return err
