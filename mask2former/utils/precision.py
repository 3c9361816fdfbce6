"""Which floating-point precision inference (or training) runs in on a device.

Rules (the same for the predictor and for training):
  * CUDA: what was asked; "auto" follows the config's SOLVER.AMP (PRECISION when ENABLED, else
    fp32).
  * CPU: never float16 autocast (PyTorch emulates it there, many times slower than fp32).
    bfloat16 only where the CPU computes it natively (x86 AVX512_BF16 / AMX-BF16, ARM BF16);
    everywhere else fp32. "auto" on a CPU with an fp16 AMP config therefore becomes bf16 or fp32.
One log line says which precision was chosen and why.
"""

from __future__ import annotations

import functools
import logging

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "amp": "auto"}


@functools.lru_cache(maxsize=4)
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when this CPU executes bfloat16 arithmetic in hardware.

    Read from the CPU flags (Linux `/proc/cpuinfo`: `avx512_bf16`, `amx_bf16`; ARM `bf16`);
    False where they cannot be read. `torch.backends.cpu.get_cpu_capability()` only names the
    vector ISA PyTorch's kernels use (e.g. "AVX2"), which does not say whether bf16 is native.
    """
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def normalise_precision(name: str) -> str:
    """ "fp32" | "bf16" | "fp16" | "auto" from a user spelling (also float32, bfloat16, ...)."""
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in PRECISIONS:
        raise ValueError(
            f"precision {name!r} is not one of {PRECISIONS} (or float32/bfloat16/float16)"
        )
    return key


def resolve_precision(
    device: str | torch.device,
    requested: str = "auto",
    *,
    amp_enabled: bool = False,
    amp_precision: str = "float16",
    logger: logging.Logger | None = None,
    allow_emulated: bool = False,
) -> torch.dtype | None:
    """The autocast dtype to use on `device` (None = plain fp32), logged in one line.

    Args:
        requested: "auto" | "fp32" | "bf16" | "fp16".
        amp_enabled, amp_precision: the config's SOLVER.AMP.ENABLED / PRECISION, used by "auto".
        allow_emulated: "auto" with AMP on a CPU without native bf16 gives bf16 anyway (emulated:
            many times slower, the same numbers; for accuracy checks) instead of fp32.

    Raises:
        ValueError: fp16 on a CPU, or bf16 on a CPU without native bf16 (both would run an
            emulated, many times slower path); the message says what to use instead.
    """
    device = torch.device(device)
    requested = normalise_precision(requested)
    logger = logger or logging.getLogger(__name__)
    if device.type == "cpu":
        native = cpu_has_native_bf16()
        capability = torch.backends.cpu.get_cpu_capability()
        if requested == "fp16":
            raise ValueError(
                "precision fp16 on the CPU: PyTorch emulates float16 there (many times slower "
                f"than fp32). Use fp32{' or bf16 (native on this CPU)' if native else ''}."
            )
        if requested == "bf16" and not native:
            raise ValueError(
                f"precision bf16 on a CPU without native bfloat16 ({capability}, no "
                "avx512_bf16/amx_bf16): it would be emulated and slower than fp32. Use fp32."
            )
        if requested == "auto":
            if amp_enabled and native:
                chosen, why = "bf16", f"AMP config on a CPU with native bf16 ({capability})"
            elif amp_enabled and allow_emulated:
                chosen, why = "bf16", f"emulated on this CPU ({capability}): slow; allow_emulated"
            elif amp_enabled:
                chosen = "fp32"
                why = (
                    f"the config enables {amp_precision} AMP, but this CPU ({capability}) has "
                    "no native bf16 and emulated bf16 or fp16 is many times slower than fp32"
                )
            else:
                chosen, why = "fp32", "SOLVER.AMP.ENABLED is False"
        else:
            chosen, why = requested, "requested"
    else:
        if requested == "auto":
            chosen = normalise_precision(amp_precision) if amp_enabled else "fp32"
            why = "SOLVER.AMP" if amp_enabled else "SOLVER.AMP.ENABLED is False"
        else:
            chosen, why = requested, "requested"
    logger.info("Precision on %s: %s (%s).", device, chosen, why)
    return _DTYPES[chosen]
