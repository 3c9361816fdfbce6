"""Read `.pkl` weight files without letting them run code.

The published Detectron2 / Mask2Former model-zoo files (and the ImageNet backbones converted by
`tools/convert-*-to-d2.py`) are pickles of ``{"model": {name: numpy array}, "__author__": str,
"matching_heuristics": bool}``; Caffe2 / Detectron1 files hold ``{"blobs": {name: array}}``.
Unpickling such a file needs nothing beyond dicts, lists, tuples, strings, numbers and NumPy
arrays / dtypes / scalars. :func:`load_pickle_weights` unpickles with exactly that allowed and
refuses any other global (``os.system``, ``builtins.eval``, a class of some package, ...) with
:class:`UnsafeCheckpointError` naming the file and the refused global, before anything runs.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

__all__ = ["ALLOWED_GLOBALS", "UnsafeCheckpointError", "load_pickle_weights"]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint that could only be loaded by unpickling arbitrary Python objects."""


# (module, name) pairs a pickle of NumPy weights may reference. NumPy 1.x pickles name
# `numpy.core`, NumPy 2.x pickles `numpy._core`; `_codecs.encode` rebuilds `bytes` (the array
# data) in protocol-2 pickles written by Python 3; `_frombuffer` is NumPy's protocol-5 path.
ALLOWED_GLOBALS = frozenset(
    [
        (core, name)
        for core in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    ]
    + [("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
    + [("collections", "OrderedDict")]
)


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1")  # Python 2 pickles of the Detectron1 zoo
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"refusing to load {self.path}: it asks to unpickle the global '{module}.{name}', "
            "but a weights file needs only dicts, lists, tuples, strings, numbers and NumPy "
            "arrays. Unpickling other globals can run arbitrary code (nothing from the file was "
            "run). Fix: if you made or trust this file, convert it in a trusted environment to "
            "a plain {'model': {name: numpy array}} pickle, a .pth (torch.save of tensors) or "
            ".safetensors; otherwise delete it."
        )


def load_pickle_weights(path: str | os.PathLike) -> Any:
    """Unpickle the weights file `path`, allowing only :data:`ALLOWED_GLOBALS`.

    Raises UnsafeCheckpointError for any other global, and the usual pickle errors (EOFError,
    pickle.UnpicklingError) for a damaged file.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _WeightsUnpickler(f, path).load()
