import importlib.util
import os
import shutil
import sys
import tempfile

import pytest
import torch

# Tests run on the CPU with at most two threads (their sizes and `slow` marks assume that).
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def demo_shapes():
    """tools/generate_demo_shapes.py, the demo_shapes generator: tests that need the dataset
    generate it with `demo_shapes.prepare_demo_shapes(root, splits=..., workers=1)`."""
    name = "generate_demo_shapes"
    if name not in sys.modules:  # by path: detectron2 installs a top-level `tools` package
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", name + ".py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # the generator's worker processes unpickle by module name
        spec.loader.exec_module(module)
    return sys.modules[name]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s on a 2-core CPU")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one)")


# The training tests need about 1.2 GB of free disk at a time (checkpoints of real models).
_MIN_FREE_GB = 2.0


def pytest_report_header(config):
    base = os.path.abspath(config.option.basetemp or tempfile.gettempdir())
    existing = base
    while not os.path.isdir(existing):  # --basetemp may not exist yet: measure where it will be
        existing = os.path.dirname(existing)
    free_gb = shutil.disk_usage(existing).free / 2**30
    line = f"free disk for temporary files in {base}: {free_gb:.1f} GiB"
    if free_gb < _MIN_FREE_GB:
        line += f"  WARNING: training tests need about {_MIN_FREE_GB:g} GiB; free some space or pass --basetemp"
    return line
