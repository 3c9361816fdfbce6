"""FLOPs (fvcore) and MFU.

Conventions, stated once because papers mix them:
- `gflops` is fvcore's count, which counts one multiply-add as one "flop" (so it is GMACs). The
  paper's Table 1 numbers (R50: 226G at COCO sizes) are fvcore counts, so compare `gflops` with
  them directly.
- Achieved FLOP/s and MFU use 2 FLOPs per multiply-add (as the matmul rate does: 2*n^3 per
  n x n x n product): MFU = 2 * gflops * (images/s) / measured bf16 matmul FLOP/s of the device.
  Training counts 3x the forward (forward + backward of activations and weights), the usual
  approximation; the loss, matcher and optimizer are not counted.
- Counted network: backbone + pixel decoder + transformer decoder on the padded image (what
  `model.sem_seg_head(model.backbone(x))` computes). Post-processing is not counted (the paper
  does not either). Handles added to fvcore's: scaled_dot_product_attention (QK^T and AV), and
  the compiled MSDeformAttn op (4 multiply-adds per bilinear sample and channel, the same as
  fvcore's grid_sampler count for the pure-PyTorch path, so every backend gives the same count).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from .common import DTYPES, synchronize, time_fn


def matmul_peak_tflops(
    device: str, dtype: str = "bf16", n: int | None = None, iters: int = 20
) -> float:
    """Measured dense matmul rate (TFLOP/s, 2*n^3 per product) on random data, median of `iters`."""
    if n is None:
        n = 8192 if device.startswith("cuda") else 1024
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, generator=g).to(device=device, dtype=DTYPES[dtype])
    t = time_fn(lambda _: torch.mm(a, b), device, warmup=3, iters=iters)
    return 2 * n**3 / (t.median * 1e-3) / 1e12


def _shape(v):
    from fvcore.nn.jit_handles import get_shape

    return get_shape(v)


def _sdpa_handle(inputs, outputs) -> int:
    q, k, v = (_shape(inputs[i]) for i in range(3))
    batch = 1
    for d in q[:-2]:
        batch *= d
    L, E = q[-2], q[-1]
    S, Ev = k[-2], v[-1]
    return batch * L * S * (E + Ev)


def _msda_handle(inputs, outputs) -> int:
    value, loc = _shape(inputs[0]), _shape(inputs[3])  # (N,S,M,D), (N,Lq,M,L,P,2)
    N, Lq, M, L, P = loc[:5]
    return 4 * N * Lq * M * L * P * value[3]


def _native_mha_handle(inputs, outputs) -> int:
    """nn.MultiheadAttention's fused inference path: in/out projections and QK^T, AV."""
    q, k = _shape(inputs[0]), _shape(inputs[1])  # (B, L, E), (B, S, E)
    B, L, E = (q + [1])[:3] if len(q) == 2 else q
    S = k[-2]
    return B * (L * E * E + 2 * S * E * E + 2 * L * S * E + L * E * E)


EXTRA_HANDLES = {
    "aten::_native_multi_head_attention": _native_mha_handle,
    "aten::scaled_dot_product_attention": _sdpa_handle,
    "prim::PythonOp.MSDeformAttnFunction": _msda_handle,
    "prim::PythonOp._MSDeformAttnFunction": _msda_handle,
}


class _Network(nn.Module):
    """The counted part of the model: backbone -> head, on an already normalised, padded image."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model.sem_seg_head(self.model.backbone(x))
        return out["pred_logits"], out["pred_masks"]


def padded(h: int, w: int, div: int = 32) -> tuple[int, int]:
    return (h + div - 1) // div * div, (w + div - 1) // div * div


def count_flops(model, hw: tuple[int, int], device: str) -> dict:
    """fvcore count (GMACs, see module doc) of the network at image size `hw` (padded to 32)."""
    from fvcore.nn import FlopCountAnalysis

    h, w = padded(*hw)
    x = torch.randn(1, 3, h, w, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            fca = FlopCountAnalysis(_Network(model), (x,))
            fca.set_op_handle(**EXTRA_HANDLES)
            fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings(
                "none"
            )
            total = fca.total()
            by_mod = fca.by_module()
            unsupported = Counter(fca.unsupported_ops())
    finally:
        model.train(was_training)
        synchronize(device)
    g = lambda k: by_mod.get(k, 0) / 1e9  # noqa: E731
    head, pred = g("model.sem_seg_head"), g("model.sem_seg_head.predictor")
    return {
        "gflops": total / 1e9,
        "backbone_gflops": g("model.backbone"),
        "pixdec_gflops": head - pred,
        "decoder_gflops": pred,
        "unsupported": ", ".join(
            f"{k}x{v}" for k, v in sorted(unsupported.items()) if not _elementwise(k)
        ),
        "padded": f"{h}x{w}",
    }


# Elementwise and memory-movement ops (name prefixes) that fvcore leaves out on purpose.
_IGNORED_KINDS = tuple(
    """
    add sub mul div sigmoid relu gelu softmax exp sum mean neg rsub pow sqrt rsqrt clamp max min
    lt gt ge le eq ne where masked_fill fill zeros ones cumsum cos sin abs floor ceil log tanh
    erf dropout scatter gather index repeat expand copy clone topk sort argmax all any logical
    bitwise arange linspace full empty new_ flip roll pad constant_pad stack cat split chunk
    unbind view reshape permute transpose contiguous to type_as masked max_pool avg_pool norm
    reciprocal square silu hardtanh meshgrid unsqueeze squeeze flatten select slice narrow
    unflatten or and xor prod resolve detach rand normal bernoulli im2col unfold
    """.split()
)


def _elementwise(kind: str) -> bool:
    """Ops whose cost fvcore leaves out on purpose (elementwise, memory movement): not listed."""
    name = kind.split("::")[-1].strip("_")
    return any(name.startswith(p) for p in _IGNORED_KINDS)


def mfu(
    gflops_per_item: float, items_per_s: float, peak_tflops: float, train: bool = False
) -> tuple[float, float]:
    """(achieved TFLOP/s, MFU %) with 2 FLOPs per multiply-add and 3x forward for training."""
    achieved = 2 * gflops_per_item * (3 if train else 1) * items_per_s / 1e3
    return achieved, 100.0 * achieved / peak_tflops if peak_tflops else float("nan")
