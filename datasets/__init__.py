"""Dataset factory (port of datasets/init.lua).

Each dataset keeps what its gen step produced in ``<opt.gen>/<opt.dataset>.pt`` (plain dicts, lists and
tensors; loaded with ``weights_only=True``): pixel tensors for the in-memory datasets, the list of image
files for ImageNet, and in every case ``classList`` (the label names) and ``basedir`` (the ``opt.data`` it
was built from; None when it does not depend on it). The file is built on first use and rebuilt when
``basedir`` differs from ``opt.data`` or, for a module with a ``changed(info, opt)`` check (ImageNet), when
the files under it changed. Labels are 0-based (the Lua ones are 1-based).
"""
import os

from datasets import cifar, digits, imagenet
from support import fileio
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


def cache_path(opt):
    return os.path.join(opt.gen, opt.dataset + '.pt')


def load_info(opt):
    """The cache content of opt.dataset, generated (or regenerated for a new opt.data) when needed."""
    module = _module(opt.dataset)
    path = cache_path(opt)
    info = fileio.load(path, 'dataset cache', '; delete it to rebuild it') if os.path.isfile(path) else None
    stale = info is not None and _stale(module, info, opt)
    if stale:
        print(f' | rebuilding {path}: {stale}')
    if info is None or stale:
        # The Lua creates ./gen whatever -gen says; the folder that is written to is created here.
        os.makedirs(opt.gen, exist_ok=True)
        info = module.gen(opt)
        print(f' | saving the {opt.dataset} dataset index to {path}')
        fileio.save_atomic(info, path)
    return info


def _stale(module, info, opt):
    """Why a cache no longer fits opt.data (another -data, or, where the module tracks it, changed files), or None."""
    if info.get('basedir') is not None and info['basedir'] != opt.data:
        return f'it was built from -data {info["basedir"]}'
    changed = getattr(module, 'changed', None)
    return changed(info, opt) if changed else None


def create(opt, split):
    """The dataset object of split 'train' or 'val' ('val' is the test set for CIFAR)."""
    if split not in SPLITS:
        raise ValueError(f'invalid split: {split!r}')
    return _module(opt.dataset).Dataset(load_info(opt), opt, split)
