"""Several training processes (gloo on the CPU) against the one-process -bnSplit emulation, torchrun, faults."""
import contextlib
import csv
import io
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

import checkpoints
import distributed
import models
from dataloader import FixedBatches
from errors import GunnError
from train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = ['-netType', 'gunn-mini', '-dataset', 'digits', '-batchSize', '64', '-nThreads', '1', '-device', 'cpu']


def run_opt(save, **kw):
    base = dict(netType='gunn-mini', dataset='digits', optnet=False, optMemory=0, shareGradInput=True, nGPU=1,
                device='cpu', batchSize=8, bnSplit=1, dataset_size=8, nEpochs=10, LR=0.1, momentum=0.9,
                weightDecay=1e-4, precision='double', progress='lines', save=str(save))
    return SimpleNamespace(**{**base, **kw})


def rank_batches(rank, world_size):
    """Two global batches of 8 digit-sized images; each process gets its torch.tensor_split part."""
    generator = torch.Generator().manual_seed(7)
    batches = []
    for _ in range(2):
        x = torch.randn(8, 3, 32, 32, generator=generator, dtype=torch.float64)
        y = torch.randint(0, 10, (8,), generator=generator)
        batches.append({'input': x.tensor_split(world_size)[rank], 'target': y.tensor_split(world_size)[rank],
                        'batchTotal': 8})
    return FixedBatches(batches)


def train_two_steps(opt, process):
    """distributed.launch target: two SGD steps, float64; rank 0 writes the resulting state."""
    torch.manual_seed(0)
    model = models.create(opt).to(torch.float64 if opt.precision == 'double' else torch.float32)
    models.batchnorm.set_bn_split(model, opt.bnSplit)
    model = distributed.wrap(model, process)
    with contextlib.redirect_stdout(io.StringIO()):
        Trainer(model, nn.CrossEntropyLoss(), opt, None, process).train(1, rank_batches(process.rank, process.world_size))
    if process.is_main:
        torch.save(getattr(model, 'module', model).state_dict(), os.path.join(opt.save, 'state.pt'))


@pytest.mark.parametrize('memory', [dict(), dict(shareGradInput=False, optnet=True)], ids=['share', 'optnet'])
def test_two_processes_train_as_one_with_bn_split(tmp_path, memory):
    (tmp_path / 'two').mkdir()
    (tmp_path / 'one').mkdir()
    distributed.launch(train_two_steps, run_opt(tmp_path / 'two', nGPU=2, **memory))
    distributed.launch(train_two_steps, run_opt(tmp_path / 'one', bnSplit=2, **memory))
    two = torch.load(tmp_path / 'two' / 'state.pt', weights_only=True)
    one = torch.load(tmp_path / 'one' / 'state.pt', weights_only=True)
    initial = models.create(run_opt(tmp_path)).state_dict()
    moved = 0
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-11, atol=1e-13, msg=name)
        moved += not torch.equal(value.float(), initial[name].float())
    assert moved > len(one) // 2  # the two steps did change the network


def test_half_precision_trains_in_two_processes(tmp_path):
    distributed.launch(train_two_steps, run_opt(tmp_path, nGPU=2, precision='half'))
    state = torch.load(tmp_path / 'state.pt', weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values())


def test_bn_split_differs_from_whole_batch_statistics(tmp_path):
    (tmp_path / 'one').mkdir()
    (tmp_path / 'whole').mkdir()
    distributed.launch(train_two_steps, run_opt(tmp_path / 'one', bnSplit=2))
    distributed.launch(train_two_steps, run_opt(tmp_path / 'whole'))
    split = torch.load(tmp_path / 'one' / 'state.pt', weights_only=True)
    whole = torch.load(tmp_path / 'whole' / 'state.pt', weights_only=True)
    assert not torch.allclose(split['0.weight'], whole['0.weight'], rtol=1e-6, atol=0)


def dies_on_rank_1(opt, process):
    if process.rank == 1:
        os._exit(3)
    dist.barrier()  # would wait forever for rank 1: the launcher must stop it


def test_a_dead_worker_stops_the_run_with_a_message(tmp_path):
    with pytest.raises(GunnError, match=r'training process 1 of 2 died \(exit code 3\); all processes were stopped'):
        distributed.launch(dies_on_rank_1, run_opt(tmp_path, nGPU=2))


