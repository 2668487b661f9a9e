import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, cifar_like, loader_opt

import datasets.transforms as t
from dataloader import DataLoader
from support.errors import GunnError

N = 23


class TenCropImages:
    """ImageNet-style val data: small images whose pixels encode their index, ten-cropped."""
    classList = [str(i) for i in range(N)]

    def get(self, i):
        return {'input': torch.arange(3 * 6 * 7, dtype=torch.float32).view(3, 6, 7) + 1000 * i, 'target': i}

    def size(self):
        return N

    def preprocess(self):
        return t.TenCrop(4)


def epoch(loader, e):
    return [sample for _, sample in loader.run(e)]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x['input'], y['input']) and torch.equal(x['target'], y['target'])
                                    for x, y in zip(a, b))


def test_batches_cover_the_split_with_a_partial_last_batch():
    loader = DataLoader(cifar_like('val'), loader_opt(), 'val')
    assert (loader.size(), loader.batchSize, loader.nCrops) == (5, 5, 1)
    numbered = list(loader.run(1))
    assert [n for n, _ in numbered] == [1, 2, 3, 4, 5]
    batches = [sample for _, sample in numbered]
    assert [len(b['target']) for b in batches] == [5, 5, 5, 5, 3]
    assert batches[0]['input'].shape == (5, 3, 32, 32) and batches[0]['input'].dtype == torch.float32
    assert batches[0]['target'].dtype == torch.int64
    assert torch.cat([b['target'] for b in batches]).tolist() == list(range(N))  # val: in order


def test_ten_crop_layout_is_image_major():
    opt = loader_opt(tenCrop=True, batchSize=25)
    loader = DataLoader(TenCropImages(), opt, 'val')
    assert (loader.nCrops, loader.batchSize, loader.size()) == (10, 2, 12)
    n, sample = next(iter(loader.run(1)))
    assert sample['input'].shape == (20, 3, 4, 4) and sample['target'].tolist() == [0, 1]
    for i in range(2):
        assert torch.equal(sample['input'][10 * i:10 * i + 10], t.TenCrop(4)(TenCropImages().get(i)['input']))
    assert DataLoader(TenCropImages(), opt, 'train').nCrops == 1
    with pytest.raises(GunnError, match='batchSize 8'):
        DataLoader(TenCropImages(), loader_opt(tenCrop=True, batchSize=8), 'val')


def test_same_seed_same_batches_for_any_thread_count():
    single = DataLoader(cifar_like('train'), loader_opt(), 'train')
    workers = DataLoader(cifar_like('train'), loader_opt(nThreads=2), 'train')
    state = torch.random.get_rng_state()
    first = epoch(single, 1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone
    assert same(first, epoch(workers, 1))
    assert same(epoch(workers, 2), epoch(single, 2))  # persistent workers, next epoch
    other_seed = DataLoader(cifar_like('train'), loader_opt(manualSeed=6), 'train')
    assert not same(first, epoch(other_seed, 1))


def test_train_order_changes_every_epoch_and_survives_a_resume():
    loader = DataLoader(cifar_like('train'), loader_opt(), 'train')
    epochs = {e: epoch(loader, e) for e in (1, 2, 3)}
    orders = [torch.cat([b['target'] for b in epochs[e]]) for e in (1, 2, 3)]
    assert all(sorted(order.tolist()) == list(range(N)) for order in orders)
    assert len({tuple(order.tolist()) for order in orders}) == 3
    torch.manual_seed(123)  # a resumed run: fresh process state, straight to epoch 3
    resumed = DataLoader(cifar_like('train'), loader_opt(), 'train')
    assert same(epoch(resumed, 3), epochs[3])


@pytest.mark.parametrize('world_size', [3, 4])
def test_ranks_share_every_batch(world_size):
    whole = epoch(DataLoader(cifar_like('train'), loader_opt(), 'train'), 1)
    parts = [epoch(DataLoader(cifar_like('train'), loader_opt(), 'train', rank, world_size), 1)
             for rank in range(world_size)]
    assert all(len(p) == len(whole) for p in parts)
    for n, batch in enumerate(whole):
        pieces = [p[n] for p in parts if len(p[n]['target'])]
        # Contiguous chunks of the global batch, with the same augmentation as in a single process.
        assert torch.equal(torch.cat([p['target'] for p in pieces]), batch['target'])
        assert torch.equal(torch.cat([p['input'] for p in pieces]), batch['input'])
    empty = [p[-1] for p in parts if not len(p[-1]['target'])]
    assert len(empty) == max(0, world_size - 3) and all(e['input'].shape == (0, 3, 32, 32) for e in empty)

    seen = torch.cat([s['target'] for rank in range(world_size)
                      for s in epoch(DataLoader(cifar_like('val'), loader_opt(), 'val', rank, world_size), 1)])
    assert sorted(seen.tolist()) == list(range(N))  # validation: every image exactly once


def test_create_builds_both_loaders(tmp_path):
    opt = loader_opt(dataset='digits', gen=str(tmp_path), batchSize=100)
    train, val = DataLoader.create(opt)
    assert (train.size(), val.size()) == (15, 4)
    n, sample = next(iter(val.run(1)))
    assert sample['input'].shape == (100, 3, 32, 32)


class Unreadable(TenCropImages):
    def get(self, i):
        if i == 7:
            raise GunnError('cannot read image data/train/a/7.jpg: cannot identify image file')
        return super().get(i)


@pytest.mark.parametrize('threads', [0, 2])
def test_an_unreadable_image_is_a_one_line_error_from_workers_too(threads):
    loader = DataLoader(Unreadable(), loader_opt(nThreads=threads), 'val')
    with pytest.raises(GunnError) as e:
        epoch(loader, 1)
    assert str(e.value) == 'cannot read image data/train/a/7.jpg: cannot identify image file'


def test_close_stops_the_persistent_workers_and_a_later_epoch_starts_new_ones():
    """Left to interpreter exit, torch 2.11 with pinned memory waited 5 s per worker (main.py stops them)."""
    with DataLoader(cifar_like('train'), loader_opt(nThreads=2), 'train') as loader:
        first = epoch(loader, 1)
        workers = loader._loader._iterator._workers
        assert all(w.is_alive() for w in workers)  # persistent between epochs
        loader.close()
        assert not any(w.is_alive() for w in workers)
        assert same(epoch(loader, 1), first)
        workers = loader._loader._iterator._workers
    assert not any(w.is_alive() for w in workers)
    loader.close()  # again: nothing left to stop


def test_a_process_that_leaves_its_loaders_open_still_exits(tmp_path):
    """At exit, Python stops the loader workers with SIGTERM: a worker must end on it (it ignores Ctrl-C)."""
    code = ('from helpers import cifar_like, loader_opt; from dataloader import DataLoader; '
            "loader = DataLoader(cifar_like('train'), loader_opt(nThreads=2), 'train'); next(iter(loader.run(1)))")
    result = subprocess.run([sys.executable, '-c', code], cwd=os.path.dirname(os.path.abspath(__file__)),
                            env={**os.environ, 'PYTHONPATH': ROOT}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == '', result.stderr[-2000:]
