"""The data sets by -dataset name, and the factory (port of datasets/init.lua): each data set is a module
with gen(opt) (what datasets/cache.py keeps in gen/) and Dataset(info, opt, split). Labels are 0-based (the Lua
ones are 1-based).
"""
from datasets import cache, cifar, digits, imagenet
from support.errors import GunnError

# the -dataset names, their modules, and the classifier size the model files build for each (gunn-18.lua
# always builds 1000 outputs)
_MODULES = {'imagenet': imagenet, 'cifar10': cifar, 'cifar100': cifar, 'digits': digits}
N_CLASSES = {'imagenet': 1000, 'cifar10': 10, 'cifar100': 100, 'digits': 10}


SPLITS = ('train', 'val')


def _module(name):
    if name not in _MODULES:
        raise GunnError(f'unknown dataset {name!r} (choose from {", ".join(_MODULES)})')
    return _MODULES[name]


def create(opt, split):
    """The dataset object of split 'train' or 'val' ('val' is the test set for CIFAR)."""
    if split not in SPLITS:
        raise ValueError(f'invalid split: {split!r}')
    module = _module(opt.dataset)
    return module.Dataset(cache.load(module, opt), opt, split)
