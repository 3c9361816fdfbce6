"""Checks around saving and loading checkpoints, with errors that say what is wrong and which
checkpoints exist. Called by `MaskFormerCheckpointer` (one line each):

* :func:`check_state_finite` before every save: a checkpoint is never written with NaN/Inf
  weights, so ``last_checkpoint`` only ever names a checkpoint with finite weights;
* :func:`resolve_resume_checkpoint` on ``--resume``: the file ``last_checkpoint`` names must exist
  and be non-empty; the message says which checkpoint is taken;
* :func:`check_resume_compatible` on ``--resume``: the model's parameter names and shapes must be
  the checkpoint's (a changed config resumed into an old OUTPUT_DIR is an error, not a warning),
  and its weights finite;
* :func:`retag_after_nonfinite_forward` when a forward pass stops non-finite right after a
  checkpoint: ``last_checkpoint`` moves back to the one before (resuming would replay the failure);
* :func:`require_loaded_weights` for inference (``--eval-only``): a checkpoint that left most of
  the model at its random initialisation is an error unless explicitly allowed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence

import torch

from ..utils.atomic_file import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointMismatchError",
    "ResumeError",
    "check_resume_compatible",
    "check_state_finite",
    "list_checkpoints",
    "require_loaded_weights",
    "resolve_resume_checkpoint",
    "retag_after_nonfinite_forward",
    "shape_mismatches",
]


class ResumeError(RuntimeError):
    """--resume cannot continue from the output directory's checkpoints."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model (resumed with another shape, or mostly not loaded)."""


_CKPT_RE = re.compile(r"^model_(\d+|final)\.(pth|safetensors)$")


def list_checkpoints(save_dir: str) -> list[str]:
    """The checkpoint files in `save_dir` (model_XXXXXXX.pth/.safetensors, model_final), oldest
    iteration first, model_final last."""
    try:
        names = [n for n in os.listdir(save_dir) if _CKPT_RE.match(n)]
    except OSError:
        return []

    def key(n: str):
        it = _CKPT_RE.match(n).group(1)
        return (1, 0) if it == "final" else (0, int(it))

    return sorted(names, key=key)


def _existing(save_dir: str) -> str:
    names = list_checkpoints(save_dir)
    if not names:
        return f"There is no checkpoint file in {save_dir}."
    sizes = []
    for n in names:
        try:
            sizes.append(f"{n} ({os.path.getsize(os.path.join(save_dir, n))} bytes)")
        except OSError:
            sizes.append(n)
    return f"Checkpoints in {save_dir}: {', '.join(sizes)}."


