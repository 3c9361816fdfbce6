"""Inference precision of the network from TEST.AMP.{ENABLED,PRECISION}.

`InferencePrecision` decides, per device type and once (one log line), which autocast dtype the
network (backbone, pixel decoder, transformer decoder) runs in at inference, following
`mask2former.utils.precision.resolve_precision`: on CUDA the configured precision; on a CPU
bfloat16 only where the CPU computes it natively, else float32. `network()` is the autocast
context for the network; `fp32()` the context for post-processing, which always runs in float32
(sigmoid/softmax products, thresholds, upsampling), also when the caller wrapped the whole model
in an autocast region.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from ..utils.precision import resolve_precision

logger = logging.getLogger(__name__)

PRECISIONS = ("bfloat16", "float16")


class InferencePrecision:
    def __init__(
        self, enabled: bool = False, precision: str = "bfloat16", allow_emulated: bool = False
    ):
        """
        Args:
            enabled: TEST.AMP.ENABLED.
            precision: TEST.AMP.PRECISION, "bfloat16" | "float16".
            allow_emulated: on a CPU without native bf16, run bf16 anyway (emulated: many times
                slower than fp32, same numbers as native); for accuracy checks on any CPU
                (tools/check_precision.py --allow-emulated). Not a config key.
        """
        if precision not in PRECISIONS:
            raise ValueError(
                f"TEST.AMP.PRECISION {precision!r} is not one of {list(PRECISIONS)}; set "
                "TEST.AMP.PRECISION bfloat16 (or float16, CUDA only)"
            )
        self.enabled = bool(enabled)
        self.precision = precision
        self.allow_emulated = bool(allow_emulated)
        self._chosen: dict[str, torch.dtype | None] = {}

    @classmethod
    def from_config(cls, cfg) -> InferencePrecision:
        amp = cfg.TEST.get("AMP", None)
        if amp is None:
            return cls(False)
        return cls(amp.ENABLED, amp.PRECISION)

    def dtype(self, device: torch.device | str) -> torch.dtype | None:
        """The autocast dtype on `device` (None = float32); decided and logged once per type."""
        device_type = torch.device(device).type
        if not self.enabled:
            return None
        if device_type not in self._chosen:
            self._chosen[device_type] = resolve_precision(
                device_type,
                "auto",
                amp_enabled=True,
                amp_precision=self.precision,
                logger=logger,
                allow_emulated=self.allow_emulated,
            )
        return self._chosen[device_type]

    def network(self, device: torch.device | str, training: bool = False):
        """Autocast context for the network's inference on `device`; a no-op context for float32
        and in training (where SOLVER.AMP and the trainer decide)."""
        dtype = None if training else self.dtype(device)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=dtype)

    @staticmethod
    def fp32(device: torch.device | str):
        """Context with autocast off on `device`: post-processing runs in float32."""
        return torch.autocast(torch.device(device).type, enabled=False)
