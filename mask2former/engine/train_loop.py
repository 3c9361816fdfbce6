"""The training step: next batch -> forward under autocast -> loss check -> backward -> step.

Mixed precision is fp16 + loss scaling, or bf16, on GPU or CPU: detectron2 v0.6's `AMPTrainer`
asserts CUDA and only knows fp16; this loop uses `torch.autocast` on the model's device type, so
`SOLVER.AMP.PRECISION bfloat16` also trains on the CPU.
"""

import logging
import time
from collections.abc import Callable

import torch
from detectron2.engine import SimpleTrainer

from .nonfinite import check_losses_finite
from .resume import IterationSeedHook
from .weights_guard import WeightsGuard

PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class MixedPrecisionTrainer(SimpleTrainer):
    """`SimpleTrainer` whose step checks the losses on every rank and runs the forward pass
    under autocast when `precision` is given.

    Args:
        precision: None (fp32), "float16" (autocast + `torch.amp.GradScaler`) or "bfloat16"
            (autocast, no scaling: bf16 has fp32's exponent range).
        device_type: "cuda" or "cpu", the device the model runs on.
        seeds: re-seeds the RNGs once the batch is loaded, so that the model's random numbers
            depend only on (seed, iteration, rank) and a resumed run repeats them (resume.py).
        last_checkpoint: returns the path of the last checkpoint on disk (or None), named when a
            loss is not finite.
        weights_guard: checks the weights after every optimizer step (weights_guard.py).
    The optimizer's `step()` (which may clip the full-model gradient norm) sees unscaled gradients:
    `GradScaler.step` unscales them first and skips the step when they are not finite.
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        precision: str | None,
        device_type: str,
        *,
        seeds: IterationSeedHook | None = None,
        last_checkpoint: Callable[[], str | None] | None = None,
        weights_guard: WeightsGuard | None = None,
    ):
        super().__init__(model, data_loader, optimizer)
        if precision is not None and precision not in PRECISIONS:
            raise ValueError(
                f"SOLVER.AMP.PRECISION: unknown precision {precision!r}; valid: {list(PRECISIONS)}"
            )
        if precision == "float16" and device_type == "cpu":
            logging.getLogger(__name__).warning(
                "fp16 autocast on the CPU is slow and rarely supported by the hardware; "
                "set SOLVER.AMP.PRECISION bfloat16 for mixed precision on the CPU."
            )
        self.precision = precision
        self.device_type = device_type
        self.grad_scaler = torch.amp.GradScaler(device_type) if precision == "float16" else None
        self.seeds = seeds
        self.last_checkpoint = last_checkpoint
        self.weights_guard = weights_guard

    def restart_data(self) -> None:
        """Iterate `data_loader` afresh (after its sampler was moved on, e.g. on --resume)."""
        self._data_loader_iter = iter(self.data_loader)

    def run_step(self):
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        # 1. The next batch; then the RNGs are re-seeded for the model's random numbers.
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.seeds is not None:
            self.seeds.seed_model(self.iter)

        # 2. Forward, under autocast.
        dtype = PRECISIONS.get(self.precision, torch.float32)
        with torch.autocast(self.device_type, dtype=dtype, enabled=self.precision is not None):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())

        # 3. All ranks stop together at a NaN/Inf loss term, before the weights change.
        check_losses_finite(loss_dict, self.iter, last_checkpoint=self.last_checkpoint, batch=data)

        # 4. Backward (loss-scaled for fp16).
        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self._write_metrics(loss_dict, data_time)

        # 5. Step; NaN/Inf weights stop the run before anything is saved.
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)  # skips steps with NaN/Inf gradients itself
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        if self.weights_guard is not None:
            self.weights_guard.check_parameters(self.iter)

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
