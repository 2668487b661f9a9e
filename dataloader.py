"""Batches of preprocessed samples (port of dataloader.lua) on top of torch.utils.data.DataLoader."""
import math

import numpy as np
import torch
import torch.utils.data

import datasets
from datasets import transforms
from support import command
from support.distributed import uses_cuda
from support.errors import GunnError
from support.slices import slice_sizes
from torch7.generator import Torch7Draws, Torch7Generator

# Leading tags keep the two kinds of seeds apart (SeedSequence ignores trailing zeros).
_ORDER, _AUGMENT = 0, 1


def derive_seed(*keys):
    """A 64-bit seed mixed from integers; neighbouring keys give unrelated random streams."""
    return int(np.random.SeedSequence([k % 2**64 for k in keys]).generate_state(1, np.uint64)[0])


def _worker_init(worker_id):
    torch.set_num_threads(1)  # as the Lua threads: the parallelism is across workers
    command.ignore_interrupts()  # the training process stops the workers


class _Order(torch.utils.data.Sampler):
    """Yields one key per global batch: (epoch, n, this rank's indices, their position in the batch, the
    global batch size, the loader thread of the batch (-rng torch7)).

    ``permutation(epoch)`` gives the pass's order of the split (a tensor of 0-based indices); it is called
    in the training process when the pass starts, as the Lua's DataLoader:run draws its torch.randperm."""

    def __init__(self, size, batchSize, permutation, rank, world_size, threads):
        self.size, self.batchSize, self.permutation = size, batchSize, permutation
        self.rank, self.world_size, self.threads = rank, world_size, threads
        self.epoch = None

    def __len__(self):
        return math.ceil(self.size / self.batchSize)

    def __iter__(self):
        order = self.permutation(self.epoch)
        for n, batch in enumerate(order.split(self.batchSize), 1):
            parts = batch.split(slice_sizes(len(batch), self.world_size))
            first = sum(len(part) for part in parts[:self.rank])
            yield self.epoch, n, parts[self.rank].tolist(), first, len(batch), (n - 1) % self.threads


class _SeededShuffle:
    """-rng pytorch: a new permutation per epoch, drawn from (-manualSeed, epoch)."""

    def __init__(self, size, seed):
        self.size, self.seed = size, seed

    def __call__(self, epoch):
        generator = torch.Generator().manual_seed(derive_seed(_ORDER, self.seed, epoch))
        return torch.randperm(self.size, generator=generator)


class _InOrder:
    def __init__(self, size):
        self.size = size

    def __call__(self, epoch):
        return torch.arange(self.size)


class _Torch7Shuffle:
    """-rng torch7: torch.randperm of the main Torch7 generator at every pass, train and val alike."""

    def __init__(self, size, generator):
        self.size, self.generator = size, generator

    def __call__(self, epoch):
        return torch.tensor(self.generator.randperm(self.size), dtype=torch.int64)


class _Batches(torch.utils.data.Dataset):
    """Loads and preprocesses the batch named by an _Order key (in a worker process when nThreads > 0).

    ``threads``: None for -rng pytorch (per-image seeds); for -rng torch7 the starting states of the loader
    threads' Torch7 generators, one per thread. DataLoader worker k runs thread k (DataLoader hands the
    keys to its workers in turn, starting from worker 0 at every pass); each batch carries its thread's
    generator state after it."""

    def __init__(self, dataset, seed, threads=None):
        self.dataset, self.seed, self.threads = dataset, seed, threads
        self.preprocess = dataset.preprocess()
        self._generators = {}  # the threads' live generators, in the process that runs them

    def __getitem__(self, key):
        try:
            return self._batch(*key)
        except GunnError as e:
            # DataLoader re-raises a worker's exception with the worker's traceback in its message: pass
            # the one-line message on instead, and raise it in the training process (DataLoader.run)
            return {'error': str(e)}

    def _batch(self, epoch, n, indices, first, total, thread):
        if self.threads is None:
            # The caller's generator state is restored afterwards; only the CPU generator is reseeded
            # (torch.manual_seed would also reseed CUDA in the main process).
            with torch.random.fork_rng(devices=[]):
                seeds = [derive_seed(_AUGMENT, self.seed, epoch, n, j) for j in range(first, first + len(indices))]
                sample = self._load(indices, seeds)
        else:
            generator = self._thread_generator(thread)
            with transforms.draws_from(Torch7Draws(generator)):
                sample = self._load(indices)
            sample['rng'] = (thread, generator.state_dict())
        sample['batchTotal'] = total
        return sample

    def _thread_generator(self, thread):
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.id != thread:
            raise GunnError(f'internal error: the batch of loader thread {thread + 1} reached DataLoader worker '
                            f'{worker.id}; -rng torch7 relies on DataLoader handing batches to its workers in turn')
        if thread not in self._generators:
            self._generators[thread] = Torch7Generator.from_state(self.threads[thread])
        return self._generators[thread]

    def _load(self, indices, seeds=None):
        """{'input', 'target', 'indices'} of the batch; ``seeds``: one torch seed per image, set before its
        transforms run."""
        inputs, targets = [], []
        for j, i in enumerate(indices):
            if seeds is not None:
                torch.default_generator.manual_seed(seeds[j])
            sample = self.dataset.get(i)
            inputs.append(self.preprocess(sample['input']))
            targets.append(sample['target'])
        if not inputs:
            # This rank's share of a last batch smaller than world_size: zero rows of the usual shape.
            shape = self.preprocess(self.dataset.get(0)['input']).shape[-3:]
            return {'input': torch.empty(0, *shape), 'target': torch.empty(0, dtype=torch.int64),
                    'indices': torch.empty(0, dtype=torch.int64)}
        batch = torch.stack(inputs)  # [b, C, H, W], or [b, nCrops, C, H, W] with TenCrop
        return {'input': batch.view(-1, *batch.shape[-3:]), 'target': torch.tensor(targets, dtype=torch.int64),
                'indices': torch.tensor(indices, dtype=torch.int64)}


