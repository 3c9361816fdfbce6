"""Training engine: the Trainer, the mixed-precision step and a CPU-capable multi-process launch."""

from .compat import launch
from .train_loop import MixedPrecisionTrainer
from .trainer import Trainer

__all__ = ["MixedPrecisionTrainer", "Trainer", "launch"]
