"""Checkpoints: the one checkpointer (`MaskFormerCheckpointer`), safe file reading, checks."""

from .checkpointer import OPTIONAL_KEYS, RENAMED_KEYS, MaskFormerCheckpointer, map_published_keys
from .files import CorruptCheckpointError, UnsafeCheckpointError, load_checkpoint_file

__all__ = [
    "OPTIONAL_KEYS",
    "RENAMED_KEYS",
    "CorruptCheckpointError",
    "MaskFormerCheckpointer",
    "UnsafeCheckpointError",
    "load_checkpoint_file",
    "map_published_keys",
]
