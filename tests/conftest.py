import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope='module')
def one_thread():
    """Small networks: one thread is as fast, and avoids OpenMP spin-waiting on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config):
    config.addinivalue_line('markers', 'cuda: needs a CUDA GPU (skipped with the reason where none is visible)')


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason='no CUDA GPU visible: run tools/gpu_check.sh on a GPU machine')
