"""Run an exported Mask2Former (ONNX Runtime or a torch.export `.pt2`) with the model's own
post-processing, returning detectron2's output format.

`ExportedModel(cfg, path)(batched_inputs)` takes what `MaskFormer` takes in inference (per image
a dict with "image" (3, H, W) uint8 and optional "height"/"width") and returns what it returns
(per image "sem_seg", "panoptic_seg", "instances" as the config's TEST.*_ON select). Images run
one at a time (the exported graph has batch 1), each padded to a multiple of the size divisibility
(or to the exported size for a static export) with the pixel mean, which normalises to the zeros
the model pads with. Post-processing is `MaskFormer.postprocess` itself, on a `MaskFormer` whose
backbone and head are built on the meta device (no memory, never run): one code path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from detectron2.structures import ImageList

from .export import INPUT_NAME


def postprocessor(cfg):
    """A `MaskFormer` for `postprocess` only: thresholds, metadata, TEST.*_ON and normalisation
    from `cfg` (through `MaskFormer.from_config`, the one builder); backbone and head on meta."""
    from ..maskformer_model import MaskFormer  # noqa: PLC0415

    if cfg.MODEL.META_ARCHITECTURE != "MaskFormer":
        raise ValueError(
            f"MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r}: exported models run with "
            "the MaskFormer post-processing only; use a Mask2Former config"
        )
    with torch.device("meta"):
        kwargs = MaskFormer.from_config(cfg)
    kwargs["criterion"] = None
    return MaskFormer(**kwargs).eval()


def onnx_runner(path: str | Path, providers: list[str] | None = None) -> Callable:
    """(1, 3, H, W) float32 -> (pred_logits, pred_masks) with ONNX Runtime; the CUDA provider
    first when onnxruntime has it, then the CPU provider."""
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError as e:
        raise RuntimeError(
            "running an .onnx file needs onnxruntime: pip install -c "
            "requirements/constraints.txt onnxruntime"
        ) from e
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    session = ort.InferenceSession(str(path), providers=providers)

    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, masks = session.run(None, {INPUT_NAME: images.cpu().numpy()})
        return torch.from_numpy(logits), torch.from_numpy(masks)

    run.session = session
    run.fixed_size = _static(session.get_inputs()[0].shape[2:])  # ints, or names when dynamic
    return run


def program_runner(path: str | Path) -> Callable:
    """(1, 3, H, W) float32 -> (pred_logits, pred_masks) with a saved torch.export program."""
    program = torch.export.load(str(path))
    module = program.module()

    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return module(images)

    placeholder = next(
        n
        for n in program.graph.nodes
        if n.op == "placeholder" and n.name == (program.graph_signature.user_inputs[0])
    )
    run.fixed_size = _static(placeholder.meta["val"].shape[2:])  # ints, or SymInts when dynamic
    return run


def _static(dims) -> tuple[int, int] | None:
    """(H, W) when both are plain ints, else None (dynamic)."""
    return (dims[0], dims[1]) if all(type(d) is int for d in dims) else None


def load_runner(path: str | Path) -> Callable:
    """The runner for an `.onnx` or `.pt2` file."""
    suffix = Path(path).suffix
    if suffix == ".onnx":
        return onnx_runner(path)
    if suffix == ".pt2":
        return program_runner(path)
    raise ValueError(f"{path}: unknown exported-model suffix {suffix!r}; expected .onnx or .pt2")


class ExportedModel:
    """An exported network + the model's post-processing: a drop-in for `MaskFormer` inference.

    Args:
        cfg: the config the file was exported with (classes, thresholds, TEST.*_ON, pixel mean).
        path: `model.onnx` or `model.pt2` from tools/deploy/export_model.py.
        runner: instead of `path`, a callable (1, 3, H, W) float32 -> (pred_logits, pred_masks).
        fixed_size: (H, W) of a static export: every image is padded to it (larger images are an
            error). None: read from the file (None again for a dynamic export).
    """

    def __init__(
        self,
        cfg,
        path: str | Path | None,
        fixed_size: tuple[int, int] | None = None,
        *,
        runner: Callable | None = None,
    ):
        self.model = postprocessor(cfg)
        if runner is not None:  # any (1, 3, H, W) -> (logits, masks) callable, e.g. the eager net
            self.path, self.run, self.fixed_size = None, runner, fixed_size
            return
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"exported model {self.path} does not exist; write it with "
                "tools/deploy/export_model.py"
            )
        self.run = load_runner(self.path)
        self.fixed_size = fixed_size if fixed_size is not None else self.run.fixed_size

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path) if self.path else 'runner'})"

    def pad(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(3, H, W) uint8 -> (1, 3, Hp, Wp) float32 padded with the pixel mean, and (H, W)."""
        h, w = image.shape[-2:]
        div = max(self.model.size_divisibility, 1)
        if self.fixed_size is not None:
            hp, wp = self.fixed_size
            if h > hp or w > wp:
                raise ValueError(
                    f"image of size {h}x{w} is larger than the static export's {hp}x{wp}; "
                    "export with --dynamic or at a larger --height/--width"
                )
        else:
            hp, wp = -(-h // div) * div, -(-w // div) * div
        x = self.model.pixel_mean.to(torch.float32).expand(-1, hp, wp).clone()  # (3, Hp, Wp)
        x[:, :h, :w] = image
        return x[None], (h, w)

    def network(self, image: torch.Tensor):
        """(3, H, W) uint8 -> pred_logits (1, Q, K+1), pred_masks (1, Q, Hp/4, Wp/4), and the
        padded input (1, 3, Hp, Wp)."""
        x, _ = self.pad(image)
        logits, masks = self.run(x)
        return logits, masks, x

    def postprocess(
        self, logits: torch.Tensor, masks: torch.Tensor, x: torch.Tensor, inputs: dict
    ) -> dict:
        """The model's post-processing of one image's network outputs (`network`'s three)."""
        h, w = (int(v) for v in inputs["image"].shape[-2:])
        images = ImageList(x, [(h, w)])
        outputs = {"pred_logits": logits, "pred_masks": masks}
        with torch.no_grad():
            return self.model.postprocess(outputs, [inputs], images)[0]

    def __call__(self, batched_inputs: list[dict]) -> list[dict]:
        results = []
        for inputs in batched_inputs:
            image = torch.as_tensor(np.asarray(inputs["image"]))  # (3, H, W)
            results.append(self.postprocess(*self.network(image), inputs))
        return results
