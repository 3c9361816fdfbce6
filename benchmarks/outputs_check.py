"""The outputs check: the model's default (optimised) path against its unoptimised reference path,
and bf16 against fp32, in the same run (table "Outputs unchanged" of `benchmarks.run_all`).

`reference_path(model)` is also what `python -m benchmarks.inference --reference` times.
"""

from __future__ import annotations

import importlib
import os

import torch

from .common import autocast, set_tf32, synchronize

# ---- "outputs unchanged" -------------------------------------------------------------------------

# The unoptimised reference path. Two kinds of switch, both applied by `reference_path(model)`:
# - attributes that select an implementation, set to the value that selects the reference;
# - module-level functions replaced by a reference implementation (the model's layers look the
#   function up at call time, so the replacement takes effect without touching the model's code).
# Optimisation work registers its switch here; the check then compares the optimised default path
# against the reference in the same run.
REFERENCE_SWITCHES: dict[str, object] = {
    "attn_impl": "mha",  # benchmarks/standin.py
}


def mha_reference(mha, query, key, value, allowed=None):
    """The published implementation's masked attention: nn.MultiheadAttention (sequence-first) with
    a boolean `attn_mask` repeated per head. Same signature as the project's SDPA
    `multi_head_attention` (batch-first; `allowed` True = may attend)."""
    attn_mask = None
    if allowed is not None:
        attn_mask = (~allowed).repeat_interleave(
            mha.num_heads, dim=0
        )  # (B*h, Lq, Lk), True = masked
    out = mha(
        query.transpose(0, 1),
        key.transpose(0, 1),
        value.transpose(0, 1),
        attn_mask=attn_mask,
        need_weights=False,
    )[0]
    return out.transpose(0, 1)


REFERENCE_FUNCTIONS: list[tuple[str, str, object]] = [
    # SDPA masked attention (the project's default) -> nn.MultiheadAttention (the published code)
    (
        "mask2former.modeling.transformer_decoder.mask2former_transformer_decoder",
        "multi_head_attention",
        mha_reference,
    ),
]


# Environment switches: (variable, reference value, a module class name that must be in the model).
REFERENCE_ENV: list[tuple[str, str, str]] = [
    # compiled MSDeformAttn kernel (CUDA / C++) -> the grid_sample formulation
    ("MASK2FORMER_MSDA_BACKEND", "pytorch", "MSDeformAttn"),
]


class reference_path:
    """Context manager: inside it the model runs its reference (unoptimised) implementation.
    `found` names what was switched (empty: the model exposes no known switch)."""

    def __init__(self, model):
        self.model = model
        self.undo = []
        self.found: list[str] = []

    def _set(self, obj, attr, value, label):
        self.undo.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)
        if label not in self.found:
            self.found.append(label)

    def __enter__(self):
        for m in self.model.modules():
            for attr, ref in REFERENCE_SWITCHES.items():
                if hasattr(m, attr) and not callable(getattr(m, attr)):
                    self._set(m, attr, ref, f"{type(m).__name__}.{attr}={ref!r}")
        used = {type(m).__module__ for m in self.model.modules()}
        for mod_name, attr, ref in REFERENCE_FUNCTIONS:
            if mod_name in used and hasattr(importlib.import_module(mod_name), attr):
                mod = importlib.import_module(mod_name)
                self._set(mod, attr, ref, f"{attr}->{ref.__name__}")
        classes = {type(m).__name__ for m in self.model.modules()}
        for var, ref, cls in REFERENCE_ENV:
            if cls in classes:
                self.undo.append((os.environ, var, os.environ.get(var)))
                os.environ[var] = ref
                self.found.append(f"{var}={ref}")
        return self

    def __exit__(self, *exc):
        for obj, attr, v in reversed(self.undo):
            if obj is os.environ:
                if v is None:
                    os.environ.pop(attr, None)
                else:
                    os.environ[attr] = v
            else:
                setattr(obj, attr, v)
        self.undo = []
        return False


def _capture(model, inputs, device, dtype) -> list[dict]:
    """Raw predictions (final pred_logits / pred_masks) and post-processed outputs per image."""
    caught = {}
    h = model.sem_seg_head.predictor.register_forward_hook(
        lambda m, a, out: caught.update(
            logits=out["pred_logits"].float().cpu(), masks=out["pred_masks"].float().cpu()
        )
    )
    res = []
    try:
        for x in inputs:
            with torch.no_grad(), autocast(device, dtype):
                out = model([x])[0]
            synchronize(device)
            res.append({**caught, "out": out})
    finally:
        h.remove()
    return res


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _panoptic_categories(pan) -> torch.Tensor:
    seg, info = pan
    seg = seg.cpu().long()
    lut = torch.full((int(seg.max()) + 1 if seg.numel() else 1,), -1, dtype=torch.long)
    for s in info:
        lut[int(s["id"])] = int(s["category_id"]) + (1000 if s.get("isthing") else 0)
    return lut[seg]