class _Closes:
    """``with loader:`` closes it at the end of the block."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DataLoader(_Closes):
    """Iterates over one split in batches of ``batchSize`` images (the last one partial).

    Order: the train split is shuffled every epoch with a permutation drawn from (opt.manualSeed, epoch),
    so epoch e has the same order in an interrupted-and-resumed run; the val split is read in order (the
    Lua shuffles it too, which changes nothing but the order of the batches).

    Augmentation: the Lua seeds each loader thread once with manualSeed + thread index, so its results
    depend on the thread count and on how the run was interrupted. Here the transforms of the j-th image of
    global batch n of epoch e run on the seed (opt.manualSeed, e, n, j): the same samples come out for any
    opt.nThreads, world_size or resume point (also for manualSeed 0, which the Lua leaves unseeded).

    With ``streams`` (a torch7.streams.RunStreams, -rng torch7) both splits are drawn as the Lua draws them
    instead: a permutation from the main Torch7 generator at every pass, and each batch augmented by its
    loader thread's Torch7 generator (see torch7/streams.py). ``run`` keeps the threads' states in ``streams``.

    Distributed: every rank walks the same global batches and takes slice ``rank`` of each, cut as
    DataParallelTable cut a batch over GPUs (``slices.slice_sizes``), so each image is seen by exactly
    one rank and every rank yields ``size()`` batches. A rank whose part of the last batch is empty (fewer
    images than ranks) gets a sample with zero rows (input [0, C, H, W], target [0]), which the consumer has
    to allow for.
    """

    @staticmethod
    def create(opt, rank=0, world_size=1, streams=None):
        """(train loader, val loader) of opt.dataset."""
        return tuple(DataLoader(datasets.create(opt, split), opt, split, rank, world_size, streams)
                     for split in ('train', 'val'))

    def __init__(self, dataset, opt, split, rank=0, world_size=1, streams=None):
        self.classList = dataset.classList
        self.nCrops = 10 if split == 'val' and opt.tenCrop else 1
        self.batchSize = opt.batchSize // self.nCrops
        if self.batchSize < 1:
            raise GunnError(f'batchSize {opt.batchSize} is smaller than the {self.nCrops} crops of one image')
        size = dataset.size()
        self._streams, self._split = streams, split
        if streams is not None:  # -rng torch7
            permutation, threads = _Torch7Shuffle(size, streams.main), streams.loaders[split]
        elif split == 'train':
            permutation, threads = _SeededShuffle(size, opt.manualSeed), None
        else:
            permutation, threads = _InOrder(size), None
        self._order = _Order(size, self.batchSize, permutation, rank, world_size, len(threads) if threads else 1)
        self._loader = torch.utils.data.DataLoader(
            _Batches(dataset, opt.manualSeed, threads), batch_size=None, sampler=self._order,
            num_workers=opt.nThreads, persistent_workers=opt.nThreads > 0,
            pin_memory=uses_cuda(opt), worker_init_fn=_worker_init,
            # Its own generator: DataLoader would otherwise draw worker seeds from the global one.
            generator=torch.Generator())

    def close(self):
        """Stops the worker processes now. Left to interpreter exit, a torch that pins memory with persistent
        workers (2.11 on an H100, for one) waits 5 s for each worker, which was never told to stop (pytorch#81794)."""
        iterator, self._loader._iterator = self._loader._iterator, None
        if iterator is not None:
            iterator._shutdown_workers()

    def size(self):
        """Number of batches per epoch."""
        return len(self._order)

    def numImages(self):
        """Images in the split (over all ranks)."""
        return self._order.size

    def run(self, epoch):
        """Yields (n, sample) for n = 1..size(); sample['input'] is float32 [b * nCrops, C, H, W] with the
        crops of image i in rows nCrops*i .. nCrops*i + nCrops-1, sample['target'] int64 [b], 0-based,
        sample['indices'] the images' 0-based items of the split, and sample['batchTotal'] the number of images
        in the global batch (all ranks together)."""
        self._order.epoch = epoch
        for n, sample in enumerate(self._loader, 1):
            if 'error' in sample:
                raise GunnError(sample['error'])
            if 'rng' in sample:
                thread, state = sample.pop('rng')
                self._streams.loaders[self._split][thread] = state
            yield n, sample


class FixedBatches(_Closes):
    """Batches already in memory, behind the DataLoader interface that Trainer uses (parity checks, tests).

    Each batch is a dict with 'input', 'target' (0-based) and 'batchTotal' (the global batch size)."""
    nCrops = 1

    def __init__(self, batches):
        self.batches = batches

    def size(self):
        return len(self.batches)

    def run(self, epoch):
        yield from enumerate(self.batches, 1)

    def close(self):
        pass  # no workers
