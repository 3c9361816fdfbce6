"""Building the MSDeformAttn extensions: importing never builds, setup.py's hook, and the CUDA
sources compile with this machine's nvcc (no GPU needed: one architecture, sm_90)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mask2former.modeling.pixel_decoder.ops import build

REPO = Path(__file__).resolve().parents[4]


def _nvcc() -> Path | None:
    if torch.version.cuda is None:  # a CPU-only PyTorch cannot build CUDA extensions
        return None
    home = build._cpp_extension().CUDA_HOME
    nvcc = Path(home or "/nonexistent", "bin", "nvcc")
    return nvcc if nvcc.is_file() else None


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_import_builds_nothing():
    proc = _run(
        """
        import sys
        import mask2former.modeling.pixel_decoder.ops
        assert "torch.utils.cpp_extension" not in sys.modules
        """
    )
    assert proc.returncode == 0, proc.stderr


def test_install_time_extensions_only_with_cuda(monkeypatch):
    monkeypatch.delenv("FORCE_CUDA", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert build.install_time_extensions() == ([], {})
    monkeypatch.setenv("FORCE_CUDA", "1")
    monkeypatch.chdir(REPO)
    ext_modules, cmdclass = build.install_time_extensions()
    names = sorted(e.name for e in ext_modules)
    assert names == [
        "mask2former.modeling.pixel_decoder.ops._msda_cpu",
        "mask2former.modeling.pixel_decoder.ops._msda_cuda",
    ]
    for e in ext_modules:
        assert all((REPO / s).is_file() for s in e.sources)
        # setuptools' ninja build names objects by stem: a.cpp and a.cu would collide
        assert len({Path(s).stem for s in e.sources}) == len(e.sources)
    assert "build_ext" in cmdclass


@pytest.mark.slow
@pytest.mark.skipif(_nvcc() is None, reason="no nvcc (or a CPU-only PyTorch)")
def test_cuda_extension_compiles(tmp_path):
    """A fresh build in a temporary directory, in a subprocess (loading it here would register
    the operators in the test process). Loading resolves every symbol, so a missing kernel
    instantiation fails here too."""
    proc = _run(
        f"""
        import torch
        from mask2former.modeling.pixel_decoder.ops import build
        build.jit_compile("cuda", cuda_arch_list="9.0", build_dir={str(tmp_path)!r})
        ops = torch.ops.mask2former_msda_cuda
        assert hasattr(ops, "forward") and hasattr(ops, "backward")
        """
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert list(tmp_path.glob("*.so"))