def main_py(cwd, *argv, launcher=(), check=True):
    cmd = [sys.executable, *launcher, os.path.join(ROOT, 'main.py'), *argv]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_torchrun_run_then_single_process_resume(tmp_path):
    torchrun = ['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={distributed._free_port()}']
    result = main_py(tmp_path, *DIGITS, '-nEpochs', '2', '-epochNumber', '1', '-save', 'cp', launcher=torchrun)
    assert sorted(os.listdir(tmp_path / 'cp')) == ['curves.png', 'latest.pt', 'log.csv', 'model_best.pt']
    latest = torch.load(tmp_path / 'cp' / 'latest.pt', weights_only=True)
    assert latest['epoch'] == 2 and latest['worldSize'] == 2
    assert not any(k.startswith('module.') for k in latest['model'])
    assert result.stdout.count(' * Finished top1:') == 1  # rank 0 alone prints

    # the two-process checkpoint continues in one process, with a warning on the BatchNorm change
    result = main_py(tmp_path, *DIGITS, '-nEpochs', '3', '-save', 'cp', '-resume', 'cp')
    assert 'the BatchNorm statistics, and so the experiment, change' in result.stderr
    with open(tmp_path / 'cp' / 'log.csv') as f:
        assert [int(r['epoch']) for r in csv.DictReader(f)] == [1, 2, 3]


@pytest.mark.parametrize('argv,message', [
    (['-nGPU', '2', '-device', 'auto'], 'error: -nGPU 2, but no GPU is visible: -nGPU 1 -bnSplit 2 runs the same '
                                        'experiment in one process (or -device cpu for 2 CPU processes)'),
    (['-nGPU', '3', '-batchSize', '64'], 'error: -batchSize 64 is not divisible by the 3 training processes'),
])
def test_bad_process_counts(tmp_path, argv, message):
    if torch.cuda.is_available():
        pytest.skip('checks the messages of a machine without GPUs')
    result = main_py(tmp_path, *DIGITS, *argv, check=False)
    assert result.returncode == 1 and result.stderr.strip() == message


@pytest.mark.parametrize('nGPU,bnSplit,gpus,advice', [(4, 1, 1, '-nGPU 1 -bnSplit 4'), (4, 1, 2, '-nGPU 2 -bnSplit 2'),
                                                      (4, 2, 3, '-nGPU 2 -bnSplit 4'), (6, 1, 4, '-nGPU 3 -bnSplit 2')])
def test_too_few_gpus_point_to_the_same_experiment_with_bn_split(monkeypatch, nGPU, bnSplit, gpus, advice):
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: gpus)
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    opt = run_opt('.', nGPU=nGPU, bnSplit=bnSplit, device='cuda', batchSize=64)
    with pytest.raises(GunnError) as e:
        distributed.check(opt)
    assert str(e.value) == (f'-nGPU {nGPU}, but only {gpus} GPU(s) are visible: {advice} runs the same experiment '
                            '(the same BatchNorm groups and updates) on them')
    processes, split = map(int, advice.split()[1::2])
    assert checkpoints.bn_group(64, nGPU, bnSplit) == checkpoints.bn_group(64, processes, split)


def test_processes_refuse_a_save_folder_holding_a_run_together(tmp_path):
    """Rank 0 alone checks -save; the others stop with it, quietly, instead of waiting for it."""
    from test_checkpoints import saved_run
    (tmp_path / 'X').mkdir()
    saved_run(tmp_path / 'X')
    before = {name: (tmp_path / 'X' / name).read_bytes() for name in os.listdir(tmp_path / 'X')}
    result = main_py(tmp_path, *DIGITS, '-nGPU', '2', '-save', 'X', check=False)
    assert result.returncode == 1 and result.stderr == (
        'error: -save X already holds another run (gunn-mini on digits, epoch 3, best top-1 error 12.500 %), which '
        'this run would overwrite: continue it with -resume X, or choose another -save folder\n')
    assert {name: (tmp_path / 'X' / name).read_bytes() for name in os.listdir(tmp_path / 'X')} == before
