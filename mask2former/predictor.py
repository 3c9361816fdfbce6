"""`Predictor`: a trained Mask2Former on images in three lines of Python.

    from mask2former.predictor import Predictor
    predictor = Predictor.from_config("configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
                                      weights="model_final_94dc52.pkl", device="cpu")
    outputs = predictor("photo.jpg")          # {"sem_seg", "panoptic_seg", "instances"}

It keeps detectron2's `DefaultPredictor` contract (`predictor(bgr_array)` -> one output dict,
resized with INPUT.MIN/MAX_SIZE_TEST, outputs at the input's size) and adds what a pipeline
offers: file paths, RGB arrays, PIL images and lists of them (a list is one batch), a device and
precision choice, and `draw`. Everything goes through the project's single roads: the config
loader (`load_config`), the checkpointer of training and `--eval-only` (published `.pkl` with the
`static_query` rename, `.pth`, `.safetensors`, with its key report) and the image reader.

Weights that leave most of the model at its initialisation are an error (`WeightsMismatchError`)
unless `allow_partial_weights=True`; an input whose outputs cannot fit in memory is an
`InputTooLargeError` naming the image and `max_size`, the fix, before any allocation.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .config import load_config
from .utils.precision import resolve_precision

logger = logging.getLogger(__name__)

# Fraction of the model's state-dict entries a checkpoint must provide for inference.
MIN_LOADED_FRACTION = 0.5
# Peak memory of an image's inference / `estimate_output_bytes`: 1.9 measured on the CPU
# (benchmarks/predictor_memory.py, demo model, 4000x4000: 5.3 GiB above the built model for
# a 2.8 GiB estimate; the input, resized copies and the output pool's slack make the rest).
PEAK_FACTOR = 2.0


class WeightsMismatchError(RuntimeError):
    """The checkpoint loaded too few of the model's parameters: a wrong config or file."""


class InputTooLargeError(MemoryError):
    """An input whose outputs at full size would not fit in the device's free memory."""


# ---- weights ----------------------------------------------------------------------------------
def load_weights(model: torch.nn.Module, path: str, *, allow_partial: bool = False):
    """Load `path` into `model` with the checkpointer of training / `--eval-only`.

    Returns fvcore's `_IncompatibleKeys`. Raises `WeightsMismatchError` when fewer than
    MIN_LOADED_FRACTION of the model's state-dict entries came from the file (missing or of
    another shape), unless `allow_partial`.
    """
    from .checkpoint import MaskFormerCheckpointer
    from .model_zoo import local_weights_path

    local = local_weights_path(path)
    checkpointer = MaskFormerCheckpointer(model)
    # What fvcore's `load` does, keeping the incompatible keys it only logs.
    try:
        checkpoint = checkpointer._load_file(local)
    except (pickle.UnpicklingError, EOFError, ValueError, RuntimeError) as e:
        if os.path.basename(local) in str(e):  # already names the file (our loaders' errors)
            raise
        from .checkpoint.files import CorruptCheckpointError, corrupt_message

        raise CorruptCheckpointError(corrupt_message(local, e)) from e
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        checkpoint = {"model": checkpoint}
    incompatible = checkpointer._load_model(checkpoint)
    check_loaded_fraction(model, incompatible, path, allow_partial=allow_partial)
    return incompatible


def check_loaded_fraction(model, incompatible, path: str, *, allow_partial: bool = False) -> float:
    """Fraction of `model`'s state-dict entries loaded; raise when under MIN_LOADED_FRACTION."""
    from .checkpoint import OPTIONAL_KEYS

    # BatchNorm's step counters carry nothing learned (and fvcore never reports them missing).
    keys = [
        k
        for k in model.state_dict()
        if k not in OPTIONAL_KEYS and not k.endswith("num_batches_tracked")
    ]
    bad = set(incompatible.missing_keys) | {k for k, *_ in incompatible.incorrect_shapes}
    not_loaded = [k for k in keys if k in bad]
    fraction = 1.0 - len(not_loaded) / max(len(keys), 1)
    if fraction < MIN_LOADED_FRACTION:
        message = (
            f"checkpoint {path} provides only {len(keys) - len(not_loaded)} of the model's "
            f"{len(keys)} parameters and buffers ({fraction:.0%}); the rest would stay random "
            f"(e.g. {', '.join(not_loaded[:3])}). It is probably for another model or config: "
            "use the config the checkpoint was trained with (docs/model.md lists the published "
            "pairs). To run such a model anyway, pass allow_partial_weights=True "
            "(demo/demo.py: --allow-partial-weights)."
        )
        if not allow_partial:
            raise WeightsMismatchError(message)
        logger.warning(message)
    return fraction


