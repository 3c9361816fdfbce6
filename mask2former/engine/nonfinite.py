"""The loss check of the training step: stop at the first non-finite loss, on every rank.

Detectron2's own check (in ``SimpleTrainer.write_metrics``) runs only on the main process, after
the losses of all ranks were gathered, and names no single term: the other ranks go on to the
optimizer step and hang in the next all-reduce. :func:`check_losses_finite` instead runs on
*every* rank, agrees across ranks (one small all-reduce per iteration), and raises
:class:`NonFiniteLossError` on all of them with a message naming the iteration, the non-finite
loss terms (and their ranks), the images of the batch, and the last good checkpoint.

`MixedPrecisionTrainer.run_step` (train_loop.py) calls it right after the forward pass, before
``backward()`` and ``optimizer.step()``; the exception leaves the training loop before any
``after_step`` hook, so the weights are never updated with NaN/Inf and the periodic checkpointer
never writes a checkpoint after the bad step: the last checkpoint on disk is the last good one,
and ``--resume`` restarts from it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "NonFiniteLossError",
    "check_losses_finite",
    "nonfinite_terms",
]

FIXES = (
    "Likely fixes: lower SOLVER.BASE_LR or lengthen SOLVER.WARMUP_ITERS; enable gradient "
    "clipping (SOLVER.CLIP_GRADIENTS.ENABLED True); with SOLVER.AMP.ENABLED True try "
    "SOLVER.AMP.PRECISION bfloat16; check the images and annotations of this batch."
)


class NonFiniteLossError(FloatingPointError):
    """A loss term was NaN or infinite; training stopped before the optimizer step."""

    def __init__(self, message: str, iteration: int, terms: dict[str, float]):
        super().__init__(message)
        self.iteration = iteration
        self.terms = terms


def nonfinite_terms(loss_dict: Mapping[str, Any]) -> dict[str, float]:
    """The entries of `loss_dict` whose value is NaN or +-Inf, as Python floats."""
    tensors = [v.detach() for v in loss_dict.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == len(loss_dict) and len({t.device for t in tensors}) == 1:
        # One device-to-host sync for all terms; the term-by-term search only when one is bad.
        if bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            return {}
    bad = {}
    for k, v in loss_dict.items():
        if isinstance(v, torch.Tensor):
            if v.numel() == 0:
                continue
            if not bool(torch.isfinite(v.detach()).all()):
                bad[k] = float(v.detach().float().sum().cpu())
        elif isinstance(v, (int, float)) and not math.isfinite(v):
            bad[k] = float(v)
    return bad


def _world():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_world_size(), dist.get_rank()
    return None, 1, 0


def _describe_batch(batch: Iterable[Any] | None, limit: int = 8) -> str:
    if not isinstance(batch, (list, tuple)) or not batch:  # Detectron2's batch: a list of dicts
        return ""
    try:
        names = [os.path.basename(str(d.get("file_name", "?"))) for d in batch]
    except AttributeError:
        return ""
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return " Images of the batch: " + ", ".join(names[:limit]) + more + "."


def check_losses_finite(
    loss_dict: Mapping[str, Any],
    iteration: int,
    *,
    last_checkpoint: str | Callable[[], str | None] | None = None,
    batch: Iterable[Any] | None = None,
    sync: bool = True,
) -> None:
    """Raise :class:`NonFiniteLossError` if any loss term, on any rank, is not finite.

    With ``torch.distributed`` initialized and ``sync=True`` every rank must call this at the same
    iteration (it all-reduces one flag); all ranks then raise together. `last_checkpoint`, the
    path named in the message, may be a function, called only when a term is not finite.
    """
    bad = nonfinite_terms(loss_dict)
    dist, world, rank = _world() if sync else (None, 1, 0)
    per_rank = {rank: bad}
    if dist is not None and world > 1:
        device = next((v.device for v in loss_dict.values() if isinstance(v, torch.Tensor)), "cpu")
        if dist.get_backend() == "nccl" and device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        flag = torch.tensor([1.0 if bad else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() == 0:
            return
        from detectron2.utils import comm

        per_rank = dict(enumerate(comm.all_gather(bad)))
    elif not bad:
        return

    terms: dict[str, float] = {}
    parts = []
    for r, b in sorted(per_rank.items()):
        for k, v in b.items():
            terms.setdefault(k, v)
            parts.append(f"{k}={v}" + (f" (rank {r})" if world > 1 else ""))
    finite = [k for k in loss_dict if k not in terms]
    if callable(last_checkpoint):
        try:
            last_checkpoint = last_checkpoint()
        except Exception:  # never mask the real error
            last_checkpoint = None
    where = (
        f"The last good checkpoint is {last_checkpoint}; restart from it with --resume."
        if last_checkpoint
        else "No checkpoint had been written yet."
    )
    msg = (
        f"Non-finite loss at iteration {iteration}: {', '.join(parts)}"
        + (f" ({len(finite)} other loss terms were finite)." if finite else ".")
        + " Training stopped before the optimizer step: the weights were not updated and no "
        f"checkpoint was written after this iteration. {where}"
        + (_describe_batch(batch) if rank == 0 or bad else "")
        + " "
        + FIXES
    )
    raise NonFiniteLossError(msg, iteration, terms)
