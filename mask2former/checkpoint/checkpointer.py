"""`MaskFormerCheckpointer`: the one checkpointer of training, `--eval-only`, the predictor, the
demo and the tools.

Differences from detectron2's `DetectionCheckpointer`, all aimed at never leaving part of the
model silently random (upstream issues #95, #129) and never losing or running a file:
  * saves are atomic (`utils/atomic_file.py`), `last_checkpoint` too and only after the file it
    names is complete; weights that are not finite are never saved (`checks.py`);
  * `save_format="safetensors"` writes the weights as `NAME.safetensors` and the training state
    (optimizer, scheduler, iteration) as `NAME.state.pth`; the default `"pth"` writes one
    `NAME.pth` like detectron2;
  * files are read safely (`files.py`): `torch.load(weights_only=True)`, safetensors, and `.pkl`
    through a restricted unpickler, only from files the user names, never on `--resume`;
  * a `.pkl` holding {"model": name -> array} is a full-model checkpoint with exact names (no
    name-matching heuristics unless the file asks for them, as converted ImageNet backbones do);
  * the one renamed parameter of the published image models is mapped explicitly:
    `sem_seg_head.predictor.static_query.weight` -> `sem_seg_head.predictor.query_feat.weight`;
  * `criterion.empty_weight` (a constant recomputed from the config) is optional;
  * every missing, unexpected or shape-mismatched key is listed in full at WARNING level, and
    `strict=True` turns any of them into an error. There is no legacy key migration;
  * `--resume` checks that `last_checkpoint` names a usable file and that the model is the
    checkpoint's (same names and shapes, finite weights), with errors listing the checkpoints.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _IncompatibleKeys

from ..utils.atomic_file import atomic_torch_save, atomic_write_text, remove_stale_temp_files
from .checks import (
    check_resume_compatible,
    check_state_finite,
    resolve_resume_checkpoint,
    shape_mismatches,
)
from .files import (
    UnsafeCheckpointError,
    load_checkpoint_file,
    pickle_refused_message,
    save_safetensors,
    state_file_for,
)

__all__ = ["OPTIONAL_KEYS", "RENAMED_KEYS", "MaskFormerCheckpointer", "map_published_keys"]

# Published name -> name in this implementation (image-model zoo files predate the rename).
RENAMED_KEYS = {
    "sem_seg_head.predictor.static_query.weight": "sem_seg_head.predictor.query_feat.weight",
}
# Keys that carry no learned information and may be absent from a checkpoint.
OPTIONAL_KEYS = ("criterion.empty_weight",)
SAVE_FORMATS = ("pth", "safetensors")


def map_published_keys(state_dict: dict) -> tuple[dict, list[tuple[str, str]]]:
    """Apply RENAMED_KEYS; returns the new dict and the (old, new) renames applied.

    A checkpoint holding both the old and the new name is ambiguous and raises ValueError.
    """
    out = dict(state_dict)
    applied = []
    for old, new in RENAMED_KEYS.items():
        if old in out:
            if new in out:
                raise ValueError(f"checkpoint has both {old!r} and {new!r}; keep only one")
            out[new] = out.pop(old)
            applied.append((old, new))
    return out, applied


def _is_local(path: str) -> bool:
    return "://" not in str(path)


class MaskFormerCheckpointer(DetectionCheckpointer):
    """`DetectionCheckpointer` with atomic saves, safe loads, published names and a loud report.

    Args:
        model, save_dir, save_to_disk, checkpointables: as `DetectionCheckpointer`.
        strict: raise `RuntimeError` when any model key is missing from (or unexpected in, or
            of another shape than in) the checkpoint, except OPTIONAL_KEYS.
        save_format: "pth" (one `NAME.pth`) or "safetensors" (`NAME.safetensors` with the
            weights, `NAME.state.pth` with the rest); SOLVER.CHECKPOINT_FORMAT.

    After a load, `loaded_from` is the file read and `loaded_keys` the model keys it filled
    (None: nothing loaded), for `checks.require_loaded_weights`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: bool | None = None,
        strict: bool = False,
        save_format: str = "pth",
        **checkpointables: Any,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self.save_format = save_format
        self.logger = logging.getLogger(__name__)
        self.loaded_from: str | None = None
        self.loaded_keys: list[str] | None = None
        self._resuming_from: str | None = None

    # ---- saving ---------------------------------------------------------------------------------
    def save(self, name: str, **kwargs: Any) -> None:  # same signature as fvcore
        if not self.save_dir or not self.save_to_disk:
            return
        if not _is_local(self.save_dir):
            return super().save(name, **kwargs)  # remote storage: fvcore's own (non-atomic) path
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        last = self.get_checkpoint_file() if self.has_checkpoint() else None
        check_state_finite(data["model"], os.path.join(self.save_dir, name), last)
        fmt = (self.save_format or "pth").lower()
        if fmt not in SAVE_FORMATS:
            raise ValueError(
                f"unknown checkpoint format {self.save_format!r}; use 'pth' or 'safetensors'"
            )
        basename = f"{name}.{fmt}"
        save_file = os.path.join(self.save_dir, basename)
        if fmt == "pth":
            self.logger.info("Saving checkpoint to %s", save_file)
            atomic_torch_save(data, save_file)
        else:
            state_file = state_file_for(save_file)
            self.logger.info(
                "Saving checkpoint to %s (+ %s)", save_file, os.path.basename(state_file)
            )
            # The two files are one checkpoint: a shared id lets loading detect a mismatched pair
            # (a kill between the two writes when a name is reused, e.g. model_final).
            model_state = data.pop("model")
            data["_pair_id"] = pair_id = os.urandom(8).hex()
            atomic_torch_save(data, state_file)
            metadata = {"format": "pt", "iteration": data.get("iteration", ""), "pair_id": pair_id}
            save_safetensors(model_state, save_file, metadata=metadata)
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

    # ---- loading --------------------------------------------------------------------------------
    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        """With `resume` and a `last_checkpoint` in save_dir: that checkpoint, checked (exists,
        not empty, never a pickle, same model); else the weights of `path` only."""
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        if not _is_local(self.save_dir):
            found = self.get_checkpoint_file()
        else:
            if self.save_to_disk:
                remove_stale_temp_files(self.save_dir)
            found = resolve_resume_checkpoint(self.save_dir)  # exists, not empty; says which
        if found.endswith(".pkl"):  # found automatically: never unpickle arbitrary code
            raise UnsafeCheckpointError(pickle_refused_message(found))
        self._resuming_from = found  # the model must be the checkpoint's (_load_model)
        try:
            return self.load(found)
        finally:
            self._resuming_from = None

    def _load_file(self, filename: str) -> dict[str, Any]:
        self.loaded_from = filename
        return load_checkpoint_file(filename, allow_pickle=True)

    def _load_model(self, checkpoint: dict[str, Any]) -> _IncompatibleKeys:
        state = {
            k: torch.from_numpy(np.array(v, order="C")) if isinstance(v, np.ndarray) else v
            for k, v in checkpoint["model"].items()
        }
        state, renamed = map_published_keys(state)
        for old, new in renamed:
            self.logger.info(f"Renamed checkpoint key {old} -> {new}")
        checkpoint["model"] = state
        model_state = self.model.state_dict()
        if self._resuming_from:
            check_resume_compatible(model_state, state, self._resuming_from, optional=OPTIONAL_KEYS)
        if checkpoint.get("matching_heuristics", False):
            self.logger.warning(
                "The checkpoint asks for name-matching heuristics (an ImageNet backbone file); "
                "keys are matched by suffix, check the report below"
            )
        # Exact-name shape mismatches, for the report when name matching dropped them silently.
        mismatched = shape_mismatches(model_state, state)
        incompatible = super()._load_model(checkpoint)
        skipped = set(incompatible.missing_keys) | {k for k, *_ in incompatible.incorrect_shapes}
        self.loaded_keys = [k for k in model_state if k not in skipped]
        self._report(incompatible, mismatched)
        return incompatible

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        pass  # replaced by _report, which lists every key

    def _report(self, incompatible: _IncompatibleKeys, mismatched: list) -> None:
        sections = (
            (
                "model keys NOT FOUND in the checkpoint (left at their initialisation)",
                [k for k in incompatible.missing_keys if k not in OPTIONAL_KEYS],
            ),
            ("checkpoint keys NOT USED by the model", list(incompatible.unexpected_keys)),
            (
                "keys with a DIFFERENT SHAPE (skipped)",
                [
                    f"{k}: checkpoint {a}, model {b}"
                    for k, a, b in incompatible.incorrect_shapes or mismatched
                ],
            ),
        )
        problems = [
            f"{len(keys)} {title}:\n  " + "\n  ".join(keys) for title, keys in sections if keys
        ]
        if not problems:
            self.logger.info("All model keys were loaded from the checkpoint.")
            return
        message = "Checkpoint does not match the model:\n" + "\n".join(problems)
        if self.strict:
            raise RuntimeError(message)
        self.logger.warning(message)
