"""Range checks of config values, run once when a config is loaded (`load_config`).

Without them a wrong value ends far from its cause: `NUM_OBJECT_QUERIES 0` or `HIDDEN_DIM` not
divisible by `NHEADS` in a torch shape error, `IMS_PER_BATCH 0` or `CHECKPOINT_PERIOD 0` in a
ZeroDivisionError, a `PIXEL_MEAN` of the wrong length in a broadcast error at the first image.
:func:`validate_config` lists every bad value at once, each with its key, its value and the
valid range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["ConfigValueError", "validate_config"]


class ConfigValueError(ValueError):
    """One or more config values outside their valid range; the message lists them."""


def _int_at_least(lo: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo), (
        f"an integer >= {lo}"
    )


def _number(lo: float, hi: float = math.inf, lo_open=False, hi_open=False):
    def ok(v: Any) -> bool:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    left = "(" if lo_open else "["
    right = ")" if hi_open or hi == math.inf else "]"
    return ok, f"a finite number in {left}{lo:g}, {hi:g}{right}"


_ONE_PLUS = _int_at_least(1)
_ZERO_PLUS = _int_at_least(0)
_NON_NEGATIVE = _number(0.0)
_PROBABILITY = _number(0.0, 1.0)

# key -> (check, valid range in words)
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": _ONE_PLUS,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": _ONE_PLUS,
    "MODEL.MASK_FORMER.HIDDEN_DIM": _ONE_PLUS,
    "MODEL.MASK_FORMER.NHEADS": _ONE_PLUS,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": _ONE_PLUS,
    "MODEL.MASK_FORMER.DEC_LAYERS": _ONE_PLUS,
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": _ONE_PLUS,
    "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": _number(1.0),
    "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": _PROBABILITY,
    "MODEL.MASK_FORMER.DROPOUT": _number(0.0, 1.0, hi_open=True),
    "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": _NON_NEGATIVE,
    "MODEL.MASK_FORMER.CLASS_WEIGHT": _NON_NEGATIVE,
    "MODEL.MASK_FORMER.MASK_WEIGHT": _NON_NEGATIVE,
    "MODEL.MASK_FORMER.DICE_WEIGHT": _NON_NEGATIVE,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": _ONE_PLUS,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": _ONE_PLUS,
    "SOLVER.IMS_PER_BATCH": _ONE_PLUS,
    "SOLVER.MAX_ITER": _ONE_PLUS,
    "SOLVER.CHECKPOINT_PERIOD": _ONE_PLUS,
    "SOLVER.BASE_LR": _NON_NEGATIVE,
    "SOLVER.WEIGHT_DECAY": _NON_NEGATIVE,
    "SOLVER.WARMUP_ITERS": _ZERO_PLUS,
    "SOLVER.WARMUP_FACTOR": _number(0.0, 1.0, lo_open=True),
    "SOLVER.BACKBONE_MULTIPLIER": _NON_NEGATIVE,
    "INPUT.IMAGE_SIZE": _ONE_PLUS,
    "INPUT.MIN_SCALE": _number(0.0, lo_open=True),
    "INPUT.MAX_SCALE": _number(0.0, lo_open=True),
    "INPUT.MAX_SIZE_TRAIN": _ONE_PLUS,
    "INPUT.MIN_SIZE_TEST": _ZERO_PLUS,  # 0: no resizing at test time (detectron2)
    "INPUT.MAX_SIZE_TEST": _ONE_PLUS,
    "DATALOADER.NUM_WORKERS": _ZERO_PLUS,
    "TEST.EVAL_PERIOD": _ZERO_PLUS,
}

CHOICES: dict[str, tuple[str, ...]] = {
    "SOLVER.AMP.PRECISION": ("float16", "bfloat16"),
    "SOLVER.CHECKPOINT_FORMAT": ("pth", "safetensors"),
}
CASE_INSENSITIVE = {"SOLVER.CHECKPOINT_FORMAT"}  # the checkpointer lower-cases it


def _get(cfg, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _problems(cfg) -> list[str]:
    out = []

    def bad(key: str, value: Any, valid: str) -> None:
        out.append(f"{key} is {value!r}; valid: {valid}")

    for key, (ok, valid) in RANGES.items():
        try:
            value = _get(cfg, key)
        except KeyError:
            continue  # a key another project's config does not declare
        if not ok(value):
            bad(key, value, valid)
    for key, choices in CHOICES.items():
        try:
            value = _get(cfg, key)
        except KeyError:
            continue
        if value not in choices and not (key in CASE_INSENSITIVE and str(value).lower() in choices):
            bad(key, value, " | ".join(choices))

    mf = cfg.MODEL.get("MASK_FORMER")
    if mf is not None and _ONE_PLUS[0](mf.HIDDEN_DIM) and _ONE_PLUS[0](mf.NHEADS):
        if mf.HIDDEN_DIM % mf.NHEADS:
            bad(
                "MODEL.MASK_FORMER.HIDDEN_DIM",
                mf.HIDDEN_DIM,
                f"a multiple of MODEL.MASK_FORMER.NHEADS ({mf.NHEADS}): each attention head "
                "gets HIDDEN_DIM / NHEADS channels",
            )
    if cfg.INPUT.get("MIN_SCALE") is not None and cfg.INPUT.get("MAX_SCALE") is not None:
        if cfg.INPUT.MIN_SCALE > cfg.INPUT.MAX_SCALE:
            bad(
                "INPUT.MIN_SCALE",
                cfg.INPUT.MIN_SCALE,
                f"<= INPUT.MAX_SCALE ({cfg.INPUT.MAX_SCALE})",
            )
    sizes = cfg.INPUT.MIN_SIZE_TRAIN
    sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
    if not sizes or not all(_ONE_PLUS[0](s) for s in sizes):
        bad("INPUT.MIN_SIZE_TRAIN", tuple(sizes), "one or more integers >= 1")

    channels = {"RGB": 3, "BGR": 3, "L": 1}.get(cfg.INPUT.FORMAT)
    for key in ("MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD"):
        value = list(_get(cfg, key))
        if channels is not None and len(value) != channels:
            bad(
                key,
                value,
                f"{channels} numbers, one per channel of INPUT.FORMAT {cfg.INPUT.FORMAT}",
            )
        elif key.endswith("STD") and not all(
            isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in value
        ):
            bad(key, value, "numbers > 0 (the image is divided by them)")

    clip = cfg.SOLVER.get("CLIP_GRADIENTS")
    if (
        clip is not None
        and clip.ENABLED
        and not (isinstance(clip.CLIP_VALUE, (int, float)) and clip.CLIP_VALUE > 0)
    ):
        bad("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", clip.CLIP_VALUE, "a number > 0 when ENABLED")
    return out


def validate_config(cfg, source: str = "config") -> None:
    """Raise :class:`ConfigValueError` listing every value outside its valid range."""
    problems = _problems(cfg)
    if problems:
        raise ConfigValueError(
            f"{source}: {len(problems)} config value(s) out of range:\n  "
            + "\n  ".join(problems)
            + "\nFix: change them in the YAML file or the command-line overrides."
        )
