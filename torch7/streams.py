"""The random streams of a main.lua run, for -rng torch7 (see README, "Same seed, same experiment").

* The main generator, seeded with -manualSeed as main.lua seeds it: it draws the initial weights
  (models/torch7_init.py), then at the start of every pass over a split a permutation of that split
  (dataloader.py): the training set, then the validation set, every epoch.
* One generator per loader thread and split (the Lua's train and val DataLoaders each own a pool of
  -nThreads threads): thread k (1-based) is seeded with manualSeed + k, or from /dev/urandom when
  -manualSeed is 0 (the Lua then leaves the threads' start-up seeds), and draws the augmentations of the
  batches it loads, continuing across epochs. Batch n of every pass goes to thread ((n - 1) mod nThreads) + 1;
  -nThreads 0 loads in the training process with the one stream of thread 1.

The loader threads run in DataLoader worker processes; each batch brings back its thread's state after it,
so the training process always knows every stream and a checkpoint's 'rng' entry continues them exactly.
"""
from support.errors import GunnError
from torch7.generator import Torch7Generator

SPLITS = ('train', 'val')


class RunStreams:
    def __init__(self, opt):
        self.main = Torch7Generator(opt.manualSeed)
        threads = max(opt.nThreads, 1)

        def thread_state(k):  # manualSeed + k in Lua numbers (doubles); left unseeded when manualSeed is 0
            return Torch7Generator(float(opt.manualSeed) + k if opt.manualSeed != 0 else None).state_dict()
        self.loaders = {split: [thread_state(k) for k in range(1, threads + 1)] for split in SPLITS}

    def state_dict(self):
        return {'generator': 'torch7', 'main': self.main.state_dict(),
                'loaders': {split: list(states) for split, states in self.loaders.items()}}

    def load_state_dict(self, state, source):
        """Continue the streams saved in a checkpoint (``source`` names it in errors)."""
        if not isinstance(state, dict) or state.get('generator') != 'torch7':
            raise GunnError(f'{source} was not written with -rng torch7, so its Torch7 random streams are unknown; '
                            'resume it with -rng pytorch')
        saved = len(state['loaders']['train'])
        if saved != len(self.loaders['train']):
            raise GunnError(f'{source} continues {saved} loader thread stream(s) per split; resume it with '
                            f'-nThreads {saved}')
        self.main.load_state_dict(state['main'])
        self.loaders = {split: list(state['loaders'][split]) for split in SPLITS}
