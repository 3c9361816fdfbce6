"""Fixtures forcing one MSDeformAttn backend."""

import pytest

from mask2former.modeling.pixel_decoder.ops import backends

from .reference import BACKENDS


@pytest.fixture
def fresh_selection():
    backends._select.cache_clear()
    yield
    backends._select.cache_clear()


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch, fresh_selection):
    """Forces one backend through the environment variable; yields the device it runs on."""
    monkeypatch.setenv(backends.ENV_VAR, request.param)
    device = "cuda" if request.param == "cuda" else "cpu"
    assert backends.select_backend(device).name == request.param
    return device
