"""Several training processes (gloo on the CPU) against the one-process -bnSplit emulation, torchrun, faults."""
import contextlib
import csv
import io
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from helpers import rank_batches, run_opt, run_state

import checkpoints
import models
from dataloader import FixedBatches
from support import distributed
from support.errors import GunnError
from support.slices import slice_sizes
from train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = ['-netType', 'gunn-mini', '-dataset', 'digits', '-batchSize', '64', '-nThreads', '1', '-device', 'cpu']


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


@pytest.mark.parametrize('n,parts,sizes', [(8, 2, [4, 4]), (7, 2, [4, 3]), (10, 4, [3, 2, 3, 2]), (6, 4, [2, 1, 2, 1]),
                                           (7, 3, [3, 2, 2]), (143, 4, [36, 36, 36, 35]), (2, 4, [1, 0, 1, 0])])
def test_batches_are_cut_as_data_parallel_table_cut_them(n, parts, sizes):
    """DataParallelTable's sliceRange, worked out by hand: slice i starts at ceil((i-1) * n / parts) + 1."""
    assert slice_sizes(n, parts) == sizes


def shifted_batches(seed, sizes, splits):
    """Global batches whose images in slice 1, 3, ... are scaled and shifted: the statistics sets differ."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for size in sizes:
        x = torch.randn(size, 3, 32, 32, generator=generator, dtype=torch.float64)
        # a brightness and contrast of its own per image: iid noise images would all give the same prediction
        x = x * torch.rand(size, 1, 1, 1, generator=generator, dtype=torch.float64).mul(1.5).add(0.5) \
            + torch.randn(size, 3, 1, 1, generator=generator, dtype=torch.float64)
        for i, part in enumerate(x.split(slice_sizes(size, splits))):
            part.mul_(1 + 2 * (i % 2)).add_(i % 2)
        batches.append({'input': x, 'target': torch.randint(0, 10, (size,), generator=generator), 'batchTotal': size})
    return batches


def rank_part(batches, rank, world_size):
    sliced = []
    for b in batches:
        sizes = slice_sizes(b['batchTotal'], world_size)
        sliced.append({'input': b['input'].split(sizes)[rank], 'target': b['target'].split(sizes)[rank],
                       'batchTotal': b['batchTotal']})
    return FixedBatches(sliced)


TRAIN_SIZES, VAL_SIZES = (8, 8, 8), (8, 7)


def fast_statistics(model):
    """BatchNorm momentum 0.9: after three steps the running statistics are (nearly) those of the last
    slices, not still the initial 0/1 that make an untrained network predict one class for everything."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.9
    return model


def train_then_test(opt, process):
    """distributed.launch target: three SGD steps and a test pass (float64); every rank writes its BatchNorm
    buffers and the test errors, rank 0 the checkpoints."""
    splits = process.world_size * opt.bnSplit
    torch.set_num_threads(1)  # as main.py (-cpuThreads 1)
    torch.manual_seed(0)
    model = fast_statistics(models.create(opt).double())
    models.batchnorm.set_bn_split(model, opt.bnSplit)
    model = distributed.wrap(model, process)
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, None, process)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train(1, rank_part(shifted_batches(1, TRAIN_SIZES, splits), process.rank, process.world_size))
        errors = trainer.test(1, rank_part(shifted_batches(2, VAL_SIZES, splits), process.rank, process.world_size))
    if process.is_main:
        checkpoints.save(1, model, trainer.optimState, True, opt, run_state(*errors, world_size=process.world_size))
    buffers = dict(getattr(model, 'module', model).named_buffers())
    torch.save({'buffers': buffers, 'errors': errors}, os.path.join(opt.save, f'rank{process.rank}.pt'))


