"""CIFAR-10 and CIFAR-100 (port of datasets/cifar10-gen.lua, cifar10.lua, cifar100-gen.lua, cifar100.lua).

The Lua downloads Torch-format copies (cifar-10-torch.tar.gz, cifar-100-binary.tar.gz). This port reads
the standard python-version archive (or its extracted folder) from opt.data when it holds one, and
otherwise has torchvision download it into opt.gen. The cache holds uint8 data [N, 3, 32, 32] and int64
labels for 'train' and 'val' (the test set). Labels are 0-based as in the archive (the Lua adds 1);
CIFAR-100 uses the fine labels, as the Lua.
"""
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from datasets import transforms as t
from support.errors import GunnError


@dataclass(frozen=True)
class Variant:
    title: str
    archive: str  # the python-version archive ...
    folder: str  # ... and the folder it extracts to
    train_files: tuple
    val_files: tuple
    meta_file: str
    names_key: str
    labels_key: str
    torchvision_class: str
    meanstd: dict  # of the whole training set, 0..255 scale


VARIANTS = {
    'cifar10': Variant('CIFAR-10', 'cifar-10-python.tar.gz', 'cifar-10-batches-py',
                       tuple(f'data_batch_{i}' for i in range(1, 6)), ('test_batch',),
                       'batches.meta', 'label_names', 'labels', 'CIFAR10',
                       {'mean': (125.3, 123.0, 113.9), 'std': (63.0, 62.1, 66.7)}),
    'cifar100': Variant('CIFAR-100', 'cifar-100-python.tar.gz', 'cifar-100-python', ('train',), ('test',),
                        'meta', 'fine_label_names', 'fine_labels', 'CIFAR100',
                        {'mean': (129.3, 124.1, 112.4), 'std': (68.2, 65.4, 70.4)}),
}


class _BatchUnpickler(pickle.Unpickler):
    """The batch files are pickles, which can run arbitrary code: only what a numpy array needs is let in."""

    ALLOWED = {(module, name) for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
               for name in ('_reconstruct', 'scalar')} | {('numpy', 'ndarray'), ('numpy', 'dtype'),
                                                          ('_codecs', 'encode')}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f'unexpected object {module}.{name}')
        return super().find_class(module, name)


def _unpickle(f, where):
    try:
        content = _BatchUnpickler(f, encoding='latin1').load()  # latin1: the files come from Python 2
    except Exception as e:  # a damaged pickle or gzip stream can fail with almost any exception type
        raise GunnError(f'cannot read the CIFAR file {where}: {e}') from None
    if not isinstance(content, dict):
        raise GunnError(f'{where} is not a CIFAR batch file')
    return {(k.decode('latin1') if isinstance(k, bytes) else k): v for k, v in content.items()}


def _find_copy(variant, data):
    """opt.data as the archive or the extracted folder, or a folder holding either; None if absent."""
    if not data:
        return None
    for path in (data, os.path.join(data, variant.folder), os.path.join(data, variant.archive)):
        if os.path.isfile(path) or os.path.isfile(os.path.join(path, variant.meta_file)):
            return path
    return None


def _download(variant, opt):
    import torchvision.datasets  # only needed without a local copy

    print(f'=> Downloading {variant.title} into {opt.gen} (no -data given)')
    try:
        getattr(torchvision.datasets, variant.torchvision_class)(root=opt.gen, download=True)
    except (OSError, RuntimeError) as e:
        raise GunnError(f'downloading {variant.title} into {opt.gen} failed ({e}); '
                        'give a local copy with -data') from None
    return os.path.join(opt.gen, variant.folder)


def _combine(variant, read, files, n_classes):
    data, labels = [], []
    for name in files:
        batch, where = read(name)
        x, y = batch.get('data'), batch.get(variant.labels_key)
        if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == 3072
                and y is not None and len(y) == len(x)):
            raise GunnError(f'{where} is not a {variant.title} batch (uint8 data [N, 3072] and N '
                            f'{variant.labels_key})')
        y = np.asarray(y, dtype=np.int64)
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise GunnError(f'{where}: labels outside 0..{n_classes - 1}')
        data.append(x)
        labels.append(y)
    return {'data': torch.from_numpy(np.concatenate(data)).view(-1, 3, 32, 32),
            'labels': torch.from_numpy(np.concatenate(labels))}


def _convert(variant, opt, read):
    meta, where = read(variant.meta_file)
    names = meta.get(variant.names_key)
    if names is None:
        raise GunnError(f'{where} has no {variant.names_key}')
    names = [n.decode('latin1') if isinstance(n, bytes) else str(n) for n in names]
    return {'basedir': opt.data, 'classList': names,
            'train': _combine(variant, read, variant.train_files, len(names)),
            'val': _combine(variant, read, variant.val_files, len(names))}


def gen(opt):
    variant = VARIANTS[opt.dataset]
    path = _find_copy(variant, opt.data)
    if path is None and opt.data:  # a folder was named: never replace it by a download
        raise GunnError(f'no {variant.title} copy at -data {opt.data} (expected {variant.archive}, '
                        f'its folder {variant.folder}, or a folder holding either)')
    path = path or _download(variant, opt)
    print(f'=> Reading {variant.title} from {path}')
    if os.path.isdir(path):
        def read(name):
            where = os.path.join(path, name)
            try:
                with open(where, 'rb') as f:
                    return _unpickle(f, where), where
            except OSError as e:
                raise GunnError(f'cannot read the CIFAR file {where}: {e.strerror}') from None
        return _convert(variant, opt, read)

    try:
        tar = tarfile.open(path)
    except tarfile.ReadError:
        raise GunnError(f'{path} is not a {variant.title} archive (-data takes {variant.archive}, its folder '
                        f'{variant.folder}, or a folder holding either)') from None
    except OSError as e:
        raise GunnError(f'cannot read the {variant.title} archive {path} ({e.strerror or e})') from None
    try:
        with tar:
            def read(name):
                where = f'{path}:{variant.folder}/{name}'
                try:
                    f = tar.extractfile(f'{variant.folder}/{name}')
                except KeyError:
                    f = None
                if f is None:
                    raise GunnError(f'{path} has no file {variant.folder}/{name}')
                return _unpickle(f, where), where
            return _convert(variant, opt, read)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # a damaged or truncated archive
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise GunnError(f'cannot read the {variant.title} archive {path}: damaged or truncated ({reason})') from None


class CifarDataset:
    """Images held in memory as uint8 [N, 3, 32, 32]; get(i) takes a 0-based index."""

    def __init__(self, info, split, meanstd):
        self.data = info[split]['data']
        self.labels = info[split]['labels']
        self.classList = info['classList']
        self.split = split
        self.meanstd = meanstd

    def get(self, i):
        # Float 0..255, not 0..1: the mean/std constants are on that scale.
        return {'input': self.data[i].float(), 'target': int(self.labels[i])}

    def size(self):
        return self.data.shape[0]

    def augmentation(self):
        """Training transforms applied after the normalisation."""
        return [t.HorizontalFlip(0.5), t.RandomCrop(32, 4), t.Jigsaw()]

    def preprocess(self):
        normalize = t.ColorNormalize(self.meanstd)
        if self.split == 'train':
            return t.Compose([normalize, *self.augmentation()])
        return normalize


def Dataset(info, opt, split):
    return CifarDataset(info, split, VARIANTS[opt.dataset].meanstd)
