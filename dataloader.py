"""Batches of preprocessed samples (port of dataloader.lua) on top of torch.utils.data.DataLoader."""
import math

import numpy as np
import torch
import torch.utils.data

import datasets
from distributed import slice_sizes
from errors import GunnError

# Leading tags keep the two kinds of seeds apart (SeedSequence ignores trailing zeros).
_ORDER, _AUGMENT = 0, 1


def derive_seed(*keys):
    """A 64-bit seed mixed from integers; neighbouring keys give unrelated random streams."""
    return int(np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(1, np.uint64)[0])


def _worker_init(worker_id):
    torch.set_num_threads(1)  # as the Lua threads: the parallelism is across workers


class _Order(torch.utils.data.Sampler):
    """Yields one key per global batch: (epoch, n, this rank's indices, their position in the batch)."""

    def __init__(self, size, batchSize, shuffle, seed, rank, world_size):
        self.size, self.batchSize, self.shuffle, self.seed = size, batchSize, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = None

    def __len__(self):
        return math.ceil(self.size / self.batchSize)

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(_ORDER, self.seed, self.epoch))
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        for n, batch in enumerate(order.split(self.batchSize), 1):
            parts = batch.split(slice_sizes(len(batch), self.world_size))
            first = sum(len(part) for part in parts[:self.rank])
            yield self.epoch, n, parts[self.rank].tolist(), first, len(batch)


class _Batches(torch.utils.data.Dataset):
    """Loads and preprocesses the batch named by an _Order key (in a worker process when nThreads > 0)."""

    def __init__(self, dataset, seed):
        self.dataset, self.seed = dataset, seed
        self.preprocess = dataset.preprocess()

    def __getitem__(self, key):
        try:
            return self._batch(*key)
        except GunnError as e:
            # DataLoader re-raises a worker's exception with the worker's traceback in its message: pass
            # the one-line message on instead, and raise it in the training process (DataLoader.run)
            return {'error': str(e)}

    def _batch(self, epoch, n, indices, first, total):
        inputs, targets = [], []
        # The caller's generator state is restored afterwards; only the CPU generator is reseeded
        # (torch.manual_seed would also reseed CUDA in the main process).
        with torch.random.fork_rng(devices=[]):
            for j, i in enumerate(indices, first):
                torch.default_generator.manual_seed(derive_seed(_AUGMENT, self.seed, epoch, n, j))
                sample = self.dataset.get(i)
                inputs.append(self.preprocess(sample['input']))
                targets.append(sample['target'])
            if not inputs:
                # This rank's share of a last batch smaller than world_size: zero rows of the usual shape.
                shape = self.preprocess(self.dataset.get(0)['input']).shape[-3:]
                return {'input': torch.empty(0, *shape), 'target': torch.empty(0, dtype=torch.int64),
                        'batchTotal': total}
        batch = torch.stack(inputs)  # [b, C, H, W], or [b, nCrops, C, H, W] with TenCrop
        return {'input': batch.view(-1, *batch.shape[-3:]), 'target': torch.tensor(targets, dtype=torch.int64),
                'batchTotal': total}


class DataLoader:
    """Iterates over one split in batches of ``batchSize`` images (the last one partial).

    Order: the train split is shuffled every epoch with a permutation drawn from (opt.manualSeed, epoch),
    so epoch e has the same order in an interrupted-and-resumed run; the val split is read in order (the
    Lua shuffles it too, which changes nothing but the order of the batches).

    Augmentation: the Lua seeds each loader thread once with manualSeed + thread index, so its results
    depend on the thread count and on how the run was interrupted. Here the transforms of the j-th image of
    global batch n of epoch e run on the seed (opt.manualSeed, e, n, j): the same samples come out for any
    opt.nThreads, world_size or resume point (also for manualSeed 0, which the Lua leaves unseeded).

    Distributed: every rank walks the same global batches and takes slice ``rank`` of each, cut as
    DataParallelTable cut a batch over GPUs (``distributed.slice_sizes``), so each image is seen by exactly
    one rank and every rank yields ``size()`` batches. A rank whose part of the last batch is empty (fewer
    images than ranks) gets a sample with zero rows (input [0, C, H, W], target [0]), which the consumer has
    to allow for.
    """

    @staticmethod
    def create(opt, rank=0, world_size=1):
        """(train loader, val loader) of opt.dataset."""
        return tuple(DataLoader(datasets.create(opt, split), opt, split, rank, world_size)
                     for split in ('train', 'val'))

    def __init__(self, dataset, opt, split, rank=0, world_size=1):
        self.classList = dataset.classList
        self.nCrops = 10 if split == 'val' and opt.tenCrop else 1
        self.batchSize = opt.batchSize // self.nCrops
        if self.batchSize < 1:
            raise GunnError(f'batchSize {opt.batchSize} is smaller than the {self.nCrops} crops of one image')
        self._order = _Order(dataset.size(), self.batchSize, split == 'train', opt.manualSeed, rank, world_size)
        self._loader = torch.utils.data.DataLoader(
            _Batches(dataset, opt.manualSeed), batch_size=None, sampler=self._order,
            num_workers=opt.nThreads, persistent_workers=opt.nThreads > 0,
            pin_memory=torch.cuda.is_available(), worker_init_fn=_worker_init,
            # Its own generator: DataLoader would otherwise draw worker seeds from the global one.
            generator=torch.Generator())

    def size(self):
        """Number of batches per epoch."""
        return len(self._order)

    def numImages(self):
        """Images in the split (over all ranks)."""
        return self._order.size

    def run(self, epoch):
        """Yields (n, sample) for n = 1..size(); sample['input'] is float32 [b * nCrops, C, H, W] with the
        crops of image i in rows nCrops*i .. nCrops*i + nCrops-1, sample['target'] int64 [b], 0-based, and
        sample['batchTotal'] the number of images in the global batch (all ranks together)."""
        self._order.epoch = epoch
        for n, sample in enumerate(self._loader, 1):
            if 'error' in sample:
                raise GunnError(sample['error'])
            yield n, sample


class FixedBatches:
    """Batches already in memory, behind the DataLoader interface that Trainer uses (parity checks, tests).

    Each batch is a dict with 'input', 'target' (0-based) and 'batchTotal' (the global batch size)."""
    nCrops = 1

    def __init__(self, batches):
        self.batches = batches

    def size(self):
        return len(self.batches)

    def run(self, epoch):
        yield from enumerate(self.batches, 1)
