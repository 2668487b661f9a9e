"""Random CIFAR-10/100 data for a real `th main.lua` run, in the CIFAR python-version layout (numpy only).

    python make_cifar_data.py OUTDIR --dataset cifar10 --train 76 --val 20 --seed 2024

Images are uniform random uint8 and labels uniform random classes, drawn with numpy's RandomState(seed)
in this order: train images, train labels, val images, val labels. Writes OUTDIR/raw/{train,val}_{images,
labels}.bin (uint8 NCHW images; labels as 1-based uint8, what GUNN's cifar*-gen.lua stores) and the python
files under OUTDIR/<cifar-10-batches-py | cifar-100-python>/, pickled as the Python-2 originals are
(protocol 2, byte strings as Python-2 str).
"""
import argparse
import io
import os
import pickle
import struct

import numpy as np

CIFAR10_NAMES = [b'airplane', b'automobile', b'bird', b'cat', b'deer', b'dog', b'frog', b'horse', b'ship',
                 b'truck']


class Py2Pickler(pickle._Pickler):
    """Protocol 2 with bytes written as Python-2 str (SHORT_BINSTRING/BINSTRING) and numpy's reconstructor
    under its numpy 1 name, as the CIFAR files written by Python 2 have them."""
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack('<i', n)
        self.write(head + obj)
        self.memoize(obj)
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if getattr(obj, '__module__', '') == 'numpy._core.multiarray':
            self.write(pickle.GLOBAL + b'numpy.core.multiarray\n' + (name or obj.__name__).encode() + b'\n')
            self.memoize(obj)
            return
        super().save_global(obj, name)
    dispatch[type(len)] = save_global


def dumps(obj):
    f = io.BytesIO()
    Py2Pickler(f, protocol=2).dump(obj)
    return f.getvalue()


def split_sizes(n, parts=5):
    """Train images over data_batch_1..5 in order, the first batches one larger when n % 5 != 0."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('out')
    p.add_argument('--dataset', default='cifar10', choices=('cifar10', 'cifar100'))
    p.add_argument('--train', type=int, default=76)
    p.add_argument('--val', type=int, default=20)
    p.add_argument('--seed', type=int, default=2024)
    a = p.parse_args()
    classes = 10 if a.dataset == 'cifar10' else 100
    rs = np.random.RandomState(a.seed)
    train = rs.randint(0, 256, (a.train, 3, 32, 32)).astype(np.uint8)
    train_labels = (rs.randint(0, classes, a.train) + 1).astype(np.uint8)
    val = rs.randint(0, 256, (a.val, 3, 32, 32)).astype(np.uint8)
    val_labels = (rs.randint(0, classes, a.val) + 1).astype(np.uint8)
    os.makedirs(os.path.join(a.out, 'raw'), exist_ok=True)
    for name, arr in (('train_images', train), ('train_labels', train_labels), ('val_images', val),
                      ('val_labels', val_labels)):
        arr.tofile(os.path.join(a.out, 'raw', name + '.bin'))

    def names(split, lo, hi):
        return [b'random_%s_%05d.png' % (split.encode(), i) for i in range(lo + 1, hi + 1)]
    if a.dataset == 'cifar10':
        folder = os.path.join(a.out, 'cifar-10-batches-py')
        os.makedirs(folder, exist_ok=True)
        files = {}
        start = 0
        for i, n in enumerate(split_sizes(a.train), 1):
            files[f'data_batch_{i}'] = {
                b'batch_label': b'training batch %d of 5' % i,
                b'labels': [int(v) - 1 for v in train_labels[start:start + n]],
                b'data': train[start:start + n].reshape(n, 3072).copy(),
                b'filenames': names('train', start, start + n)}
            start += n
        files['test_batch'] = {b'batch_label': b'testing batch 1 of 1',
                               b'labels': [int(v) - 1 for v in val_labels],
                               b'data': val.reshape(a.val, 3072).copy(), b'filenames': names('val', 0, a.val)}
        files['batches.meta'] = {b'num_cases_per_batch': split_sizes(a.train)[0], b'label_names': CIFAR10_NAMES,
                                 b'num_vis': 3072}
    else:
        folder = os.path.join(a.out, 'cifar-100-python')
        os.makedirs(folder, exist_ok=True)
        files = {}
        for split, imgs, labels in (('train', train, train_labels), ('test', val, val_labels)):
            files[split] = {b'filenames': names('train' if split == 'train' else 'val', 0, len(imgs)),
                            b'batch_label': b'training batch 1 of 1' if split == 'train' else b'testing batch 1 of 1',
                            b'fine_labels': [int(v) - 1 for v in labels],
                            b'coarse_labels': [(int(v) - 1) // 5 for v in labels],
                            b'data': imgs.reshape(len(imgs), 3072).copy()}
        files['meta'] = {b'fine_label_names': [b'class_%02d' % i for i in range(100)],
                         b'coarse_label_names': [b'superclass_%02d' % i for i in range(20)]}
    for name, obj in files.items():
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(dumps(obj))
    print(os.path.basename(folder))


if __name__ == '__main__':
    main()