def by_hand(splits, opt):
    """DataParallelTable over `splits` GPUs written out: one set of parameters, one set of BatchNorm buffers
    per GPU; the update is the gradient of the mean loss over the whole batch; each GPU normalises its slice
    in training and evaluates its slice with its own buffers. Returns (buffers per GPU, errors, errors when
    every slice is evaluated with GPU 1's buffers)."""
    torch.manual_seed(0)
    model = fast_statistics(models.create(run_opt('.', shareGradInput=False)).double())  # plain autograd GunnLayer
    params = dict(model.named_parameters())
    buffers = [{k: v.clone() for k, v in model.named_buffers()} for _ in range(splits)]
    sgd = torch.optim.SGD(params.values(), lr=opt.LR, momentum=opt.momentum, dampening=0, nesterov=True,
                          weight_decay=opt.weightDecay)
    for b in shifted_batches(1, TRAIN_SIZES, splits):
        sizes = slice_sizes(b['batchTotal'], splits)
        loss = sum(nn.functional.cross_entropy(torch.func.functional_call(model, (params, buffers[i]), x), y)
                   * len(y) / b['batchTotal']
                   for i, (x, y) in enumerate(zip(b['input'].split(sizes), b['target'].split(sizes))))
        sgd.zero_grad()
        loss.backward()
        sgd.step()
    model.eval()

    def errors(statistics):
        wrong1 = wrong5 = count = 0
        with torch.no_grad():
            for b in shifted_batches(2, VAL_SIZES, splits):
                sizes = slice_sizes(b['batchTotal'], splits)
                for i, (x, y) in enumerate(zip(b['input'].split(sizes), b['target'].split(sizes))):
                    top5 = torch.func.functional_call(model, (params, statistics(i)), x).topk(5, 1).indices
                    wrong1 += (top5[:, 0] != y).sum().item()
                    wrong5 += (top5 != y.view(-1, 1)).all(1).sum().item()
                    count += len(y)
        return 100 * wrong1 / count, 100 * wrong5 / count

    return buffers, errors(lambda i: buffers[i]), errors(lambda i: buffers[0])


@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('layout', [dict(nGPU=2), dict(bnSplit=2)], ids=['two processes', 'bnSplit 2'])
def test_each_slice_is_evaluated_with_its_own_statistics(tmp_path, layout):
    """As DataParallelTable: per-GPU running statistics (only the parameters are shared), each GPU's slice of a
    test batch evaluated with its own; the checkpoints hold GPU 1's."""
    opt = run_opt(tmp_path, resume='none', LR=0.001, **layout)  # varied predictions after three steps
    distributed.launch(train_then_test, opt)
    buffers, errors, errors_with_first = by_hand(2, opt)
    assert errors_with_first != errors  # the test tells the two evaluations apart
    ranks = [torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(opt.nGPU)]
    assert all(r['errors'] == pytest.approx(errors, abs=1e-9) for r in ranks)
    for name, value in buffers[0].items():
        assert buffers[1][name].shape == () or not torch.allclose(buffers[1][name], value)
    if opt.nGPU == 2:
        own = [r['buffers'] for r in ranks]
    else:  # one process: the second set lives in each BatchNorm's split_running_mean/_var
        first = ranks[0]['buffers']
        second = {name: first[name.replace('running_', 'split_running_')][0] if 'running_' in name else first[name]
                  for name in buffers[1]}
        own = [first, second]
    for rank in range(2):
        for name, value in buffers[rank].items():
            torch.testing.assert_close(own[rank][name], value, rtol=1e-10, atol=1e-13, msg=f'{rank} {name}')
    latest = torch.load(tmp_path / 'latest.pt', weights_only=True)
    for name, value in buffers[0].items():
        torch.testing.assert_close(latest['model'][name], value, rtol=1e-10, atol=1e-13, msg=name)
    assert not any('split_' in name for name in latest['model'])


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


@pytest.mark.parametrize('argv,status,message', [
    (['-nGPU', '2', '-device', 'auto'], 1, 'error: -nGPU 2, but no GPU is visible: -nGPU 1 -bnSplit 2 runs the same '
                                           'experiment in one process (or -device cpu for 2 CPU processes)'),
    (['-nGPU', '3', '-batchSize', '64'], 2, 'main.py: error: -batchSize 64 is not divisible by the 3 training processes'),
])
def test_bad_process_counts(tmp_path, argv, status, message):
    if torch.cuda.is_available():
        pytest.skip('checks the messages of a machine without GPUs')
    result = main_py(tmp_path, *DIGITS, *argv, check=False)
    assert result.returncode == status and result.stderr.strip() == message


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
    from helpers import saved_run
    (tmp_path / 'X').mkdir()
    saved_run(tmp_path / 'X')
    before = {name: (tmp_path / 'X' / name).read_bytes() for name in os.listdir(tmp_path / 'X')}
    result = main_py(tmp_path, *DIGITS, '-nGPU', '2', '-save', 'X', check=False)
    assert result.returncode == 1 and result.stderr == (
        'error: -save X already holds another run (gunn-mini on digits, epoch 3, best top-1 error 12.500 %), which '
        'this run would overwrite: continue it with -resume X, or choose another -save folder\n')
    assert {name: (tmp_path / 'X' / name).read_bytes() for name in os.listdir(tmp_path / 'X')} == before
