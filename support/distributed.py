"""One training process per GPU (DistributedDataParallel), replacing the original's DataParallelTable.

``-nGPU N`` on one machine: main.py starts N processes itself (NCCL on GPUs; gloo with ``-device cpu``).
Under ``torchrun`` (one or several machines) the processes come from torchrun and are read from its
environment variables. Every process loads its slice of each global batch of ``-batchSize`` images (cut as
DataParallelTable cut it, ``slice_sizes``), normalises BatchNorm over that slice alone, keeps its own
BatchNorm running statistics and evaluates its slice of each test batch with them, as each GPU of
DataParallelTable did (it synchronised the parameters only); checkpoints hold rank 0's, as the original
saved GPU 1's model.
"""
import gc
import inspect
import logging
import os
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from support.errors import GunnError, OptionError, RunStopped

DDP = torch.nn.parallel.DistributedDataParallel
# Every process keeps the BatchNorm running statistics of its own slices: no buffer broadcast before each
# forward (torch 2.14 renamed the option; the new one still copies rank 0's buffers once, at the start, as
# DataParallelTable copied GPU 1's module onto the others).
_OWN_BUFFERS = ({'forward_sync_buffers': False} if 'forward_sync_buffers' in inspect.signature(DDP).parameters
                else {'broadcast_buffers': False})


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


def uses_cuda(opt):
    """Whether the run trains on GPUs: -device cuda, or auto with one visible."""
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
        gpus = torch.cuda.device_count() if uses_cuda(opt) else 0
        if gpus and opt.nGPU > gpus:
            raise GunnError(f'-nGPU {opt.nGPU}, but only {gpus} GPU(s) are visible: {_same_experiment(opt, gpus)} '
                            'runs the same experiment (the same BatchNorm groups and updates) on them')
        if not gpus and opt.nGPU > 1 and opt.device != 'cpu':
            raise GunnError(f'-nGPU {opt.nGPU}, but no GPU is visible: {_same_experiment(opt, 1)} runs the same '
                            f'experiment in one process (or -device cpu for {opt.nGPU} CPU processes)')
    if opt.batchSize % world_size:
        raise OptionError(f'-batchSize {opt.batchSize} is not divisible by the {world_size} training processes')
    if opt.cudaGraph and world_size > 1:
        raise OptionError(f'-cudaGraph true trains in one process, not {world_size} '
                        '(use -cudaGraph false, or -bnSplit to emulate several GPUs on one)')
    if opt.rng == 'torch7' and world_size > 1:
        raise OptionError(f'-rng torch7 runs in one process, not {world_size} (-bnSplit {world_size} gives the '
                        f'BatchNorm of {world_size} GPUs in one)')


def _same_experiment(opt, gpus):
    """The -nGPU/-bnSplit pair for at most `gpus` processes that normalises BatchNorm over the same groups."""
    processes = max(n for n in range(1, gpus + 1) if opt.nGPU % n == 0)
    return f'-nGPU {processes} -bnSplit {opt.nGPU // processes * opt.bnSplit}'


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
        # not its note on stopping the other processes after one failed: the error line is the message
        logging.getLogger('torch.multiprocessing.spawn').setLevel(logging.ERROR)
        try:
            mp.start_processes(_child, (run, opt), nprocs=opt.nGPU, join=True, start_method='spawn')
        except mp.ProcessExitedException as e:
            if e.exit_code != 1:  # exit code 1: the process printed its own error line already
                raise RunStopped(f'training process {e.error_index} of {opt.nGPU} died (exit code {e.exit_code}); '
                                 'all processes were stopped') from None
            sys.exit(1)


def _child(index, run, opt):
    try:
        _run_process(run, opt, index, opt.nGPU, index)
    except GunnError as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        sys.exit(1)


def _run_process(run, opt, rank, world_size, local_rank):
    cuda = uses_cuda(opt)
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
        result = run(opt, process)
        dist.barrier()  # every process done (rank 0's checkpoint written) before any tears its group down
        return result
    except StoppedByMain:
        return None
    finally:
        # A finished run's DistributedDataParallel sits in reference cycles that hold the process group;
        # left to the interpreter's exit, gloo's threads are destroyed in mid-teardown, and now and then
        # a process aborted ("terminate called without an active exception") after training had ended.
        gc.collect()
        dist.destroy_process_group()


class StoppedByMain(Exception):
    """Ends the other processes quietly when rank 0 stops the run with an error of its own (printed there)."""


def decided_by_main(decide, process):
    """decide() run in rank 0 alone and its result given to every process: the -save checks read and write
    the folder once, without races between the processes. A GunnError there is raised in rank 0 and ends
    the other processes quietly, so that they all stop at once instead of waiting for rank 0."""
    if process.world_size == 1:
        return decide()
    result, failure = None, None
    if process.is_main:
        try:
            result = decide()
        except GunnError as e:
            failure = e
    shared = [result, None if failure is None else str(failure)]
    dist.broadcast_object_list(shared, src=0, device=torch.device(process.device))
    if failure is not None:
        raise failure
    if shared[1] is not None:
        raise StoppedByMain
    return shared[0]


def wrap(model, process):
    """The model as each process trains it: DistributedDataParallel when there are several."""
    if process.world_size == 1:
        return model
    return DDP(model, device_ids=[process.local_rank] if process.device.startswith('cuda') else None,
               **_OWN_BUFFERS)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
