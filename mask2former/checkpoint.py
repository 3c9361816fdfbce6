"""Loading published Mask2Former weights (zoo `.pkl`) and our own `.pth` checkpoints.

Differences from detectron2's `DetectionCheckpointer`, all aimed at never leaving part of the
model silently random (upstream issues #95, #129):
  * a `.pkl` holding {"model": name -> array} is read as a full-model checkpoint with exact names
    (no name-matching heuristics unless the file asks for them, as converted ImageNet backbones
    from detectron2's model zoo do);
  * the one renamed parameter of the published image models is mapped explicitly:
    `sem_seg_head.predictor.static_query.weight` -> `sem_seg_head.predictor.query_feat.weight`;
  * `criterion.empty_weight` (a constant recomputed from the config) is optional;
  * every missing, unexpected or shape-mismatched key is listed in full at WARNING level, and
    `strict=True` turns any of them into an error. There is no legacy key migration.
"""

import logging

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager
from fvcore.common.checkpoint import _IncompatibleKeys

from .utils.safe_pickle import load_pickle_weights

# Published name -> name in this implementation (image-model zoo files predate the rename).
RENAMED_KEYS = {
    "sem_seg_head.predictor.static_query.weight": "sem_seg_head.predictor.query_feat.weight",
}
# Keys that carry no learned information and may be absent from a checkpoint.
OPTIONAL_KEYS = ("criterion.empty_weight",)


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


def _caffe2_blobs(filename: str, data) -> dict:
    """A Caffe2 / Detectron1 `.pkl` ({"blobs": {name: array}} or {name: array}), read as
    detectron2's DetectionCheckpointer reads it (name-matching heuristics on)."""
    if not isinstance(data, dict):
        raise ValueError(
            f"{filename}: expected a pickled dict of weights, got {type(data).__name__}"
        )
    if "blobs" in data:
        data = data["blobs"]
    data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}


class MaskFormerCheckpointer(DetectionCheckpointer):
    """`DetectionCheckpointer` that loads published Mask2Former weights and reports loudly.

    Args:
        model, save_dir, save_to_disk, checkpointables: as `DetectionCheckpointer`.
        strict: raise `RuntimeError` when any model key is missing from (or unexpected in, or
            of another shape than in) the checkpoint, except OPTIONAL_KEYS.
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        save_to_disk=None,
        strict: bool = False,
        **checkpointables,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self.logger = logging.getLogger(__name__)

    def _load_file(self, filename: str) -> dict:
        if filename.endswith(".pkl"):
            # Restricted unpickling: NumPy arrays and plain containers only (safe_pickle.py).
            data = load_pickle_weights(PathManager.get_local_path(filename))
            if isinstance(data, dict) and "model" in data:
                author = data.get("__author__", "unknown")
                self.logger.info(f"Reading {filename} (a full-model .pkl from '{author}')")
                data = dict(data)
                data.setdefault("matching_heuristics", False)
                return data
            return _caffe2_blobs(filename, data)
        return super()._load_file(filename)

    def _load_model(self, checkpoint: dict) -> _IncompatibleKeys:
        state = checkpoint["model"]
        state = {
            k: torch.from_numpy(np.array(v, order="C")) if isinstance(v, np.ndarray) else v
            for k, v in state.items()
        }
        state, renamed = map_published_keys(state)
        for old, new in renamed:
            self.logger.info(f"Renamed checkpoint key {old} -> {new}")
        checkpoint["model"] = state
        if checkpoint.get("matching_heuristics", False):
            self.logger.warning(
                "The checkpoint asks for name-matching heuristics (an ImageNet backbone file); "
                "keys are matched by suffix, check the report below"
            )

        # Shapes before fvcore drops mismatching entries (it only logs them).
        model_shapes = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        mismatched = [
            (k, tuple(v.shape), model_shapes[k])
            for k, v in state.items()
            if k in model_shapes and hasattr(v, "shape") and tuple(v.shape) != model_shapes[k]
        ]
        incompatible = super()._load_model(checkpoint)
        self._report(incompatible, mismatched)
        return incompatible

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        pass  # replaced by _report, which lists every key

    def _report(self, incompatible: _IncompatibleKeys, mismatched: list) -> None:
        missing = [k for k in incompatible.missing_keys if k not in OPTIONAL_KEYS]
        unexpected = list(incompatible.unexpected_keys)
        shape_errors = [
            f"{k}: checkpoint {a}, model {b}" for k, a, b in incompatible.incorrect_shapes
        ]
        if not shape_errors:
            shape_errors = [f"{k}: checkpoint {a}, model {b}" for k, a, b in mismatched]
        problems = []
        if missing:
            problems.append(
                f"{len(missing)} model keys NOT FOUND in the checkpoint (left at their "
                "initialisation):\n  " + "\n  ".join(missing)
            )
        if unexpected:
            problems.append(
                f"{len(unexpected)} checkpoint keys NOT USED by the model:\n  "
                + "\n  ".join(unexpected)
            )
        if shape_errors:
            problems.append(
                f"{len(shape_errors)} keys with a DIFFERENT SHAPE (skipped):\n  "
                + "\n  ".join(shape_errors)
            )
        if not problems:
            self.logger.info("All model keys were loaded from the checkpoint.")
            return
        message = "Checkpoint does not match the model:\n" + "\n".join(problems)
        if self.strict:
            raise RuntimeError(message)
        self.logger.warning(message)
