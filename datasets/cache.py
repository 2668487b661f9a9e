"""The cache of a data set's gen step (port of the gen/ files of datasets/init.lua).

Each data set keeps what its gen step produced in ``<opt.gen>/<opt.dataset>.pt`` (plain dicts, lists and
tensors; loaded with ``weights_only=True``): pixel tensors for the in-memory data sets, the list of image
files for ImageNet, and in every case ``classList`` (the label names) and ``basedir`` (the ``opt.data`` it
was built from; None when it does not depend on it). The file is built on first use and rebuilt when
``basedir`` differs from ``opt.data`` or, for a module with a ``changed(info, opt)`` check (ImageNet), when
the files under it changed.
"""
import os

from support import fileio


def path(opt):
    return os.path.join(opt.gen, opt.dataset + '.pt')


def load(module, opt):
    """The cache content of opt.dataset (whose module is ``module``), generated (or regenerated for a new
    opt.data) when needed."""
    file = path(opt)
    info = fileio.load(file, 'dataset cache', '; delete it to rebuild it') if os.path.isfile(file) else None
    stale = info is not None and _stale(module, info, opt)
    if stale:
        print(f' | rebuilding {file}: {stale}')
    if info is None or stale:
        # The Lua creates ./gen whatever -gen says; the folder that is written to is created here.
        os.makedirs(opt.gen, exist_ok=True)
        info = module.gen(opt)
        print(f' | saving the {opt.dataset} dataset index to {file}')
        fileio.save_atomic(info, file)
    return info


def _stale(module, info, opt):
    """Why a cache no longer fits opt.data (another -data, or, where the module tracks it, changed files), or None."""
    if info.get('basedir') is not None and info['basedir'] != opt.data:
        return f'it was built from -data {info["basedir"]}'
    changed = getattr(module, 'changed', None)
    return changed(info, opt) if changed else None