def compare(ref: list[dict], cand: list[dict]) -> dict:
    """Worst case over images of: relative L2 error of logits and mask logits, the fraction of
    pixels whose panoptic category (and thing/stuff) and semantic argmax agree, segment counts,
    the largest instance-score difference."""
    out = {
        "logits_rel": 0.0,
        "masks_rel": 0.0,
        "pan_agree": 100.0,
        "sem_agree": 100.0,
        "segments": "",
        "inst_dscore": 0.0,
    }
    segs = []
    for r, c in zip(ref, cand):
        out["logits_rel"] = max(out["logits_rel"], _rel(c["logits"], r["logits"]))
        out["masks_rel"] = max(out["masks_rel"], _rel(c["masks"], r["masks"]))
        ro, co = r["out"], c["out"]
        if "panoptic_seg" in ro:
            a, b = (
                _panoptic_categories(ro["panoptic_seg"]),
                _panoptic_categories(co["panoptic_seg"]),
            )
            out["pan_agree"] = min(out["pan_agree"], 100.0 * float((a == b).float().mean()))
            segs.append(f"{len(ro['panoptic_seg'][1])}/{len(co['panoptic_seg'][1])}")
        if "sem_seg" in ro:
            a, b = ro["sem_seg"].argmax(0).cpu(), co["sem_seg"].argmax(0).cpu()
            out["sem_agree"] = min(out["sem_agree"], 100.0 * float((a == b).float().mean()))
        if "instances" in ro:
            sa, sb = ro["instances"].scores.float().cpu(), co["instances"].scores.float().cpu()
            n = min(len(sa), len(sb))
            if n:
                out["inst_dscore"] = max(out["inst_dscore"], float((sa[:n] - sb[:n]).abs().max()))
    out["segments"] = ",".join(segs)
    return out


# name -> (dtype of the candidate run, use reference switches for the candidate?, tolerances, meaning)
VARIANTS = {
    "default vs reference path": (
        "fp32",
        False,
        {"logits_rel": 1e-4, "masks_rel": 1e-4, "pan_agree": 99.9},
        "optimised implementation (model default) against the reference path, fp32",
    ),
    "repeat (determinism)": (
        "fp32",
        True,
        {"logits_rel": 1e-5, "masks_rel": 1e-5, "pan_agree": 100.0},
        "the reference path twice",
    ),
    "bf16 autocast": (
        "bf16",
        False,
        {"logits_rel": 3e-2, "masks_rel": 3e-2, "pan_agree": 99.0},
        "the bf16 throughput path against the fp32 reference",
    ),
}


# Random masks overlap everywhere, so with random weights the overlap test (OVERLAP_THRESHOLD 0.8)
# drops every panoptic segment and the comparison would be trivially equal: without --weights the
# check keeps every non-"no object" query (both thresholds 0), so that every pixel's segment counts.
RANDOM_WEIGHT_OVERRIDES = {"object_mask_threshold": 0.0, "overlap_threshold": 0.0}


def outputs_check(
    model, inputs, device: str, rows_out: list[dict], base_row: dict, trained_weights: bool = False
) -> None:
    """Reference = strict fp32 (TF32 off) through `reference_path`; each variant is compared.

    TF32 is off for the whole check so that an implementation difference is not hidden in (or
    blamed on) TF32 rounding; the bf16 variant is compared against the same strict reference.
    """
    saved = [(a, getattr(model, a)) for a in RANDOM_WEIGHT_OVERRIDES if hasattr(model, a)]
    note = ""
    if not trained_weights and saved:
        for a, _ in saved:
            setattr(model, a, RANDOM_WEIGHT_OVERRIDES[a])
        note = "random weights: " + ", ".join(f"{a}={RANDOM_WEIGHT_OVERRIDES[a]}" for a, _ in saved)
    set_tf32(device, False)
    try:
        _check(model, inputs, device, rows_out, base_row, note)
    finally:
        set_tf32(device, True)
        for a, v in saved:
            setattr(model, a, v)


def _check(model, inputs, device, rows_out, base_row, note) -> None:
    with reference_path(model) as sw:
        ref = _capture(model, inputs, device, "fp32")
        switches = sw.found
    for name, (dtype, use_ref, tol, _meaning) in VARIANTS.items():
        row = dict(base_row, variant=name, dtype=dtype)
        if name.startswith("default") and not switches:
            row.update(
                status="n/a: model exposes no reference switch (REFERENCE_SWITCHES/FUNCTIONS)"
            )
            rows_out.append(row)
            continue
        if use_ref:
            with reference_path(model):
                cand = _capture(model, inputs, device, dtype)
        else:
            cand = _capture(model, inputs, device, dtype)
        row.update(compare(ref, cand))
        ok = (
            row["logits_rel"] <= tol["logits_rel"]
            and row["masks_rel"] <= tol["masks_rel"]
            and row["pan_agree"] >= tol["pan_agree"]
        )
        row["verdict"] = "pass" if ok else "FAIL"
        row["tolerance"] = f"rel<={tol['logits_rel']:g}, pan>={tol['pan_agree']:g}%"
        extra = [
            x for x in ([", ".join(switches)] if name.startswith("default") else []) + [note] if x
        ]
        row["status"] = "ok" + (f" ({'; '.join(extra)})" if extra else "")
        rows_out.append(row)
