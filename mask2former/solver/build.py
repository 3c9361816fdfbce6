"""AdamW/SGD with per-parameter LR and weight decay, full-model gradient clipping, LR schedules.

Sec. 4.2: AdamW, learning rate 1e-4, weight decay 0.05, backbone LR x 0.1; step schedule (x0.1 at
0.9 and 0.95 of training) on COCO, poly(0.9) elsewhere. As in the reference implementation, norm
layers and embeddings get their own weight decay (`SOLVER.WEIGHT_DECAY_NORM`,
`SOLVER.WEIGHT_DECAY_EMBED`, both 0) and the gradient of the whole model is clipped to an L2
norm of `SOLVER.CLIP_GRADIENTS.CLIP_VALUE` (0.01) when `CLIP_TYPE` is "full_model".

The same rules cover timm backbones (`TimmBackbone`): timm's norm layers count as norms, and
the parameters a timm model lists in its `no_weight_decay()` (position embeddings, class and
register tokens, relative position tables) are not decayed.
"""

import fnmatch
import itertools
import logging
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.projects.deeplab.lr_scheduler import WarmupPolyLR as _DeepLabWarmupPolyLR
from detectron2.solver.build import build_lr_scheduler as build_d2_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping
from timm import layers as timm_layers
from torch import nn

logger = logging.getLogger(__name__)

NORM_MODULE_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,  # detectron2's NaiveSyncBatchNorm subclasses BatchNorm2d
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)
# timm's norms that do not subclass torch's (its LayerNorm2d, GroupNorm, BatchNormAct2d do);
# the EvoNorm "a" variants subclass the ones listed.
NORM_MODULE_TYPES += tuple(
    getattr(timm_layers, n)
    for n in (
        "RmsNorm",
        "RmsNorm2d",
        "SimpleNorm",
        "SimpleNorm2d",
        "RmsNormFp32",
        "RmsNorm2dFp32",
        "SimpleNormFp32",
        "SimpleNorm2dFp32",
        "EvoNorm2dB0",
        "EvoNorm2dB1",
        "EvoNorm2dB2",
        "EvoNorm2dS0",
        "EvoNorm2dS1",
        "EvoNorm2dS2",
        "FilterResponseNormAct2d",
        "FilterResponseNormTlu2d",
    )
    if hasattr(timm_layers, n)
)
# Swin parameters that are positional tables, not weights: never decayed (reference behaviour).
NO_DECAY_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")
OPTIMIZERS = ("ADAMW", "SGD")


def get_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_embed: float,
    backbone_multiplier: float,
) -> list[dict[str, Any]]:
    """Parameter groups with the reference per-parameter rules, merged by (lr, weight_decay).

    * lr = base_lr, times `backbone_multiplier` when the owning module's name contains "backbone"
      — except inside a module with `trains_at_base_lr = True` (new layers within a backbone,
      e.g. the ViTDet simple feature pyramid);
    * weight decay = `weight_decay`, except Swin position tables and what a sub-module lists in
      timm's `no_weight_decay()` (0), parameters of norm layers (`weight_decay_norm`) and of
      `nn.Embedding` (`weight_decay_embed`).
    Frozen parameters are skipped and shared parameters appear once.
    """
    no_decay = declared_no_weight_decay(model)
    base_lr_prefixes = tuple(
        name + "." for name, m in model.named_modules() if getattr(m, "trains_at_base_lr", False)
    )
    seen: set[int] = set()
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            in_backbone = "backbone" in module_name and not full_name.startswith(base_lr_prefixes)
            lr = base_lr * (backbone_multiplier if in_backbone else 1.0)
            wd = weight_decay
            if any(n in param_name for n in NO_DECAY_PARAM_NAMES) or full_name in no_decay:
                wd = 0.0
            if isinstance(module, NORM_MODULE_TYPES):
                wd = weight_decay_norm
            if isinstance(module, nn.Embedding):
                wd = weight_decay_embed
            groups.setdefault((lr, wd), []).append(param)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def declared_no_weight_decay(model: nn.Module) -> set[str]:
    """Full names of the parameters that sub-modules exclude from weight decay with timm's
    `no_weight_decay()` convention (names or fnmatch patterns relative to that module)."""
    names = [n for n, _ in model.named_parameters()]
    out: set[str] = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if not callable(fn):
            continue
        pre = f"{prefix}." if prefix else ""
        patterns = [pre + p for p in fn()]
        out.update(n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns))
    return out


_CLIPPED_CLASSES: dict[tuple[type, float, float], type] = {}


