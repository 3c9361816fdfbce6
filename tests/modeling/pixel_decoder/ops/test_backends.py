"""Backend selection by MASK2FORMER_MSDA_BACKEND (mask2former/modeling/pixel_decoder/ops/backends.py)."""

import logging

import pytest

from mask2former.modeling.pixel_decoder.ops import backends, build, ms_deform_attn

from .reference import HAS_CXX, make_inputs


def test_bad_env_value_lists_choices(monkeypatch, fresh_selection):
    monkeypatch.setenv(backends.ENV_VAR, "triton")
    value, spatial_shapes, level_start_index, loc, attn = make_inputs(1, [(2, 2)], 1, 1, 1, 1)
    with pytest.raises(ValueError, match="auto, cuda, cpp, pytorch"):
        ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn)


def test_forced_backend_on_wrong_device_errors(monkeypatch, fresh_selection):
    monkeypatch.setenv(backends.ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="cuda tensors"):
        backends.select_backend("cpu")


def test_env_is_case_insensitive_and_forces_pytorch(monkeypatch, fresh_selection):
    monkeypatch.setenv(backends.ENV_VAR, " PyTorch ")
    assert backends.select_backend("cpu") == backends.Backend("pytorch", None)


def test_auto_falls_back_with_one_warning(monkeypatch, fresh_selection, caplog):
    def broken():
        raise RuntimeError("Error building extension\nc++: fatal error: no input files")

    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    monkeypatch.setattr(build, "load_cpu_extension", broken)
    with caplog.at_level(logging.INFO, logger=backends.__name__):
        for _ in range(3):
            assert backends.select_backend("cpu").name == "pytorch"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no input files" in warnings[0].getMessage()
    assert sum("pytorch backend" in r.getMessage() for r in caplog.records) == 1


def test_forced_backend_propagates_build_errors(monkeypatch, fresh_selection):
    def broken():
        raise RuntimeError("Error building extension")

    monkeypatch.setenv(backends.ENV_VAR, "cpp")
    monkeypatch.setattr(build, "load_cpu_extension", broken)
    with pytest.raises(RuntimeError, match="Error building extension"):
        backends.select_backend("cpu")


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler")
def test_auto_picks_the_cpp_kernel_on_cpu(monkeypatch, fresh_selection):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert backends.select_backend("cpu").name == "cpp"
