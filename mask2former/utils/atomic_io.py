"""Atomic checkpoint writing and safe checkpoint loading.

Writing
-------
Every file is written to a temporary file in the *same directory* (``.NAME.XXXX.tmp``), flushed,
``fsync``-ed and then renamed over the destination with ``os.replace`` (atomic on POSIX and
Windows), and the directory is ``fsync``-ed. A process killed while saving (SIGKILL, OOM killer,
pre-emption, full disk) therefore leaves either the previous complete file or the new complete
file, never a truncated one; at worst a stale ``.*.tmp`` file, which
:func:`remove_stale_temp_files` deletes on the next start. ``last_checkpoint`` is written the same
way and only *after* the checkpoint it names is complete, so it never points to a partial file.

Loading
-------
:func:`load_checkpoint_file` loads

* ``.pth`` / ``.pt`` (and anything else) with ``torch.load(weights_only=True)``: only tensors and
  plain containers are unpickled, so a malicious file cannot run code;
* ``.safetensors``: model weights, no pickle at all; a sibling ``NAME.state.pth`` (optimizer,
  scheduler, iteration), if present, is loaded with ``weights_only=True`` too;
* ``.pkl`` (Detectron2 / Mask2Former model-zoo format) **only when** ``allow_pickle=True``.
  **A pickle can run arbitrary code when it is loaded.** The checkpointers here pass
  ``allow_pickle=True`` only for files the user names (``MODEL.WEIGHTS``, ``checkpointer.load``)
  and never for a file found automatically (``--resume`` via ``last_checkpoint``). Only load
  ``.pkl`` files from sources you trust.

:class:`AtomicCheckpointerMixin` puts both into any fvcore/Detectron2 ``Checkpointer`` subclass.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import torch

from .safe_pickle import UnsafeCheckpointError, load_pickle_weights

logger = logging.getLogger(__name__)

__all__ = [
    "AtomicCheckpointerMixin",
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "atomic_checkpointer_class",
    "atomic_open",
    "atomic_path",
    "atomic_torch_save",
    "atomic_write_text",
    "load_checkpoint_file",
    "load_safetensors",
    "remove_stale_temp_files",
    "save_safetensors",
]

TMP_SUFFIX = ".tmp"
_TMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that is truncated or otherwise unreadable."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _fsync_dir(directory: str) -> None:
    """Make the rename itself durable (best effort: not every platform/filesystem supports it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name next to `path`; on success it is fsync-ed and renamed to `path`.

    For writers that want a file name rather than a file object (e.g. ``safetensors.save_file``).
    On any exception (including KeyboardInterrupt) the temporary file is removed and `path` is
    left untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=TMP_SUFFIX, dir=directory
    )
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """``open(path, mode)`` for writing, made atomic: see the module docstring."""
    if not any(c in mode for c in "wx") or "+" in mode:
        raise ValueError(f"atomic_open is for writing a whole file ('w', 'wb'), got mode {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode.replace("x", "w")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (e.g. ``last_checkpoint``)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def remove_stale_temp_files(directory: str | os.PathLike) -> list[str]:
    """Delete ``.NAME.XXXXXX.tmp`` files left by a process killed while saving; return their names."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if _TMP_RE.match(name):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed.append(name)
    if removed:
        logger.warning(
            "Removed %d incomplete temporary checkpoint file(s) in %s left by an interrupted save: %s",
            len(removed),
            directory,
            ", ".join(sorted(removed)),
        )
    return removed


# ------------------------------------------------------------------------------------------------
# safetensors
# ------------------------------------------------------------------------------------------------
def _tensors_for_safetensors(state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors with no shared storage (safetensors refuses aliases)."""
    out: dict[str, torch.Tensor] = {}
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
        out[k] = v.contiguous()
    return out


def save_safetensors(
    state_dict: dict[str, Any], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Save a model state_dict as ``.safetensors``, atomically."""
    from safetensors.torch import save_file

    tensors = _tensors_for_safetensors(state_dict)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` file to CPU tensors, with a clear error if it is damaged."""
    from safetensors.torch import load_file

    path = os.fspath(path)
    try:
        return load_file(path, device="cpu")
    except FileNotFoundError:
        raise
    except Exception as e:  # SafetensorError, OSError on a short file, ...
        raise CorruptCheckpointError(_corrupt_message(path, e)) from None


def _safetensors_metadata(path: str) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return f.metadata() or {}


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------
def _corrupt_message(path: str, err: Exception) -> str:
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


def _pickle_refused_message(path: str) -> str:
    return (
        f"refusing to load {path}: a .pkl file is a Python pickle, and loading a pickle can run "
        "arbitrary code. Pickles are loaded only from files you name yourself (MODEL.WEIGHTS, "
        "checkpointer.load(path)), never from a file found automatically such as the one "
        "'last_checkpoint' points to when resuming. If you trust this file, pass it as "
        "MODEL.WEIGHTS; better, convert it once to .pth or .safetensors."
    )


def _load_pickle(path: str) -> dict[str, Any]:
    """Detectron2 / Mask2Former model-zoo ``.pkl`` (same conventions as DetectionCheckpointer)."""
    try:
        data = load_pickle_weights(path)  # NumPy arrays and containers only (safe_pickle.py)
    except (EOFError, pickle.UnpicklingError) as e:
        raise CorruptCheckpointError(_corrupt_message(path, e)) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a pickled dict of weights, got {type(data).__name__}")
    if "model" in data and "__author__" in data:  # Detectron2 / Mask2Former model zoo
        return data
    if "blobs" in data:  # Caffe2 / Detectron1 detection models
        data = data["blobs"]
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
        raise CorruptCheckpointError(_corrupt_message(path, e)) from None
    except (EOFError, RuntimeError) as e:  # truncated zip: "PytorchStreamReader failed ..."
        raise CorruptCheckpointError(_corrupt_message(path, e)) from None


def state_file_for(safetensors_path: str) -> str:
    """``x.safetensors`` -> ``x.state.pth``: the training state saved next to safetensors weights."""
    return os.path.splitext(safetensors_path)[0] + ".state.pth"


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
            raise UnsafeCheckpointError(_pickle_refused_message(path))
        logger.warning(
            "Loading pickled checkpoint %s (pickles can run code; only load trusted files)", path
        )
        return _load_pickle(path)
    if path.endswith(".safetensors"):
        loaded: dict[str, Any] = {"model": load_safetensors(path)}
        state = state_file_for(path)
        if os.path.isfile(state):
            extra = _torch_load_weights_only(state)
            if isinstance(extra, dict):
                extra.pop("model", None)
                pair_id = extra.pop("_pair_id", None)
                if pair_id is not None and pair_id != _safetensors_metadata(path).get("pair_id"):
                    raise CorruptCheckpointError(
                        f"checkpoint {path} and its training state {state} come from two different "
                        "saves (the process was probably killed between writing them). Fix: resume "
                        "from an earlier checkpoint (write its name into 'last_checkpoint'), or "
                        f"delete {os.path.basename(state)} to load the weights alone."
                    )
                loaded.update(extra)
        return loaded
    loaded = _torch_load_weights_only(path)
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{path}: expected a dict (a state_dict or a checkpoint), got {type(loaded).__name__}"
        )
    if "model" not in loaded:
        loaded = {"model": loaded}
    return loaded


# ------------------------------------------------------------------------------------------------
# Checkpointer integration
# ------------------------------------------------------------------------------------------------
class AtomicCheckpointerMixin:
    """Mix into an fvcore/Detectron2 Checkpointer: atomic saves, safe loads, optional safetensors.

    ``class C(AtomicCheckpointerMixin, DetectionCheckpointer)``. Set ``save_format`` to
    ``"safetensors"`` to write model weights as ``NAME.safetensors`` plus the training state
    (optimizer, scheduler, iteration) as ``NAME.state.pth``; the default ``"pth"`` writes one
    ``NAME.pth`` like Detectron2. Resuming (``resume_or_load(..., resume=True)`` with a
    ``last_checkpoint``) never unpickles ``.pkl``; an explicitly named file may be a ``.pkl``.
    """

    save_format: str = "pth"
    _allow_pickle: bool = True
    # Set by the last load: the file read, and the model keys it filled (None: nothing loaded).
    loaded_from: str | None = None
    loaded_keys: list[str] | None = None

    def save(self, name: str, **kwargs: Any) -> None:  # same signature as fvcore
        if not self.save_dir or not self.save_to_disk:
            return
        if not _is_local(self.save_dir):
            return super().save(name, **kwargs)  # remote storage: fvcore's own (non-atomic) path
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        _check_before_save(self, data["model"], name)  # never a checkpoint with NaN/Inf weights
        fmt = (self.save_format or "pth").lower()
        if fmt == "safetensors":
            basename = f"{name}.safetensors"
            save_file = os.path.join(self.save_dir, basename)
            self.logger.info(
                "Saving checkpoint to %s (+ %s)",
                save_file,
                os.path.basename(state_file_for(save_file)),
            )
            model_sd = data.pop("model")
            # The two files are one checkpoint: a shared id lets loading detect a mismatched pair
            # (a kill between the two writes when a name is reused, e.g. model_final).
            pair_id = os.urandom(8).hex()
            data["_pair_id"] = pair_id
            atomic_torch_save(data, state_file_for(save_file))
            save_safetensors(
                model_sd,
                save_file,
                metadata={
                    "format": "pt",
                    "iteration": data.get("iteration", ""),
                    "pair_id": pair_id,
                },
            )
        elif fmt == "pth":
            basename = f"{name}.pth"
            save_file = os.path.join(self.save_dir, basename)
            self.logger.info("Saving checkpoint to %s", save_file)
            atomic_torch_save(data, save_file)
        else:
            raise ValueError(
                f"unknown checkpoint format {self.save_format!r}; use 'pth' or 'safetensors'"
            )
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not _is_local(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def get_all_checkpoint_files(self) -> list[str]:
        if not _is_local(self.save_dir):
            return super().get_all_checkpoint_files()
        names = sorted(os.listdir(self.save_dir)) if os.path.isdir(self.save_dir) else []
        return [
            os.path.join(self.save_dir, f)
            for f in names
            if (f.endswith(".pth") and not f.endswith(".state.pth")) or f.endswith(".safetensors")
        ]

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        if resume and self.has_checkpoint():
            if self.save_to_disk and _is_local(self.save_dir):
                remove_stale_temp_files(self.save_dir)
            found = _resume_checkpoint(self)  # exists, not empty; says which one is taken
            self._allow_pickle = False  # found automatically: never unpickle arbitrary code
            self._resuming_from = found  # the model must be the checkpoint's (_load_model)
            try:
                return self.load(found)
            finally:
                self._allow_pickle = True
                self._resuming_from = None
        return self.load(path, checkpointables=[])

    def _load_model(self, checkpoint: dict[str, Any]) -> Any:
        resuming = getattr(self, "_resuming_from", None)
        if resuming:
            from .checkpoint_checks import check_resume_compatible

            check_resume_compatible(
                self.model.state_dict(),
                checkpoint["model"],
                resuming,
                optional=getattr(self, "optional_keys", ("criterion.empty_weight",)),
            )
        incompatible = super()._load_model(checkpoint)
        if incompatible is not None:  # for require_loaded_weights (--eval-only)
            skipped = set(incompatible.missing_keys) | {
                k for k, *_ in incompatible.incorrect_shapes
            }
            self.loaded_keys = [k for k in self.model.state_dict() if k not in skipped]
        return incompatible

    def _load_file(self, filename: str) -> dict[str, Any]:
        self.loaded_from = filename
        if filename.endswith(".pkl"):
            if not self._allow_pickle:
                raise UnsafeCheckpointError(_pickle_refused_message(filename))
            from ..checkpoint import MaskFormerCheckpointer

            if isinstance(self, MaskFormerCheckpointer):
                return super()._load_file(filename)  # its zoo conversion, restricted unpickling
            return _load_pickle(filename)  # never detectron2's unrestricted pickle.load
        return load_checkpoint_file(filename, allow_pickle=False)


def _check_before_save(checkpointer: Any, state_dict: dict[str, Any], name: str) -> None:
    from .checkpoint_checks import check_state_finite

    last = checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else None
    check_state_finite(state_dict, os.path.join(checkpointer.save_dir, name), last)


def _resume_checkpoint(checkpointer: Any) -> str:
    if not _is_local(checkpointer.save_dir):
        return checkpointer.get_checkpoint_file()
    from .checkpoint_checks import resolve_resume_checkpoint

    return resolve_resume_checkpoint(checkpointer.save_dir)


def _is_local(path: str) -> bool:
    return "://" not in str(path)


_ATOMIC_CLASSES: dict[type, type] = {}


def atomic_checkpointer_class(base: type) -> type:
    """``base`` (a Checkpointer class) with :class:`AtomicCheckpointerMixin` in front (cached)."""
    if issubclass(base, AtomicCheckpointerMixin):
        return base
    if base not in _ATOMIC_CLASSES:
        _ATOMIC_CLASSES[base] = type(
            base.__name__,
            (AtomicCheckpointerMixin, base),
            {
                "__module__": base.__module__,
                "__qualname__": base.__qualname__,
                "__doc__": (base.__doc__ or "")
                + "\n(Atomic saves and safe loads: mask2former.utils.atomic_io.)",
            },
        )
    return _ATOMIC_CLASSES[base]
