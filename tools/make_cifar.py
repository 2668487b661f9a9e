"""Writes a synthetic CIFAR-10 in the real python-version file format (for speed runs and GPU tests):

  python tools/make_cifar.py DIR [-train 50000] [-test 10000]

DIR/cifar-10-batches-py/ gets batches.meta, data_batch_1..5 and test_batch: pickled dicts (protocol 2, as the
Python 2 originals) with uint8 'data' [N, 3072], 'labels', 'batch_label' and 'filenames'. Pixels and labels
are uniform random numbers (seeded), so nothing can be learned from them; main.py reads the folder with
-dataset cifar10 -data DIR.
"""
import argparse
import os
import pickle

import numpy as np

FOLDER = 'cifar-10-batches-py'
NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


def _dump(path, obj):
    # the real files reference numpy.core (numpy 1.x); numpy 2 writes numpy._core: both read back everywhere
    with open(path, 'wb') as f:
        f.write(pickle.dumps(obj, protocol=2).replace(b'numpy._core.multiarray', b'numpy.core.multiarray'))


def write(root, n_train=50000, n_test=10000, seed=0):
    """Returns the folder written (DIR/cifar-10-batches-py)."""
    folder = os.path.join(root, FOLDER)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    _dump(os.path.join(folder, 'batches.meta'), {'label_names': NAMES, 'num_cases_per_batch': -(-n_train // 5),
                                                 'num_vis': 3072})
    parts = [(f'data_batch_{k}', f'training batch {k} of 5', rows)
             for k, rows in enumerate(np.array_split(np.arange(n_train), 5), 1)]
    parts.append(('test_batch', 'testing batch 1 of 1', np.arange(n_test)))
    for name, label, rows in parts:
        _dump(os.path.join(folder, name), {
            'batch_label': label, 'data': rng.integers(0, 256, (len(rows), 3072), dtype=np.uint8),
            'labels': [int(k) for k in rng.integers(0, 10, len(rows))],
            'filenames': [f'synthetic_{name}_{i}.png' for i in range(len(rows))]})
    return folder


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('dir')
    p.add_argument('-train', type=int, default=50000)
    p.add_argument('-test', type=int, default=10000)
    args = p.parse_args()
    print(f'wrote {write(args.dir, args.train, args.test)} ({args.train} training, {args.test} test images)')


if __name__ == '__main__':
    main()
