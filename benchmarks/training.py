"""Training: iteration time and peak memory at LSJ crop size, per batch, AMP dtype and loss type.

One iteration is the project's own training step (`mask2former.engine.train_loop.
MixedPrecisionTrainer.run_step`: forward with Hungarian matching and the criterion under autocast,
backward with a GradScaler for fp16, loss metrics to the event storage, and the project's
optimizer step with full-model gradient clipping), fed the same synthetic batch every time. Without
the project (the stand-in) an equivalent loop runs here. The model is built once per model and
loss type (MODEL.MASK_FORMER.POINT_SAMPLED_LOSS) and reset to the same initial weights for every
row. `tools/benchmark_training.py` (the training issue's tool) measures one configuration per
process; this module puts every row of the matrix into one table.
"""

from __future__ import annotations

import itertools

import torch

from .common import PeakMemory, autocast, time_fn

PRECISION = {"fp16": "float16", "bf16": "bfloat16", "fp32": None}


def build_optimizer(built):
    """The project's optimizer (AdamW, backbone LR multiplier, no decay on norms/embeddings,
    full-model gradient clipping inside `step()`) when there is a config, else AdamW."""
    if built.cfg is not None:
        from mask2former.engine import Trainer

        return Trainer.build_optimizer(built.cfg, built.model), "project"
    params = [p for p in built.model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05), "AdamW"


def _project_step(built, batch, device: str, amp: str, opt):
    from detectron2.utils.events import EventStorage

    from mask2former.engine.train_loop import MixedPrecisionTrainer

    trainer = MixedPrecisionTrainer(
        built.model, itertools.repeat(batch), opt, PRECISION[amp], torch.device(device).type
    )
    storage = EventStorage(0)

    def step(_):
        with storage:
            trainer.run_step()

    return step


def _plain_step(built, batch, device: str, amp: str, opt, clip: float = 0.01):
    model = built.model
    params = [p for g in opt.param_groups for p in g["params"]]
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=(amp == "fp16"))

    def step(_):
        with autocast(device, amp):
            loss = sum(model(batch).values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)
        scaler.update()

    return step


def train_iterations(
    built, batch, device: str, amp: str, warmup: int, iters: int, row: dict
) -> None:
    built.model.train()
    built.model.zero_grad(set_to_none=True)  # nothing left over from an earlier (OOM) row
    opt, opt_name = build_optimizer(built)
    make = _project_step if opt_name == "project" else _plain_step
    step = make(built, batch, device, amp, opt)
    # The memory window includes the warm-up: `static` is then the weights alone, and the peak
    # includes gradients, the optimizer state (allocated on the first step) and activations.
    with PeakMemory(device) as mem:
        for i in range(warmup):
            step(i)
        t = time_fn(step, device, 0, iters)
    b = len(batch)
    row.update(
        ms=t.median,
        spread=t.spread,
        img_s=1000.0 * b / t.median,
        peak_gib=mem.peak_gib,
        gib_per_img=mem.peak_gib / b,
        act_gib_per_img=mem.growth_gib / b,
        static_gib=mem.static / 2**30,
        optimizer=opt_name + (" step" if opt_name == "project" else ""),
        n=len(t.times_ms),
    )
