"""Which implementation of `ms_deform_attn` runs, per device type.

`MASK2FORMER_MSDA_BACKEND` chooses:
    auto     (default) CUDA tensors: the CUDA extension; CPU tensors: the C++/OpenMP kernel.
             An extension that cannot be loaded or compiled falls back to `pytorch` (one log line).
    cuda     the CUDA extension; an error if it cannot be loaded or the tensors are not on a GPU.
    cpp      the C++ CPU kernel; an error if it cannot be compiled or the tensors are not on CPU.
    pytorch  the `grid_sample` formulation, on any device.
The choice is made and logged once per (device type, setting); extensions are loaded (and compiled,
see `build.py`) only when chosen.
"""

from __future__ import annotations

import functools
import logging
import os
from types import ModuleType
from typing import NamedTuple

from . import build

logger = logging.getLogger(__name__)

ENV_VAR = "MASK2FORMER_MSDA_BACKEND"
CHOICES = ("auto", "cuda", "cpp", "pytorch")
_DEVICE_OF = {"cuda": "cuda", "cpp": "cpu"}  # compiled backend -> the device type it runs on
_COMPILED_FOR = {device: name for name, device in _DEVICE_OF.items()}


class Backend(NamedTuple):
    name: str  # "cuda", "cpp" or "pytorch"
    ext: ModuleType | None  # the compiled module with forward/backward, None for pytorch


def requested_backend() -> str:
    """The validated value of MASK2FORMER_MSDA_BACKEND ("auto" when unset)."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not a valid backend; choose one of "
            f"{', '.join(CHOICES)} (or unset it for auto)"
        )
    return value


def select_backend(device_type: str) -> Backend:
    """The backend for tensors on `device_type` ("cpu", "cuda", ...) under the current setting."""
    return _select(device_type, requested_backend())


@functools.cache
def _select(device_type: str, requested: str) -> Backend:
    if requested == "auto":
        backend = _auto(device_type)
    elif requested == "pytorch":
        backend = Backend("pytorch", None)
    else:
        if _DEVICE_OF[requested] != device_type:
            raise RuntimeError(
                f"{ENV_VAR}={requested} runs on {_DEVICE_OF[requested]} tensors, but the inputs "
                f"are on {device_type}; move them, or set {ENV_VAR}=auto or pytorch"
            )
        backend = Backend(requested, _load(requested))  # forced: a build error propagates
    logger.info(
        "MSDeformAttn on %s tensors: %s backend (%s=%s)",
        device_type,
        backend.name,
        ENV_VAR,
        requested,
    )
    return backend


def _auto(device_type: str) -> Backend:
    name = _COMPILED_FOR.get(device_type)
    if name is None:
        return Backend("pytorch", None)
    try:
        return Backend(name, _load(name))
    except Exception as e:  # noqa: BLE001  any build/load problem: the grid_sample path still works
        reason = (str(e).strip().splitlines() or [""])[-1]
        logger.warning(
            "MSDeformAttn: the %s extension is unavailable (%s: %s); using the slower pytorch "
            "grid_sample backend",
            name,
            type(e).__name__,
            reason,
        )
        return Backend("pytorch", None)


def _load(name: str) -> ModuleType:
    return build.load_cuda_extension() if name == "cuda" else build.load_cpu_extension()
