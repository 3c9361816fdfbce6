import os

import pytest
import torch

# Tests run on the CPU with few threads: the CI machine has 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s on a 2-core CPU")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one)")
