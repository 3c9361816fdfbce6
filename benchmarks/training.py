"""Training: iteration time and peak memory at LSJ crop size, per batch, AMP dtype and loss type.

One iteration = the model's loss dict (forward, Hungarian matching, criterion) under autocast,
backward (fp16 with a GradScaler, bf16 without), full-model gradient-norm clipping at 0.01 and an
AdamW step, as the training recipe does (`SOLVER.CLIP_GRADIENTS` full_model, `SOLVER.AMP`).
The model is built once per model and reset to the same initial weights for every row; the
point-sampled vs full-mask switch is the criterion's `point_sampled` attribute (config key
MODEL.MASK_FORMER.POINT_SAMPLED_LOSS) and is flipped in place. `tools/benchmark_training.py` (the
training issue's tool) measures the same for one configuration at a time.
"""
from __future__ import annotations

import importlib.util
import os

import torch

from .common import PeakMemory, autocast, time_fn
from .models import REPO


def set_point_sampled(model, flag: bool) -> int:
    """Flip every `point_sampled` attribute (the criterion's; the stand-in's); returns how many."""
    n = 0
    for m in model.modules():
        if hasattr(m, "point_sampled") and isinstance(getattr(m, "point_sampled"), bool):
            m.point_sampled = flag
            n += 1
    return n


def build_optimizer(built):
    """The project's optimizer (Trainer.build_optimizer in tools/train_net.py) when it can be
    imported, else AdamW(lr 1e-4, weight decay 0.05): the step costs the same."""
    path = os.path.join(REPO, "tools", "train_net.py")
    if built.cfg is not None and os.path.exists(path):
        try:
            spec = importlib.util.spec_from_file_location("_m2f_train_net", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod.Trainer.build_optimizer(built.cfg, built.model), "project"
        except Exception:  # noqa: BLE001  fall back; the row says which optimizer ran
            pass
    params = [p for p in built.model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05), "AdamW"


def train_iterations(built, batch_inputs, device: str, amp: str, warmup: int, iters: int, row: dict,
                     clip: float = 0.01) -> None:
    model = built.model
    model.train()
    opt, opt_name = build_optimizer(built)
    params = [p for g in opt.param_groups for p in g["params"]]
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=(amp == "fp16"))

    def step(_):
        with autocast(device, amp):
            losses = model(batch_inputs)
            loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)
        scaler.update()

    # The memory window includes the warm-up: `static` is then the weights alone, and the peak
    # includes gradients, the optimizer state (allocated on the first step) and activations.
    with PeakMemory(device) as mem:
        for i in range(warmup):
            step(i)
        t = time_fn(step, device, 0, iters)
    b = len(batch_inputs)
    row.update(ms=t.median, spread=t.spread, img_s=1000.0 * b / t.median, peak_gib=mem.peak_gib,
               gib_per_img=mem.peak_gib / b, act_gib_per_img=mem.growth_gib / b,
               static_gib=mem.static / 2**30, optimizer=opt_name, n=len(t.times_ms))
    del opt, scaler
