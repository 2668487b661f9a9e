"""Data-loading speed per loader worker, now, without a C compiler, and as it was before, side by side:

    python -m benchmarks.loader [-images 48] [-rounds 10]

Writes small data sets to a temporary folder (ImageNet-layout JPEGs of typical ImageNet sizes, and a
CIFAR-10 copy in the python-version format), then times what one loader worker does per image, get(i)
then preprocess(), through the real dataset classes, for the CIFAR-10 and ImageNet train and val
pipelines. Each implementation runs in a worker process of its own, as in a DataLoader (one thread, only
its own allocations and caches), and they take turns, round after round, so that all see the same load
on a shared machine. The figures are CPU seconds of the worker (user + system), the best of the rounds:
they vary less than wall time. Three implementations, on the same images and the same random draws:
"now"; "without C", the current loader where no C compiler could build datasets/bicubic.c (the resize's
loops run as torch operations); and "previous", the same code with Pillow decoding every file into a
contiguous image, and the reference image.scale (datasets/bicubic.py) of a copy of its input (the crop
that RandomSizedCrop used to copy).
"""
import argparse
import contextlib
import multiprocessing
import os
import pickle
import platform
import sys
import tempfile
import time
from unittest import mock

import numpy as np
import torch
from PIL import Image

import datasets
import opts
from datasets import bicubic, decode, imagenet, transforms

# (width, height) of ImageNet-like photos, taken in turn
SIZES = [(500, 375), (375, 500), (500, 333), (333, 500), (500, 500), (400, 300), (640, 480), (500, 400)]


def photo(width, height, seed):
    """A smooth picture with sensor-like noise, so that the JPEG has a typical size."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x / 2 + y / 3 + 40 * seed) % 256, 128 + 100 * np.sin(x / 37 + y / 53 + seed),
                    255 * (x + y) / (width + height)], axis=-1)
    return Image.fromarray((rgb + rng.normal(0, 10, rgb.shape)).clip(0, 255).astype(np.uint8))


def write_imagenet(root, n_images):
    for split in ('train', 'val'):
        for i in range(n_images):
            folder = os.path.join(root, split, f'class{i % 4}')
            os.makedirs(folder, exist_ok=True)
            photo(*SIZES[i % len(SIZES)], seed=i).save(os.path.join(folder, f'{i}.JPEG'), quality=90)


def write_cifar10(root, n_images):
    rng = np.random.default_rng(0)
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(folder)
    batches = [f'data_batch_{k}' for k in range(1, 6)] + ['test_batch']
    for name in batches:
        batch = {'data': rng.integers(0, 256, (n_images, 3072), dtype=np.uint8),
                 'labels': rng.integers(0, 10, n_images).tolist()}
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(batch, f, protocol=2)
    with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
        pickle.dump({'label_names': [f'class{k}' for k in range(10)]}, f, protocol=2)


def load_with_pillow(path):
    """What the loader did before: every file through Pillow, into a contiguous float image."""
    with mock.patch.object(decode, 'TORCHCODEC_FORMATS', ()):
        return decode.load_image(path).contiguous()


def scale_a_copy(img, width, height, box=None):
    """The reference resize of a contiguous copy, as RandomSizedCrop cropped one before."""
    return bicubic.scale_reference(img.contiguous(), width, height, box)


@contextlib.contextmanager
def previous_implementation():
    """Pillow decoding and the reference bicubic resize, as the loader was before."""
    with mock.patch.object(imagenet, 'load_image', load_with_pillow), \
            mock.patch.object(transforms, 'scale', scale_a_copy):
        yield


@contextlib.contextmanager
def without_c():
    """The current loader on a machine without a C compiler: the resize's loops as torch operations."""
    with mock.patch.object(bicubic, 'native', lambda: (None, 'benchmark')):
        yield


# the implementations compared, each in a worker process of its own
IMPLEMENTATIONS = {'previous': previous_implementation, 'without C': without_c, 'now': contextlib.nullcontext}


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cpu_seconds_per_image(dataset, n_images):
    preprocess = dataset.preprocess()
    torch.manual_seed(0)  # the same crops, flips and jitter in both implementations
    start = time.process_time()
    for i in range(n_images):
        preprocess(dataset.get(i % dataset.size())['input'])
    return (time.process_time() - start) / n_images


def worker(connection, pipelines, implementation):
    """A loader worker: runs the pipeline named by each message and answers with its CPU seconds per image."""
    with IMPLEMENTATIONS[implementation]():
        for name in iter(connection.recv, None):
            dataset, n_images = pipelines[name]
            connection.send(cpu_seconds_per_image(dataset, n_images))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-images', type=int, default=48, help='images per ImageNet split (CIFAR: 20x more)')
    parser.add_argument('-rounds', type=int, default=10, help='rounds; each figure is the best of them')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker
    with tempfile.TemporaryDirectory() as root:
        write_imagenet(os.path.join(root, 'imagenet'), args.images)
        write_cifar10(os.path.join(root, 'cifar'), 4 * args.images)
        pipelines = {}
        for dataset, data, n_images in (('cifar10', 'cifar', 20 * args.images),
                                        ('imagenet', 'imagenet', args.images)):
            opt = opts.defaults(dataset=dataset, data=os.path.join(root, data), gen=os.path.join(root, 'gen'))
            with contextlib.redirect_stdout(None):
                for split in ('train', 'val'):
                    pipelines[f'{dataset} {split}'] = (datasets.create(opt, split), n_images)
        workers = {}
        for which in IMPLEMENTATIONS:
            connection, worker_end = multiprocessing.Pipe()
            process = multiprocessing.get_context('fork').Process(
                target=worker, args=(worker_end, pipelines, which), daemon=True)
            process.start()
            workers[which] = process, connection
        best = {(name, which): float('inf') for name in pipelines for which in workers}
        for _ in range(args.rounds):
            for name in pipelines:
                for which, (_, connection) in workers.items():
                    connection.send(name)
                    best[name, which] = min(best[name, which], connection.recv())
        for process, connection in workers.values():
            connection.send(None)
            process.join()
    print(f'images/s per loader worker (1 thread; CPU time, best of {args.rounds} rounds), torch {torch.__version__}, '
          f'{cpu_name()}, {os.cpu_count()} CPUs')
    print(f'ImageNet: {args.images} JPEGs of {len(SIZES)} typical sizes ({SIZES[0][0]}x{SIZES[0][1]}, ...), '
          'quality 90')
    library, why = bicubic.native()
    print(f'now: the resize in datasets/bicubic.c, {"built" if library else "NOT built: " + why}; without C: its loops '
          'as torch operations\n')
    print(f'{"pipeline":<16}{"previous":>10}{"without C":>11}{"now":>8}{"ratio":>8}{"without C":>11}')
    for name in pipelines:
        previous, torch_only, now = (1 / best[name, which] for which in IMPLEMENTATIONS)
        print(f'{name:<16}{previous:>10.0f}{torch_only:>11.0f}{now:>8.0f}{now / previous:>7.2f}x'
              f'{torch_only / previous:>10.2f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