# ---- memory -----------------------------------------------------------------------------------
def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device` (CUDA: free device memory; CPU: MemAvailable), None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimate_output_bytes(model, height: int, width: int) -> int:
    """Rough peak of post-processing at output size (height, width), in bytes.

    float32 full-size buffers: the mask logits of all Q queries, the semantic scores of the K
    classes (when SEMANTIC_ON) and up to Q binary instance masks (when INSTANCE_ON).
    """
    q = int(getattr(model, "num_queries", 100))
    k = int(getattr(getattr(model, "sem_seg_head", None), "num_classes", 1))
    planes = q + (k if getattr(model, "semantic_on", True) else 0)
    if getattr(model, "instance_on", False):
        planes += min(q, int(getattr(model, "test_topk_per_image", q)))
    return 4 * planes * height * width


# ---- the predictor ----------------------------------------------------------------------------
class Predictor:
    """A model built from a config, with its weights, ready for inference.

    Args:
        cfg: a config from `load_config` (it is cloned; MODEL.WEIGHTS gives the weights unless
            `weights` is given).
        weights: a checkpoint path or URL ("" = keep the initialisation, for tests).
        device: "cpu", "cuda", "cuda:1", ... (default: MODEL.DEVICE, the CPU without CUDA).
        precision: "auto" | "fp32" | "bf16" | "fp16" (see mask2former.utils.precision).
        allow_partial_weights: run even when the checkpoint loads under half of the model.
        max_size: when given, images whose longer side exceeds it are scaled down to it first
            (outputs then come at the scaled size).
        model: instead of building the config's model and loading `weights`, run this callable
            (list of model input dicts -> list of output dicts), e.g. an exported network
            (`mask2former.deploy.runtime.ExportedModel`).
    """

    def __init__(
        self,
        cfg,
        *,
        weights: str | None = None,
        device: str | None = None,
        precision: str = "auto",
        allow_partial_weights: bool = False,
        max_size: int | None = None,
        model: Callable[[list[dict]], list[dict]] | None = None,
    ):
        cfg = cfg.clone()
        cfg.defrost()
        if device is None:
            device = cfg.MODEL.DEVICE
            if device.startswith("cuda") and not torch.cuda.is_available():
                logger.info("CUDA is not available: running on the CPU.")
                device = "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available; use cpu")
        cfg.MODEL.DEVICE = device
        if weights is not None:
            cfg.MODEL.WEIGHTS = weights
        cfg.freeze()
        self.cfg = cfg
        if model is not None:  # e.g. an exported network: it holds its own weights
            self.model = model
            self.weights = str(model.path) if getattr(model, "path", None) else None
            logger.info("Running %r instead of the config's PyTorch model.", model)
        else:
            self.model = build_model(cfg)  # on cfg.MODEL.DEVICE
            self.model.eval()
            self.weights = cfg.MODEL.WEIGHTS
            if self.weights:
                load_weights(self.model, self.weights, allow_partial=allow_partial_weights)
            else:
                logger.warning("No weights given (MODEL.WEIGHTS is empty): the model is random.")
        self.device = torch.device(device)
        self.autocast_dtype = resolve_precision(
            self.device,
            precision,
            amp_enabled=cfg.SOLVER.AMP.ENABLED,
            amp_precision=cfg.SOLVER.AMP.get("PRECISION", "float16"),
            logger=logger,
        )
        self.input_format = cfg.INPUT.FORMAT
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.max_size = max_size
        names = cfg.DATASETS.TEST or cfg.DATASETS.TRAIN
        self.metadata = (
            MetadataCatalog.get(names[0]) if len(names) else MetadataCatalog.get("__unused")
        )

    @classmethod
    def from_config(
        cls, config_file: str, weights: str | None = None, opts: Sequence[str] = (), **kwargs
    ) -> Predictor:
        """Load `config_file` (+ KEY VALUE `opts`) with the project's loader and build."""
        return cls(load_config(config_file, list(opts)), weights=weights, **kwargs)

    # -- inputs -------------------------------------------------------------------------------
    def read(self, image: Any, input_format: str = "BGR") -> tuple[np.ndarray, str]:
        """(H, W, 3) uint8 array in the model's INPUT.FORMAT, and a name for messages.

        image: a file path, a PIL image (RGB), or an (H, W, 3) uint8 array in `input_format`.
        """
        from .data.validation import read_image

        if isinstance(image, (str, os.PathLike)):
            return read_image(os.fspath(image), format=self.input_format), os.fspath(image)
        if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
            image, input_format, name = np.asarray(image.convert("RGB")), "RGB", "<PIL image>"
        else:
            name = "<array>"
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 image, got shape {image.shape} dtype {image.dtype}"
                "; convert with np.asarray(PIL.Image.open(f).convert('RGB')) and pass "
                "input_format='RGB'"
            )
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR' or 'RGB', got {input_format!r}")
        if input_format != self.input_format:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image), name

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the outputs for an input of that size (max_size applied)."""
        if self.max_size and max(height, width) > self.max_size:
            s = self.max_size / max(height, width)
            return max(1, round(height * s)), max(1, round(width * s))
        return height, width

    def _model_input(self, image: np.ndarray, name: str) -> dict:
        height, width = self.output_size(*image.shape[:2])
        if (height, width) != image.shape[:2]:
            import cv2

            logger.info(
                "%s: %dx%d scaled to %dx%d (max_size %d)",
                name,
                image.shape[1],
                image.shape[0],
                width,
                height,
                self.max_size,
            )
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        self.check_fits(height, width, name)
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
        return {"image": tensor, "height": height, "width": width}

    def check_fits(self, height: int, width: int, name: str = "input") -> None:
        """Raise `InputTooLargeError` when inference at (height, width) would not fit."""
        # An ExportedModel keeps the MaskFormer whose post-processing it runs in `.model`.
        net = getattr(self.model, "model", self.model)
        need = int(PEAK_FACTOR * estimate_output_bytes(net, height, width))
        free = available_bytes(self.device)
        if free is not None and need > free:
            side = int(max(height, width) * (free / need) ** 0.5 * 0.8)
            raise InputTooLargeError(
                f"{name}: inference at {width}x{height} needs about {need / 2**30:.1f} GiB of "
                f"memory on {self.device}, {free / 2**30:.1f} GiB is free. Fix: scale the image "
                f"down, e.g. max_size={side} (demo/demo.py: --max-size {side}), or free memory."
            )

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self, images: Any, input_format: str = "BGR", name: str | None = None
    ) -> dict | list[dict]:
        """Outputs for one image (a dict) or a list of images (a list of dicts, one batch).

        Each dict holds what the config's TEST.*_ON switches select: "sem_seg" (K, H, W)
        scores, "panoptic_seg" ((H, W) int32 ids, segments_info), "instances" (pred_masks
        (N, H, W), pred_boxes, scores, pred_classes), at the image's (H, W).
        """
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        inputs = []
        for x in batch:
            array, default_name = self.read(x, input_format)
            inputs.append(self._model_input(array, name or default_name))
        if not inputs:
            return []
        if self.autocast_dtype is None:
            outputs = self.model(inputs)
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                outputs = self.model(inputs)
        return outputs[0] if single else outputs

    def draw(self, image: Any, outputs: dict, task: str = "auto", input_format: str = "BGR"):
        """The outputs drawn over the image (RGB uint8), with the dataset's class names."""
        from .visualization import draw_predictions

        array, _ = self.read(image, input_format)
        rgb = array if self.input_format == "RGB" else array[:, :, ::-1]
        size = self.output_size(*rgb.shape[:2])
        if size != rgb.shape[:2]:
            import cv2

            rgb = cv2.resize(rgb, size[::-1], interpolation=cv2.INTER_AREA)
        return draw_predictions(np.ascontiguousarray(rgb), outputs, self.metadata, task)
