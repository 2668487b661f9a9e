"""-rng torch7: the Torch7 generator emulation, the loader streams and their resume. Against real Torch7 runs
(the golden lua_rng, lua_init and lua_run cases: Torch7's generator, the Lua's initial weights, a main.lua
run reproduced through main.run): test_parity.py's compact report."""
import contextlib
import io
import os
import pickle

import numpy as np
import pytest
import torch
from helpers import cifar_like as dataloader_cifar_like
from helpers import loader_opt, mini_opt

import checkpoints
import main
import models
import opts
from dataloader import DataLoader
from datasets import transforms
from golden import cases as golden
from golden import torch7_run as parity_torch7
from models.setup import reset_classifier
from support import distributed
from support.errors import GunnError, OptionError
from torch7.generator import Torch7Draws, Torch7Generator, read_torch7_state, seed_value
from torch7.streams import RunStreams

# ---- the generator ----

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('n', [0, 1, 2, 7, 1000])
@pytest.mark.parametrize('cached', [False, True])
def test_vectorised_fills_equal_the_element_by_element_reference(dtype, n, cached):
    fast, reference = Torch7Generator(11), Torch7Generator(11)
    if cached:  # an odd fill before leaves a Box-Muller value for the next normal request
        fast.normal_fill(3)
        reference.normal_fill_reference(3)
    assert torch.equal(fast.normal_fill(n, 0.25, 0.06, dtype), reference.normal_fill_reference(n, 0.25, 0.06, dtype))
    assert torch.equal(fast.uniform_fill(n, -0.2, 0.19, dtype), reference.uniform_fill_reference(n, -0.2, 0.19, dtype))
    assert fast.state_dict()['normal'] == reference.state_dict()['normal']
    assert fast.normal() == reference.normal()  # same position, same cache


def test_state_round_trip_continues_the_stream_and_the_cache():
    g = Torch7Generator(3)
    g.words(700)
    g.normal()  # leaves a value cached
    state = g.state_dict()
    expected = [g.normal(), g.uniform(), g.random(1, 6)]
    restored = Torch7Generator.from_state(pickle.loads(pickle.dumps(state)))
    assert [restored.normal(), restored.uniform(), restored.random(1, 6)] == expected
    assert restored.initial_seed == 3


def test_seed_conversion_and_skip():
    assert seed_value(1.9) == 1 and seed_value(-1.9) == -1 and seed_value(2.0 ** 64) == -2 ** 63
    a, b = Torch7Generator(2 ** 32 + 5), Torch7Generator(5)
    a.skip(5000)
    b.words(5000)
    assert a.words(3).tolist() == b.words(3).tolist()


def test_torch7_state_bytes_are_read():
    _, t = golden.load_case('lua_run_mini_cifar10')
    g = Torch7Generator(5)
    g.skip(213482)  # what setup draws for gunn-mini
    state = read_torch7_state(t['rng/main_after_setup'])
    assert torch.equal(state['key'], g.state_dict()['key']) and state['pos'] == g.state_dict()['pos'] == 74
    assert state['initial_seed'] == 5 and state['normal'] is None


# ---- initial weights ----

def test_reset_classifier_draws_a_new_linear_as_the_lua():
    model = models.create(mini_opt())
    ours, lua = Torch7Generator(4), Torch7Generator(4)
    reset_classifier(model, 7, announce=False, generator=ours)
    s = 1 / 64 ** 0.5  # nn.Linear(64, 7):reset(), then linear.bias:zero()
    assert torch.equal(model[-1].weight, lua.uniform_fill(7 * 64, -s, s, torch.float32).view(7, 64))
    lua.skip(7)
    assert torch.equal(model[-1].bias, torch.zeros(7)) and ours.words(1) == lua.words(1)


# ---- loader streams ----

N = 13  # images of the split


def loader_options(**changes):
    return loader_opt(**{'nThreads': 2, 'batchSize': 3, **changes})


def cifar_like(split):
    return dataloader_cifar_like(split, N)


def lua_batches(opt, epochs):
    """The Lua's DataLoader with threads taking the batches in turn, written out directly: per pass a
    randperm of the main generator, each batch preprocessed on thread ((n-1) mod nThreads)'s generator."""
    dataset = cifar_like('train')
    preprocess = dataset.preprocess()
    main_generator = Torch7Generator(opt.manualSeed)
    threads = [Torch7Generator(opt.manualSeed + k) for k in range(1, max(opt.nThreads, 1) + 1)]
    batches = []
    for _ in range(epochs):
        perm = main_generator.randperm(N)
        for n, start in enumerate(range(0, N, opt.batchSize)):
            indices = perm[start:start + opt.batchSize]
            with transforms.draws_from(Torch7Draws(threads[n % len(threads)])):
                batches.append((indices, torch.stack([preprocess(dataset.get(i)['input']) for i in indices])))
    return batches, main_generator, threads


@pytest.mark.parametrize('nThreads', [0, 1, 2])
def test_loader_threads_draw_in_turn_and_their_states_come_back(nThreads):
    opt = loader_options(nThreads=nThreads)
    streams = RunStreams(opt)
    loader = DataLoader(cifar_like('train'), opt, 'train', streams=streams)
    ours = [sample for epoch in (1, 2) for _, sample in loader.run(epoch)]
    expected, main_generator, threads = lua_batches(opt, 2)
    assert len(ours) == len(expected) == 10
    for sample, (indices, inputs) in zip(ours, expected):
        assert sample['indices'].tolist() == indices and torch.equal(sample['input'], inputs)
    assert torch.equal(streams.main.state_dict()['key'], main_generator.state_dict()['key'])
    for state, thread in zip(streams.loaders['train'], threads):
        assert torch.equal(state['key'], thread.state_dict()['key']) and state['pos'] == thread.state_dict()['pos']


