"""Stop training when the gradients or the weights stop being finite, before anything is saved.

A finite loss does not mean a good step: with a learning rate far too large (e.g. `BASE_LR 30`
without gradient clipping) the losses stay finite while one optimizer step writes NaN/Inf into the
weights; the periodic checkpointer would then save them and `last_checkpoint` would name a
broken model. The training step therefore checks

* the parameters right after `optimizer.step()` (:meth:`WeightsGuard.check_parameters`; the
  message says whether that step's gradients were finite),

and raises :class:`NonFiniteWeightsError` naming the iteration, the first offending parameters
and the last good checkpoint. (:meth:`WeightsGuard.check_gradients` checks the gradients before
the step, for callers that must keep the weights untouched; the trainer does not call it: a
NaN/Inf gradient reaches the weights through the step and is caught there, at half the cost.) The exception leaves the loop before any `after_step` hook, so the
periodic checkpointer never sees the bad weights. The checkpointer checks again before every save
(:func:`nonfinite_entries` via `mask2former.checkpoint.checks`).

The check is one fused reduction (the 2-norm of all tensors: NaN/Inf propagate) and one
device-to-host sync per iteration, the same work as the gradient-norm clipping of the published
configs; the element-wise search (exact, and for the names) runs only when that norm is not
finite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

__all__ = ["NonFiniteWeightsError", "WeightsGuard", "all_finite", "nonfinite_entries"]

FIXES = (
    "Likely fixes: lower SOLVER.BASE_LR or lengthen SOLVER.WARMUP_ITERS; enable gradient "
    "clipping (SOLVER.CLIP_GRADIENTS.ENABLED True, CLIP_TYPE full_model, CLIP_VALUE 0.01 as the "
    "published configs); with SOLVER.AMP.ENABLED True try SOLVER.AMP.PRECISION bfloat16."
)


class NonFiniteWeightsError(FloatingPointError):
    """Gradients or parameters became NaN/Inf; training stopped before any checkpoint of them."""

    def __init__(self, message: str, iteration: int, names: list[str]):
        super().__init__(message)
        self.iteration = iteration
        self.names = names


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True when every element of every floating-point tensor is finite (one sync)."""
    tensors = [t.detach() for t in tensors if t is not None and t.is_floating_point()]
    tensors = [t for t in tensors if t.numel()]
    if not tensors:
        return True
    # The 2-norm (fused over tensors on CUDA; on the CPU ~10x faster than the max-abs norm) is
    # NaN/Inf when any value is. It can also overflow for finite values > ~1e19: then the exact
    # element-wise test decides.
    total = torch.nn.utils.get_total_norm(tensors, norm_type=2.0, foreach=None)
    if bool(torch.isfinite(total)):
        return True
    return not any(not bool(torch.isfinite(t).all()) for t in tensors)


def nonfinite_entries(named: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]):
    """[(name, number of non-finite elements, numel)] of the floating-point tensors that have any."""
    items = named.items() if isinstance(named, Mapping) else named
    bad = []
    for name, t in items:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
            n = int((~torch.isfinite(t.detach())).sum())
            if n:
                bad.append((name, n, t.numel()))
    return bad


def _describe(bad: list[tuple[str, int, int]], limit: int = 5) -> str:
    shown = ", ".join(f"{k} ({n} of {total} values)" for k, n, total in bad[:limit])
    return shown + (f" and {len(bad) - limit} more" if len(bad) > limit else "")


class WeightsGuard:
    """The two per-iteration checks of a training step (see the module docstring).

    Args:
        model: the trained module (DDP-wrapped or not).
        last_checkpoint: returns the path of the last checkpoint on disk (or None), for the message.
    """

    def __init__(self, model: torch.nn.Module, last_checkpoint: Callable[[], str | None] = None):
        self.model = model
        self.last_checkpoint = last_checkpoint or (lambda: None)

    def _named(self, grads: bool) -> list[tuple[str, torch.Tensor]]:
        out = []
        for name, p in self.model.named_parameters():
            t = p.grad if grads else p
            if t is not None:
                out.append((name.removeprefix("module."), t))
        return out

    def _raise(self, iteration: int, bad: list, what: str, when: str) -> None:
        last = self.last_checkpoint()
        where = (
            f"The last good checkpoint is {last}; restart from it with --resume after the fix."
            if last
            else "No checkpoint had been written yet."
        )
        raise NonFiniteWeightsError(
            f"Non-finite {what} at iteration {iteration} ({when}) although the loss terms were "
            f"finite: {_describe(bad)}. Training stopped: nothing was saved after this step, and "
            f"'last_checkpoint' still names a checkpoint with finite weights. {where} {FIXES}",
            iteration,
            [k for k, _, _ in bad],
        )

    def check_gradients(self, iteration: int) -> None:
        """Raise if a gradient is NaN/Inf (call after backward(), before optimizer.step())."""
        named = self._named(grads=True)
        if all_finite(t for _, t in named):
            return
        self._raise(
            iteration,
            nonfinite_entries(named),
            "gradients",
            "after backward, before the optimizer step: the weights were not updated",
        )

    def check_parameters(self, iteration: int) -> None:
        """Raise if a parameter is NaN/Inf (call right after optimizer.step()). The message also
        says whether the step's gradients were finite (they are still there to look at)."""
        named = self._named(grads=False)
        if all_finite(t for _, t in named):
            return
        bad_grads = nonfinite_entries(self._named(grads=True))
        cause = (
            f"from non-finite gradients: {_describe(bad_grads)}"
            if bad_grads
            else "from finite gradients: the step was too large"
        )
        self._raise(
            iteration,
            nonfinite_entries(named),
            "weights",
            f"written by the optimizer step, {cause}",
        )
