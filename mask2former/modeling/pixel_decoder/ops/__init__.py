"""Multi-scale deformable attention (Deformable DETR): module, functional core and backends.

Importing this package never compiles anything and never fails for want of a compiled op: the
C++ (CPU) and CUDA kernels are loaded, or built, the first time they are selected (see
`backends.py`, `build.py` and docs/msdeformattn.md).
"""

from .backends import CHOICES as BACKEND_CHOICES
from .backends import ENV_VAR as BACKEND_ENV_VAR
from .backends import select_backend
from .functional import MSDeformAttnFunction, ms_deform_attn, ms_deform_attn_pytorch
from .module import MSDeformAttn

__all__ = [
    "BACKEND_CHOICES",
    "BACKEND_ENV_VAR",
    "MSDeformAttn",
    "MSDeformAttnFunction",
    "ms_deform_attn",
    "ms_deform_attn_pytorch",
    "select_backend",
]
