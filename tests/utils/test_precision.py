"""mask2former/utils/precision.py: never fp16 on a CPU, bf16 only where it is native, one log
line; the trainer's AMP precision follows the same rule."""

import logging
import os

import pytest
import torch

from mask2former import load_config
from mask2former.utils import precision

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_native_bf16_from_cpu_flags(tmp_path):
    amd = tmp_path / "amd"
    amd.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n")
    sapphire = tmp_path / "spr"
    sapphire.write_text("processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert not precision.cpu_has_native_bf16(str(amd))
    assert precision.cpu_has_native_bf16(str(sapphire))
    assert precision.cpu_has_native_bf16(str(arm))
    assert not precision.cpu_has_native_bf16(str(tmp_path / "none"))


def test_precision_on_cpu_without_native_bf16(monkeypatch, caplog):
    from mask2former.utils import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.INFO):
        assert precision.resolve_precision("cpu", "auto", amp_enabled=True) is None
    assert "fp32" in caplog.text and "no native bf16" in caplog.text
    with pytest.raises(ValueError, match="fp16 on the CPU"):
        precision.resolve_precision("cpu", "fp16")
    with pytest.raises(ValueError, match="bf16 on a CPU without native"):
        precision.resolve_precision("cpu", "bf16")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("cpu", "auto", amp_enabled=True) is torch.bfloat16
    assert precision.resolve_precision("cpu", "auto", amp_enabled=False) is None
    assert precision.resolve_precision("cuda", "auto", amp_enabled=True) is torch.float16


def test_trainer_amp_on_cpu_becomes_fp32_or_bf16(monkeypatch):
    from mask2former.engine.trainer import amp_precision

    coco = os.path.join(REPO, "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    cfg = load_config(coco, ["MODEL.DEVICE", "cpu"])
    assert cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.AMP.PRECISION == "float16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert amp_precision(cfg) is None
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert amp_precision(cfg) == "bfloat16"
    bf16 = load_config(coco, ["MODEL.DEVICE", "cpu", "SOLVER.AMP.PRECISION", "bfloat16"])
    assert amp_precision(bf16) == "bfloat16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert amp_precision(bf16) is None  # emulated bf16 would be many times slower than fp32
    cuda = load_config(coco, ["MODEL.DEVICE", "cuda"])
    assert amp_precision(cuda) == "float16"
