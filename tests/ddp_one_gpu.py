"""Two SGD steps of gunn-mini (float64) under DistributedDataParallel with every process on cuda:0.

  python -m torch.distributed.run --nproc_per_node=N tests/ddp_one_gpu.py BACKEND STATE_FILE

nccl with one process (NCCL refuses two ranks on one device), gloo with two processes sharing the GPU: the
DistributedDataParallel path with CUDA tensors on a one-GPU machine. Rank 0 saves the trained state to
STATE_FILE; tests/test_cuda.py compares it with one process without a group (-bnSplit N). With
GUNN_TEST_DEVICE=cpu (tests/test_cuda.py's rehearsal on a machine without a GPU) the processes use the CPU."""
import contextlib
import io
import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from helpers import rank_batches, run_opt  # noqa: E402

import models  # noqa: E402
from support import distributed  # noqa: E402
from train import Trainer  # noqa: E402

ONE_GPU = 'cuda:0' if os.environ.get('GUNN_TEST_DEVICE', 'cuda') == 'cuda' else 'cpu'


def train_two_steps(process, bnSplit=1, ddp=False):
    """The state after two steps; with ddp, through DistributedDataParallel in the current group."""
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    opt = run_opt('unused', nGPU=process.world_size, device=process.device, bnSplit=bnSplit)
    torch.manual_seed(0)
    model = models.create(opt).to(process.device, torch.float64)
    models.batchnorm.set_bn_split(model, bnSplit)
    if ddp:  # distributed.wrap leaves a one-process model unwrapped: wrap it here to run NCCL at all
        model = (distributed.wrap(model, process) if process.world_size > 1
                 else nn.parallel.DistributedDataParallel(model, device_ids=[0] if ONE_GPU != 'cpu' else None))
    with contextlib.redirect_stdout(io.StringIO()):
        Trainer(model, nn.CrossEntropyLoss(), opt, None, process).train(
            1, rank_batches(process.rank, process.world_size))
    return {k: v.cpu() for k, v in getattr(model, 'module', model).state_dict().items()}


def main(backend, path):
    rank, world_size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    if ONE_GPU != 'cpu':
        torch.cuda.set_device(0)
    dist.init_process_group(backend, device_id=torch.device(ONE_GPU) if backend == 'nccl' else None)
    try:
        state = train_two_steps(distributed.Process(rank, world_size, 0, ONE_GPU), ddp=True)
        if rank == 0:
            torch.save(state, path)
    finally:
        dist.destroy_process_group()


if __name__ == '__main__':
    main(*sys.argv[1:])
