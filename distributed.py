"""One training process per GPU (DistributedDataParallel), replacing the original's DataParallelTable.

``-nGPU N`` on one machine: main.py starts N processes itself (NCCL on GPUs; gloo with ``-device cpu``).
Under ``torchrun`` (one or several machines) the processes come from torchrun and are read from its
environment variables. Every process loads its slice of each global batch of ``-batchSize`` images and
normalises BatchNorm over that slice alone, as each GPU of DataParallelTable did.
"""
import os
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from errors import GunnError


@dataclass
class Process:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = 'cpu'

    @property
    def is_main(self):
        return self.rank == 0


def _under_torchrun():
    return 'RANK' in os.environ and 'WORLD_SIZE' in os.environ and 'LOCAL_RANK' in os.environ


def _use_cuda(opt):
    gpus = torch.cuda.device_count() if opt.device != 'cpu' else 0
    if opt.device == 'cuda' and gpus == 0:
        raise GunnError('-device cuda, but no GPU is visible')
    return gpus > 0


def check(opt):
    """The -nGPU checks that need to know the machine."""
    if _under_torchrun():
        world_size = int(os.environ['WORLD_SIZE'])
    else:
        world_size = opt.nGPU
        gpus = torch.cuda.device_count() if _use_cuda(opt) else 0
        if gpus and opt.nGPU > gpus:
            raise GunnError(f'-nGPU {opt.nGPU}, but only {gpus} GPU(s) are visible')
        if not gpus and opt.nGPU > 1 and opt.device != 'cpu':
            raise GunnError(f'-nGPU {opt.nGPU}, but no GPU is visible (use -device cpu for {opt.nGPU} CPU processes)')
    if opt.batchSize % world_size:
        raise GunnError(f'-batchSize {opt.batchSize} is not divisible by the {world_size} training processes')
    if getattr(opt, 'cudaGraph', False) and world_size > 1:
        raise GunnError(f'-cudaGraph true trains in one process, not {world_size} '
                        '(use -cudaGraph false, or -bnSplit to emulate several GPUs on one)')


def launch(run, opt):
    """Call run(opt, process) once per training process: here, under torchrun, or in -nGPU children."""
    check(opt)
    if _under_torchrun():
        _run_process(run, opt, int(os.environ['RANK']), int(os.environ['WORLD_SIZE']),
                     int(os.environ['LOCAL_RANK']))
    elif opt.nGPU == 1:
        _run_process(run, opt, 0, 1, 0)
    else:
        os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
        os.environ.setdefault('MASTER_PORT', str(_free_port()))
        try:
            mp.start_processes(_child, (run, opt), nprocs=opt.nGPU, join=True, start_method='spawn')
        except mp.ProcessExitedException as e:
            if e.exit_code != 1:  # exit code 1: the process printed its own error line already
                raise GunnError(f'training process {e.error_index} of {opt.nGPU} died (exit code {e.exit_code}); '
                                'all processes were stopped; the last latest checkpoint is intact') from None
            sys.exit(1)


def _child(index, run, opt):
    try:
        _run_process(run, opt, index, opt.nGPU, index)
    except GunnError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        sys.exit(1)


def _run_process(run, opt, rank, world_size, local_rank):
    cuda = _use_cuda(opt)
    device = f'cuda:{local_rank}' if cuda else 'cpu'
    if cuda:
        torch.cuda.set_device(local_rank)
    process = Process(rank, world_size, local_rank, device)
    if world_size == 1:
        return run(opt, process)
    dist.init_process_group('nccl' if cuda else 'gloo', rank=rank, world_size=world_size,
                            device_id=torch.device(device) if cuda else None)
    if rank != 0:  # logs, tables, plots and checkpoints come from rank 0
        sys.stdout = open(os.devnull, 'w')
    try:
        return run(opt, process)
    finally:
        dist.destroy_process_group()


def wrap(model, process):
    """The model as each process trains it: DistributedDataParallel when there are several."""
    if process.world_size == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[process.local_rank] if process.device.startswith('cuda') else None)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
