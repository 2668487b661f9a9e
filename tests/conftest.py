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


@pytest.fixture(scope='session')
def compact_report():
    """The parity report of golden/compact, run once per session: (report, {case: Outcome}). One thread: about
    15 s on 2 cores, where two threads take 16 s on an idle machine but 55 s next to another busy process."""
    import parity
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report, outcomes = parity.compare(parity.COMPACT)
    finally:
        torch.set_num_threads(threads)
    return report, {o.case.name: o for o in outcomes}


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason='no CUDA GPU visible: run tools/gpu_check.sh on a GPU machine')