def maybe_add_full_model_gradient_clipping(
    optimizer_cls: type, clip_value: float, norm_type: float = 2.0, enabled: bool = True
) -> type:
    """`optimizer_cls`, or a subclass whose `step()` first clips the global gradient norm.

    The norm is taken over all parameters of all groups together ("full_model"), unlike
    detectron2's per-parameter clipping. Under fp16 AMP `GradScaler.step` unscales the gradients
    before calling `step()`, so the threshold applies to true gradients.
    """
    if not enabled or clip_value <= 0:
        return optimizer_cls
    key = (optimizer_cls, float(clip_value), float(norm_type))
    if key not in _CLIPPED_CLASSES:

        def step(self, closure=None):
            params = itertools.chain(*[g["params"] for g in self.param_groups])
            torch.nn.utils.clip_grad_norm_(params, clip_value, norm_type=norm_type)
            return optimizer_cls.step(self, closure=closure)

        _CLIPPED_CLASSES[key] = type(
            f"FullModelGradientClipping{optimizer_cls.__name__}", (optimizer_cls,), {"step": step}
        )
    return _CLIPPED_CLASSES[key]


def build_optimizer(cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser of `cfg.SOLVER` (OPTIMIZER = "ADAMW" | "SGD") over `get_param_groups`."""
    s = cfg.SOLVER
    params = get_param_groups(
        model,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        weight_decay_norm=s.WEIGHT_DECAY_NORM,
        weight_decay_embed=s.WEIGHT_DECAY_EMBED,
        backbone_multiplier=s.BACKBONE_MULTIPLIER,
    )
    name = s.OPTIMIZER.upper()
    if name not in OPTIMIZERS:
        raise ValueError(
            f"SOLVER.OPTIMIZER: unknown optimizer {s.OPTIMIZER!r}; valid: {OPTIMIZERS}"
        )
    full_model = s.CLIP_GRADIENTS.ENABLED and s.CLIP_GRADIENTS.CLIP_TYPE == "full_model"
    if name == "ADAMW":
        optimizer_cls, kwargs = torch.optim.AdamW, {}
    else:
        optimizer_cls, kwargs = torch.optim.SGD, {"momentum": s.MOMENTUM}
    optimizer_cls = maybe_add_full_model_gradient_clipping(
        optimizer_cls, s.CLIP_GRADIENTS.CLIP_VALUE, s.CLIP_GRADIENTS.NORM_TYPE, enabled=full_model
    )
    optimizer = optimizer_cls(params, s.BASE_LR, **kwargs)
    if not full_model:  # detectron2's "value" / "norm" per-parameter clipping, if enabled
        optimizer = maybe_add_gradient_clipping(cfg, optimizer)
    return optimizer


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer):
    """SOLVER.LR_SCHEDULER_NAME: "WarmupPolyLR" (DeepLab's) or any detectron2 schedule.

    WarmupPolyLR: lr = base_lr * warmup(it) * (1 - it / MAX_ITER) ** POLY_LR_POWER;
    WarmupMultiStepLR: x GAMMA at each of SOLVER.STEPS after a warm-up of WARMUP_ITERS.
    On resume the schedule's shape comes from the config for both (see `WarmupPolyLR`).
    """
    s = cfg.SOLVER
    if s.LR_SCHEDULER_NAME == "WarmupPolyLR":
        return WarmupPolyLR(
            optimizer,
            s.MAX_ITER,
            warmup_factor=s.WARMUP_FACTOR,
            warmup_iters=s.WARMUP_ITERS,
            warmup_method=s.WARMUP_METHOD,
            power=s.POLY_LR_POWER,
            constant_ending=s.POLY_LR_CONSTANT_ENDING,
        )
    return build_d2_lr_scheduler(cfg, optimizer)


class WarmupPolyLR(_DeepLabWarmupPolyLR):
    """detectron2's WarmupPolyLR, except that resuming keeps the config's schedule.

    detectron2's version saves MAX_ITER, the warm-up and the power in its state and restores
    them from the checkpoint: resuming with a larger SOLVER.MAX_ITER (to train longer) silently
    kept the old schedule, and past the old MAX_ITER crashed (`math domain error`). Here only
    the progress (`last_epoch`, base LRs) is restored, as detectron2's own schedules
    (`LRMultiplier`) do; a changed schedule is logged.
    """

    _CONFIG_KEYS = (
        "max_iters",
        "warmup_factor",
        "warmup_iters",
        "warmup_method",
        "power",
        "constant_ending",
    )

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        saved = {k: state.pop(k) for k in self._CONFIG_KEYS if k in state}
        changed = {k: (v, getattr(self, k)) for k, v in saved.items() if v != getattr(self, k)}
        if changed:
            logger.warning(
                "LR schedule: using the config's values, not the checkpoint's: "
                + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
            )
        super().load_state_dict(state)
