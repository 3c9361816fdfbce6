"""Checkpoint files: reading them safely, and the safetensors format.

:func:`load_checkpoint_file` loads

* ``.pth`` / ``.pt`` (and anything else) with ``torch.load(weights_only=True)``: only tensors and
  plain containers are unpickled, so a malicious file cannot run code;
* ``.safetensors``: model weights, no pickle at all; a sibling ``NAME.state.pth`` (optimizer,
  scheduler, iteration), if present, is loaded with ``weights_only=True`` too;
* ``.pkl`` (Detectron2 / Mask2Former model-zoo format) **only when** ``allow_pickle=True``, with
  the restricted unpickler of ``safe_pickle.py``. The checkpointer allows it only for files the
  user names (``MODEL.WEIGHTS``, ``checkpointer.load``), never for a file found automatically
  (``--resume`` via ``last_checkpoint``).

A truncated or damaged file raises :class:`CorruptCheckpointError` naming the file and the fix.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any

import torch

from ..utils.atomic_file import atomic_path
from .safe_pickle import UnsafeCheckpointError, load_pickle_weights

__all__ = [
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "corrupt_message",
    "load_checkpoint_file",
    "pickle_refused_message",
    "read_pickle_checkpoint",
    "save_safetensors",
    "state_file_for",
]

logger = logging.getLogger(__name__)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that is truncated or otherwise unreadable."""


def corrupt_message(path: str, err: Exception) -> str:
    try:
        size = f"{os.path.getsize(path)} bytes"
    except OSError:
        size = "size unknown"
    detail = (str(err).strip().splitlines() or [""])[0]
    if len(detail) > 100 and ". " in detail:
        detail = detail.split(". ")[0]
    return (
        f"checkpoint {path} ({size}) is truncated or corrupted and cannot be loaded "
        f"({type(err).__name__}: {detail}). It was probably "
        "written by a process that was killed while saving, or copied incompletely. Fix: copy it "
        "again, or delete it and resume from an earlier checkpoint (write that file's name into "
        "the 'last_checkpoint' file of the output directory)."
    )


def pickle_refused_message(path: str) -> str:
    return (
        f"refusing to load {path}: a .pkl file is a Python pickle, and loading a pickle can run "
        "arbitrary code. Pickles are loaded only from files you name yourself (MODEL.WEIGHTS, "
        "checkpointer.load(path)), never from a file found automatically such as the one "
        "'last_checkpoint' points to when resuming. If you trust this file, pass it as "
        "MODEL.WEIGHTS; better, convert it once to .pth or .safetensors."
    )


def read_pickle_checkpoint(path: str) -> dict[str, Any]:
    """A ``.pkl`` weights file as a checkpoint dict, unpickled with NumPy arrays and plain
    containers only.

    ``{"model": {name: array}, ...}`` (the Detectron2 / Mask2Former model zoo, the converted
    ImageNet backbones) is a full-model checkpoint with exact names unless the file asks for
    ``matching_heuristics``; ``{"blobs": ...}`` or a bare ``{name: array}`` (Caffe2 / Detectron1)
    is read as detectron2 reads it, with name-matching heuristics on.
    """
    try:
        data = load_pickle_weights(path)
    except (EOFError, pickle.UnpicklingError) as e:
        raise CorruptCheckpointError(corrupt_message(path, e)) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a pickled dict of weights, got {type(data).__name__}")
    if "model" in data:
        logger.info(
            f"Reading {path} (a full-model .pkl from '{data.get('__author__', 'unknown')}')"
        )
        return {"matching_heuristics": False, **data}
    data = data.get("blobs", data)
    data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}


def _torch_load_weights_only(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "weights_only" in msg or "Weights only load failed" in msg:
            first = next(
                (ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln or "Unsupported" in ln), ""
            )
            raise UnsafeCheckpointError(
                f"refusing to load {path} with torch.load(weights_only=True): it contains Python "
                f"objects other than tensors and plain containers ({first or 'see the cause'}), "
                "and unpickling those can run arbitrary code. If you trust the file, convert it "
                "once in a trusted environment: sd = torch.load(PATH, weights_only=False); "
                "torch.save({'model': sd['model'] if 'model' in sd else sd}, 'converted.pth')."
            ) from None
        raise CorruptCheckpointError(corrupt_message(path, e)) from None
    except (EOFError, RuntimeError) as e:  # truncated zip: "PytorchStreamReader failed ..."
        raise CorruptCheckpointError(corrupt_message(path, e)) from None


# ---- safetensors ---------------------------------------------------------------------------------
def state_file_for(safetensors_path: str) -> str:
    """``x.safetensors`` -> ``x.state.pth``: the training state saved next to safetensors weights."""
    return os.path.splitext(safetensors_path)[0] + ".state.pth"


def save_safetensors(
    state_dict: dict[str, Any], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Save a model state_dict as ``.safetensors``, atomically (contiguous CPU copies, no shared
    storage: safetensors refuses aliases)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(
                f"cannot save state_dict entry {k!r} of type {type(v).__name__} as safetensors "
                "(only tensors); save this checkpoint in the .pth format instead"
            )
        v = v.detach().cpu()
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        if key is not None and (key in seen or not v.is_contiguous()):
            v = v.clone()
        elif key is not None:
            seen.add(key)
        tensors[k] = v.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})


def _load_safetensors(path: str) -> dict[str, Any]:
    """Weights of ``x.safetensors`` plus the training state of ``x.state.pth``, if present."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        loaded: dict[str, Any] = {"model": load_file(path, device="cpu")}
        with safe_open(path, framework="pt") as f:
            pair_id = (f.metadata() or {}).get("pair_id")
    except Exception as e:  # SafetensorError, OSError on a short file, ...
        raise CorruptCheckpointError(corrupt_message(path, e)) from None
    state = state_file_for(path)
    if os.path.isfile(state):
        extra = _torch_load_weights_only(state)
        if isinstance(extra, dict):
            extra.pop("model", None)
            state_pair_id = extra.pop("_pair_id", None)
            if state_pair_id is not None and state_pair_id != pair_id:
                raise CorruptCheckpointError(
                    f"checkpoint {path} and its training state {state} come from two different "
                    "saves (the process was probably killed between writing them). Fix: resume "
                    "from an earlier checkpoint (write its name into 'last_checkpoint'), or "
                    f"delete {os.path.basename(state)} to load the weights alone."
                )
            loaded.update(extra)
    return loaded


# ---- any checkpoint --------------------------------------------------------------------------------
def load_checkpoint_file(path: str | os.PathLike, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Load a checkpoint into a dict with a ``"model"`` key, safely (see the module docstring).

    Raises FileNotFoundError (naming the file), UnsafeCheckpointError (a pickle not explicitly
    allowed, or a .pth that needs arbitrary unpickling) or CorruptCheckpointError (truncated).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"checkpoint {path} does not exist. Fix: check MODEL.WEIGHTS / the path you passed, "
            "or the name written in the output directory's 'last_checkpoint' file."
        )
    if path.endswith(".pkl"):
        if not allow_pickle:
            raise UnsafeCheckpointError(pickle_refused_message(path))
        return read_pickle_checkpoint(path)
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    loaded = _torch_load_weights_only(path)
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{path}: expected a dict (a state_dict or a checkpoint), got {type(loaded).__name__}"
        )
    return loaded if "model" in loaded else {"model": loaded}
