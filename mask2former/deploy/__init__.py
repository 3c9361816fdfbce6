"""Deployment: export the inference network (ONNX, torch.export) and run the exported file with
the model's own post-processing. See docs/deploy.md."""

from .export import FORMATS, ExportableMaskFormer, export_model, export_program
from .runtime import ExportedModel, load_runner

__all__ = [
    "FORMATS",
    "ExportableMaskFormer",
    "ExportedModel",
    "export_model",
    "export_program",
    "load_runner",
]