def test_manual_seed_0_seeds_the_main_stream_but_not_the_loader_threads():
    a, b = RunStreams(loader_options(manualSeed=0)), RunStreams(loader_options(manualSeed=0))
    assert a.main.words(5).tolist() == b.main.words(5).tolist() == Torch7Generator(0).words(5).tolist()
    assert a.loaders['train'][0]['initial_seed'] != b.loaders['train'][0]['initial_seed']  # from /dev/urandom


def test_streams_refuse_a_checkpoint_they_cannot_continue():
    streams = RunStreams(loader_options(nThreads=2))
    with pytest.raises(GunnError, match='was not written with -rng torch7.*resume it with -rng pytorch'):
        streams.load_state_dict(None, 'x/latest.pt')
    saved = RunStreams(loader_options(nThreads=1)).state_dict()
    with pytest.raises(GunnError, match='continues 1 loader thread stream.*resume it with -nThreads 1'):
        streams.load_state_dict(saved, 'x/latest.pt')


def test_torch7_refuses_several_processes(tmp_path, monkeypatch):
    with pytest.raises(OptionError, match='-rng torch7 runs in one process, not 2'):
        distributed.check(opts.parse(['-rng', 'torch7', '-nGPU', '2', '-device', 'cpu', '-save', str(tmp_path)]))
    opt = opts.parse(['-rng', 'torch7', '-save', str(tmp_path)])
    for name, value in (('RANK', '0'), ('WORLD_SIZE', '2'), ('LOCAL_RANK', '0')):  # as torchrun starts it
        monkeypatch.setenv(name, value)
    with pytest.raises(OptionError, match='-rng torch7 runs in one process, not 2'):
        distributed.check(opt)


# ---- resume ----

def write_tiny_cifar(folder, n_train=20, n_val=6):
    """A CIFAR-10 python-version folder of random images (the format of the real archive)."""
    rng = np.random.default_rng(3)
    folder = os.path.join(folder, 'cifar-10-batches-py')
    os.makedirs(folder)

    def write(name, obj):
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(obj, f, protocol=2)
    write('batches.meta', {'label_names': [f'class{k}' for k in range(10)]})
    for k, rows in enumerate(np.array_split(np.arange(n_train), 5), 1):
        write(f'data_batch_{k}', {'data': rng.integers(0, 256, (len(rows), 3072), dtype=np.uint8),
                                  'labels': [int(v) for v in rng.integers(0, 10, len(rows))]})
    write('test_batch', {'data': rng.integers(0, 256, (n_val, 3072), dtype=np.uint8),
                         'labels': [int(v) for v in rng.integers(0, 10, n_val)]})


class Interrupt(Exception):
    pass


def run_main(work, save, *extra):
    argv = ['-netType', 'gunn-mini', '-dataset', 'cifar10', '-batchSize', '4', '-nEpochs', '3', '-rng', 'torch7',
            '-nThreads', '2', '-manualSeed', '9', '-data', str(work / 'data'), '-gen', str(work / 'gen'),
            '-save', str(work / save), '-progress', 'lines', '-device', 'cpu', *extra]
    out, threads = io.StringIO(), torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out):
            main.main(argv)
    finally:
        torch.set_num_threads(threads)  # main.run sets -cpuThreads
    return parity_torch7.log_lines(out.getvalue()), torch.load(work / save / 'latest.pt', weights_only=True)


def test_resume_continues_every_torch7_stream_exactly(tmp_path, monkeypatch):
    write_tiny_cifar(tmp_path / 'data')
    full_log, full = run_main(tmp_path, 'full')

    save = checkpoints.save

    def save_then_stop(epoch, *args, **kwargs):
        save(epoch, *args, **kwargs)
        if epoch == 1:
            raise Interrupt
    monkeypatch.setattr(checkpoints, 'save', save_then_stop)
    with pytest.raises(Interrupt):
        run_main(tmp_path, 'resumed')
    monkeypatch.setattr(checkpoints, 'save', save)
    resumed_log, resumed = run_main(tmp_path, 'resumed', '-resume', str(tmp_path / 'resumed'))

    assert resumed['epoch'] == full['epoch'] == 3
    after_epoch_1 = full_log.index('=> Training epoch # 2')
    assert resumed_log == full_log[after_epoch_1:]
    for name, value in full['model'].items():
        assert torch.equal(resumed['model'][name], value), name
    for ours, theirs in [(resumed['rng']['main'], full['rng']['main'])] + [
            pair for split in ('train', 'val') for pair in zip(resumed['rng']['loaders'][split],
                                                               full['rng']['loaders'][split])]:
        assert torch.equal(ours['key'], theirs['key']) and ours['pos'] == theirs['pos']
    # the training threads' streams (seeded 10 and 11) moved on, so a resume that reseeded them would differ
    for k, state in enumerate(full['rng']['loaders']['train'], 10):
        assert not torch.equal(state['key'], Torch7Generator(k).state_dict()['key'])
