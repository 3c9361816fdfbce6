"""Building and loading the compiled MSDeformAttn kernels (sources in `csrc/`).

Two libraries, each registering `forward` and `backward` operators in its own namespace:
    torch.ops.mask2former_msda_cpu   C++/OpenMP kernel (`csrc/ms_deform_attn_cpu.cpp`)
    torch.ops.mask2former_msda_cuda  CUDA kernels (`csrc/ms_deform_attn_cuda.cu`) and their
                                     entry points (`csrc/ms_deform_attn_cuda_ops.cpp`)

Each is built either at install time (`install_time_extensions`, called by setup.py, when CUDA is
usable or FORCE_CUDA=1) or on first use with `torch.utils.cpp_extension.load`, cached under
$TORCH_EXTENSIONS_DIR or ~/.cache/mask2former/torch_extensions, per Python and PyTorch version.
Nothing here runs at import of the package.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import logging
import os
import re
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
CPU_SOURCES = [CSRC / "ms_deform_attn_cpu.cpp"]
CUDA_SOURCES = [CSRC / "ms_deform_attn_cuda_ops.cpp", CSRC / "ms_deform_attn_cuda.cu"]
_PACKAGE = __name__.rsplit(".", 1)[0]  # mask2former.modeling.pixel_decoder.ops
_INSTALLED = {"cpu": "_msda_cpu", "cuda": "_msda_cuda"}  # install-time module names
_NAMESPACE = {"cpu": "mask2former_msda_cpu", "cuda": "mask2former_msda_cuda"}


def cpu_flags() -> list[str]:
    """g++ flags: OpenMP, and AVX2/FMA where this CPU has them (the cache key includes them)."""
    flags = ["-O3", "-fopenmp"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def cuda_flags() -> list[str]:
    # Half conversions go through c10::Half / c10::BFloat16, so PyTorch's default
    # -D__CUDA_NO_HALF_OPERATORS__ etc. are fine; accumulation is in float.
    return ["-O3"]


def load_cpu_extension() -> ModuleType:
    """torch.ops.mask2former_msda_cpu, from the installed build or compiled now (cached)."""
    return _load("cpu")


def load_cuda_extension() -> ModuleType:
    """torch.ops.mask2former_msda_cuda, from the installed build or compiled now (cached)."""
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available")
    return _load("cuda")


def _load(kind: str) -> ModuleType:
    namespace = getattr(torch.ops, _NAMESPACE[kind])
    if not hasattr(namespace, "forward"):  # not registered in this process yet
        installed = _installed_library(_INSTALLED[kind])
        if installed is not None:
            torch.ops.load_library(str(installed))
        else:
            jit_compile(kind)
    return namespace


def _installed_library(module: str) -> Path | None:
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if (here / (module + suffix)).is_file():
            return here / (module + suffix)
    return None


def jit_compile(
    kind: str,
    verbose: bool = False,
    cuda_arch_list: str | None = None,
    build_dir: Path | None = None,
) -> str:
    """Compile (or find in the cache) and load one library; returns the path of the .so.

    `cuda_arch_list` overrides TORCH_CUDA_ARCH_LIST for this build (e.g. "9.0"), which lets the
    CUDA sources compile on a machine without a GPU. `build_dir` overrides the cache directory.
    """
    cpp_extension = _cpp_extension()
    if kind == "cpu":
        arch, tag = None, "avx2" if "-mavx2" in cpu_flags() else "generic"
    else:
        arch = cuda_arch_list or os.environ.get("TORCH_CUDA_ARCH_LIST") or _visible_archs()
        tag = "sm" + re.sub(r"\W+", "_", arch)  # "8.0;9.0+PTX" -> sm8_0_9_0_PTX
    name = f"{_NAMESPACE[kind]}_{tag}"  # builds for other ISAs or GPU archs never share a cache
    if build_dir is None:
        # Checkouts and environments sharing one cache each get their own directory: the same
        # directory with other source paths or include dirs would be rebuilt by every process.
        key = hashlib.sha1(
            f"{CSRC}|{sys.prefix}|{cpu_flags()}|{cuda_flags()}".encode()
        ).hexdigest()[:8]
        build_dir = _cache_dir() / f"{name}_{key}"
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        name=name,
        build_directory=str(build_dir),
        extra_cflags=cpu_flags() if kind == "cpu" else ["-O3"],
        extra_ldflags=["-fopenmp"] if kind == "cpu" else [],
        is_python_module=False,
        verbose=verbose,
    )
    if kind == "cuda":
        kwargs.update(extra_cuda_cflags=cuda_flags(), with_cuda=True)
    sources = CPU_SOURCES if kind == "cpu" else CUDA_SOURCES
    old_arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if arch:
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch
    start = time.perf_counter()
    try:
        path = cpp_extension.load(sources=[str(s) for s in sources], **kwargs)
    finally:
        if old_arch is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = old_arch
    logger.info(
        "MSDeformAttn %s kernel ready in %.1f s (%s)", kind, time.perf_counter() - start, build_dir
    )
    return path


def _cpp_extension() -> ModuleType:
    """torch.utils.cpp_extension (slow to import, so only when building), with CUDA_HOME fixed.

    Its import warns about CUDA_HOME on machines without a GPU, which is noise for CPU builds.
    """
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension  # noqa: PLC0415
    finally:
        quiet.setLevel(level)
    _set_cuda_home(cpp_extension)
    return cpp_extension


def _visible_archs() -> str:
    """TORCH_CUDA_ARCH_LIST for the GPUs of this machine, e.g. "8.0;9.0"."""
    caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))


def _cache_dir() -> Path:
    base = (
        os.environ.get("TORCH_EXTENSIONS_DIR")
        or Path.home() / ".cache" / "mask2former" / "torch_extensions"
    )
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}"
    return Path(base) / tag.replace("+", "_")


def _set_cuda_home(cpp_extension: ModuleType) -> None:
    """Prefer the toolkit directory over a wrapper nvcc on PATH (e.g. /usr/local/bin/nvcc)."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    home = cpp_extension.CUDA_HOME
    if (home is None or not Path(home, "include", "cuda_runtime.h").is_file()) and Path(
        "/usr/local/cuda/include/cuda_runtime.h"
    ).is_file():
        cpp_extension.CUDA_HOME = "/usr/local/cuda"


def install_time_extensions() -> tuple[list, dict]:
    """(ext_modules, cmdclass) for setup.py: both libraries when CUDA can be built, else nothing.

    Built when FORCE_CUDA=1, or when CUDA is usable and a toolkit (CUDA_HOME) is found. Without
    them the CPU kernel is compiled on first use instead, and CUDA tensors use the CUDA kernel
    compiled on first use (or the grid_sample path).
    """
    cpp_extension = _cpp_extension()
    force = os.environ.get("FORCE_CUDA", "0") == "1"
    if not (force or (torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None)):
        return [], {}
    rel = Path(os.path.relpath(CSRC, Path.cwd()))  # setuptools wants paths relative to setup.py
    cpu = cpp_extension.CppExtension(
        f"{_PACKAGE}.{_INSTALLED['cpu']}",
        [str(rel / s.name) for s in CPU_SOURCES],
        extra_compile_args=cpu_flags(),
        extra_link_args=["-fopenmp"],
    )
    cuda = cpp_extension.CUDAExtension(
        f"{_PACKAGE}.{_INSTALLED['cuda']}",
        [str(rel / s.name) for s in CUDA_SOURCES],
        extra_compile_args={"cxx": ["-O3"], "nvcc": cuda_flags()},
    )
    return [cpu, cuda], {
        "build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)
    }