def check_state_finite(state_dict: Mapping[str, torch.Tensor], path: str, last: str | None) -> None:
    """Refuse to save `state_dict` to `path` when a floating-point entry is NaN/Inf."""
    # engine/ imports this package: its guard is imported where it is used.
    from ..engine.weights_guard import NonFiniteWeightsError, nonfinite_entries

    bad = nonfinite_entries(state_dict)
    if not bad:
        return
    shown = ", ".join(f"{k} ({n} of {t} values)" for k, n, t in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise NonFiniteWeightsError(
        f"Refusing to save checkpoint {path}: its weights are not finite: {shown}{more}. Nothing "
        "was written, and 'last_checkpoint' "
        + (f"still names {last}." if last else "names no checkpoint.")
        + " Fix: lower SOLVER.BASE_LR or enable gradient clipping "
        "(SOLVER.CLIP_GRADIENTS.ENABLED True), then restart from the last good checkpoint.",
        -1,
        [k for k, _, _ in bad],
    )


def resolve_resume_checkpoint(save_dir: str) -> str:
    """The checkpoint ``last_checkpoint`` names in `save_dir`, after checking that it exists and is
    not empty; raises :class:`ResumeError` naming the problem and the checkpoints that exist."""
    tag = os.path.join(save_dir, "last_checkpoint")
    with open(tag) as f:
        name = f.read().strip()
    fix = (
        "Fix: write the name of the checkpoint to resume from into "
        f"{tag} (e.g. the newest one listed), or start without --resume."
    )
    if not name:
        raise ResumeError(f"--resume: {tag} is empty. {_existing(save_dir)} {fix}")
    path = name if os.path.isabs(name) else os.path.join(save_dir, name)
    if not os.path.isfile(path):
        raise ResumeError(
            f"--resume: {tag} names {name}, which does not exist. {_existing(save_dir)} {fix}"
        )
    if os.path.getsize(path) == 0:
        raise ResumeError(
            f"--resume: {tag} names {name}, which is empty (0 bytes). {_existing(save_dir)} {fix}"
        )
    logger.info("Resuming from %s (named by %s).", path, tag)
    return path


def shape_mismatches(
    model_state: Mapping[str, torch.Tensor], checkpoint_state: Mapping[str, object]
) -> list[tuple[str, tuple, tuple]]:
    """(name, shape in the checkpoint, shape in the model) of every same-named entry whose shapes
    differ."""
    return [
        (k, tuple(v.shape), tuple(model_state[k].shape))
        for k, v in checkpoint_state.items()
        if k in model_state and hasattr(v, "shape") and tuple(v.shape) != model_state[k].shape
    ]


def check_resume_compatible(
    model_state: Mapping[str, torch.Tensor],
    checkpoint_state: Mapping[str, object],
    path: str,
    *,
    optional: Sequence[str] = (),
) -> None:
    """On --resume the model must be the checkpoint's: same parameter names, shapes, finite values.

    Raises :class:`CheckpointMismatchError` listing what changed (and which checkpoints exist),
    or NonFiniteWeightsError when the checkpoint itself holds NaN/Inf weights.
    """
    from ..engine.weights_guard import NonFiniteWeightsError, nonfinite_entries

    save_dir = os.path.dirname(path)
    shapes = [
        f"{k}: checkpoint {a}, model {b}"
        for k, a, b in shape_mismatches(model_state, checkpoint_state)
    ]
    missing = [k for k in model_state if k not in checkpoint_state and k not in optional]
    unexpected = [k for k in checkpoint_state if k not in model_state]
    if shapes or missing or unexpected:
        parts = []
        for title, keys in (
            ("parameters of another shape", shapes),
            ("model parameters not in the checkpoint", missing),
            ("checkpoint parameters not in the model", unexpected),
        ):
            if keys:
                more = f" ... ({len(keys) - 8} more)" if len(keys) > 8 else ""
                parts.append(f"{len(keys)} {title}: " + "; ".join(keys[:8]) + more)
        raise CheckpointMismatchError(
            f"--resume: the model built from the current config is not the one saved in {path} "
            f"(the config changed since that run?): {' | '.join(parts)}. {_existing(save_dir)} "
            "Fix: resume with the config of that run, or train the new model into another "
            "OUTPUT_DIR (to start from these weights, pass the file as MODEL.WEIGHTS without "
            "--resume)."
        )
    bad = nonfinite_entries({k: v for k, v in checkpoint_state.items() if torch.is_tensor(v)})
    if bad:
        raise NonFiniteWeightsError(
            f"--resume: {path} holds non-finite weights ({', '.join(k for k, _, _ in bad[:5])}). "
            f"{_existing(save_dir)} Fix: write the name of an earlier checkpoint into "
            f"{os.path.join(save_dir, 'last_checkpoint')}.",
            -1,
            [k for k, _, _ in bad],
        )


def retag_after_nonfinite_forward(save_dir: str, iteration: int) -> str | None:
    """After a forward pass at `iteration` gave non-finite values: if ``last_checkpoint`` names the
    checkpoint written at `iteration - 1`, point it at the checkpoint before.

    That checkpoint holds exactly the weights whose forward pass was not finite, and a resumed run
    replays the same batch with the same random numbers, so resuming from it would fail the same
    way whatever the fix of the learning rate. Returns a note for the error message (None when
    nothing changed). The checkpoint file itself is kept.
    """
    tag = os.path.join(save_dir, "last_checkpoint")
    try:
        with open(tag) as f:
            name = f.read().strip()
    except OSError:
        return None
    names = list_checkpoints(save_dir)
    if name not in names or _CKPT_RE.match(name).group(1) != f"{iteration - 1:07d}":
        return None
    earlier = names[: names.index(name)]
    if not earlier:
        return (
            f" Note: {name} was written right after the optimizer step of iteration "
            f"{iteration - 1}: it holds the weights whose forward pass at iteration {iteration} "
            "was not finite, so --resume from it would fail the same way; there is no earlier "
            "checkpoint: start again without --resume after the fix."
        )
    atomic_write_text(tag, earlier[-1])
    return (
        f" Note: {name} was written right after the optimizer step of iteration {iteration - 1}: "
        f"it holds the weights whose forward pass at iteration {iteration} was not finite, so "
        f"--resume from it would fail the same way. 'last_checkpoint' now names {earlier[-1]} "
        f"({name} is kept)."
    )


def require_loaded_weights(
    model_state: Mapping[str, torch.Tensor],
    loaded_keys: Sequence[str] | None,
    path: str,
    *,
    allow: bool = False,
    min_fraction: float = 0.5,
    what: str = "--eval-only",
) -> float:
    """Raise when fewer than `min_fraction` of the model's values were loaded from `path`.

    `loaded_keys`: the model keys that were filled from the checkpoint with the right shape (None:
    nothing was loaded, e.g. MODEL.WEIGHTS empty). Returns the fraction of values loaded; with
    `allow=True` a low fraction is logged as a warning instead of raising.
    """
    total = sum(v.numel() for v in model_state.values()) or 1
    loaded = sum(model_state[k].numel() for k in (loaded_keys or ()) if k in model_state)
    fraction = loaded / total
    if fraction >= min_fraction:
        return fraction
    source = f"checkpoint {path}" if path else "no checkpoint (MODEL.WEIGHTS is empty)"
    msg = (
        f"{what}: {source} filled only {fraction:.1%} of the model's values "
        f"({loaded} of {total}); the rest keeps its random initialisation, so the results would "
        "be meaningless. The checkpoint is probably for another model or size (see the list of "
        "missing / mis-shaped keys logged above). Fix: pass the checkpoint written for this config "
        "as MODEL.WEIGHTS, or the config the checkpoint was trained with"
    )
    if allow:
        logger.warning(msg + " (allowed by --allow-partial-weights).")
        return fraction
    raise CheckpointMismatchError(
        msg + "; to evaluate such a model on purpose, pass --allow-partial-weights."
    )
