"""Export the inference network of a `MaskFormer` as one graph: ONNX or a torch.export program.

The graph is what runs between the model's input and its post-processing: normalisation,
backbone, pixel decoder (MSDeformAttn through `grid_sample`, a standard ONNX op) and the
masked-attention decoder (boolean attention masks), returning the final layer's predictions.
Post-processing (data-dependent: kept queries, segments) stays in Python, in `runtime.py`.

Shapes: B images, Q queries, K classes (+1 "no object"), (H, W) the padded input size, a multiple
of the model's size divisibility.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torch_export")
SUFFIX = {"onnx": ".onnx", "torch_export": ".pt2"}
INPUT_NAME = "images"
OUTPUT_NAMES = ("pred_logits", "pred_masks")
ONNX_OPSET = 18  # >= 17 (LayerNormalization); 18 is the newest opset torch's exporter targets fully
MAX_DYNAMIC_SIDE = 4096  # upper bound of the dynamic height / width


class ExportableMaskFormer(nn.Module):
    """The traceable part of a `MaskFormer`: padded images in, final predictions out.

    Shares (does not copy) the backbone and head of `model`; eval mode only.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if model.training:
            raise ValueError(
                "export an eval-mode model (call model.eval()); training is not exported"
            )
        self.backbone = model.backbone
        self.sem_seg_head = model.sem_seg_head
        self.size_divisibility = int(model.size_divisibility)
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone()[None], False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone()[None], False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            images: (B, 3, H, W) float32 pixel values in the model's input format (0-255, the
                config's channel order), H and W multiples of the size divisibility; padding must
                hold the pixel mean (it normalises to 0, as the model's own zero padding).

        Returns:
            pred_logits (B, Q, K+1) class logits and pred_masks (B, Q, H/4, W/4) mask logits.
        """
        x = (images - self.pixel_mean) / self.pixel_std  # (B, 3, H, W)
        outputs = self.sem_seg_head(self.backbone(x))
        return outputs["pred_logits"], outputs["pred_masks"]


def check_input_size(height: int, width: int, size_divisibility: int) -> None:
    """Exported sizes must be positive multiples of the size divisibility."""
    div = max(size_divisibility, 1)
    if height <= 0 or width <= 0 or height % div or width % div:
        raise ValueError(
            f"export size {height}x{width} is not a positive multiple of the model's size "
            f"divisibility {div} (MODEL.MASK_FORMER.SIZE_DIVISIBILITY or the backbone's); pass "
            f"--height/--width rounded up to a multiple of {div}"
        )


def dynamic_shapes(size_divisibility: int) -> dict:
    """torch.export dynamic shapes: H and W any multiple of the size divisibility, batch fixed."""
    div = max(size_divisibility, 1)
    h = torch.export.Dim("h_blocks", min=1, max=MAX_DYNAMIC_SIDE // div)
    w = torch.export.Dim("w_blocks", min=1, max=MAX_DYNAMIC_SIDE // div)
    return {INPUT_NAME: {2: div * h, 3: div * w}}


def example_input(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A (1, 3, height, width) float32 image of random pixel values, the tracing example."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, height, width), generator=g).float()


def export_program(
    net: ExportableMaskFormer, height: int, width: int, dynamic: bool = False
) -> torch.export.ExportedProgram:
    """Trace `net` at (1, 3, height, width) with torch.export (non-strict)."""
    check_input_size(height, width, net.size_divisibility)
    shapes = dynamic_shapes(net.size_divisibility) if dynamic else None
    with torch.no_grad():
        return torch.export.export(
            net, (example_input(height, width),), dynamic_shapes=shapes, strict=False
        )


def export_model(
    net: ExportableMaskFormer,
    fmt: str,
    output: str | Path,
    height: int,
    width: int,
    dynamic: bool = False,
) -> Path:
    """Write `net` as `model.onnx` (ONNX, opset `ONNX_OPSET`) or `model.pt2` (ExportedProgram)
    into the directory `output`; returns the file's path."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"model{SUFFIX[fmt]}"
    program = export_program(net, height, width, dynamic)
    if fmt == "torch_export":
        torch.export.save(program, str(path))
    else:
        _save_onnx(program, path, dynamic)
    logger.info("exported %s (%s, %dx%d%s)", path, fmt, height, width, ", dynamic" * dynamic)
    return path


def _save_onnx(program: torch.export.ExportedProgram, path: Path, dynamic: bool) -> None:
    try:
        import onnxscript  # noqa: F401, PLC0415  (torch's dynamo-based ONNX exporter needs it)
    except ImportError as e:
        raise RuntimeError(
            "ONNX export needs the packages onnx and onnxscript: "
            "pip install -c requirements/constraints.txt onnx onnxscript"
        ) from e
    dims = {2: "height", 3: "width"} if dynamic else None
    onnx_program = torch.onnx.export(
        program,
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        opset_version=ONNX_OPSET,
        dynamo=True,
        dynamic_shapes={INPUT_NAME: dims} if dynamic else None,
        external_data=False,
        optimize=False,
    )
    onnx_program.save(str(path))
