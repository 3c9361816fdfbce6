"""Optimiser and learning-rate schedule of the training recipe (Sec. 4.2)."""

from .build import (
    build_lr_scheduler,
    build_optimizer,
    get_param_groups,
    maybe_add_full_model_gradient_clipping,
)

__all__ = [
    "build_lr_scheduler",
    "build_optimizer",
    "get_param_groups",
    "maybe_add_full_model_gradient_clipping",
]
