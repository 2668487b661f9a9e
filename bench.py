"""Training-step (and inference) speed of the GunnLayer execution paths, side by side: python bench.py

Times forward + loss + backward + SGD step on random data of the network's input size, for each path and batch
size, on the current device (GPU if present), and prints ms/step, images/s, memory and the ratio to the plain
autograd reference path measured in the same run. Absolute times on shared machines are noisy: compare ratios.

  python bench.py -netType gunn-15 -batchSizes 64,256 -paths plain,share,recompute -json benchmarks/h100.json
"""
import argparse
import json
import os
import time

import torch
import torch.nn as nn

import models
from opts import N_CLASSES

PATHS = {'plain': dict(shareGradInput=False, optnet=False), 'share': dict(shareGradInput=True, optnet=False),
         'recompute': dict(shareGradInput=False, optnet=True),
         'triton': dict(shareGradInput=True, optnet=False, kernels='triton')}


def build(netType, dataset, path, device, channels_last):
    opt = argparse.Namespace(netType=netType, dataset=dataset, optMemory=0, **PATHS[path])
    torch.manual_seed(0)
    model = models.create(opt).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def time_steps(model, batch, size, nClasses, device, steps, warmup, half, train=True):
    """Seconds per step (median of `steps` after `warmup`) and peak device memory in bytes (CUDA only)."""
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, nClasses, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    model.train(train)
    times = []
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.float16, enabled=half), torch.set_grad_enabled(train):
            loss = criterion(model(x), y)
        if train:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else None
    return sorted(times)[len(times) // 2], peak


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = p.add_argument
    a('-netType', default='gunn-15')
    a('-dataset', default=None, help='default: cifar10, or imagenet for the ImageNet networks')
    a('-batchSizes', default=None, help='comma-separated; default 64,256 on a GPU, 8 on the CPU')
    a('-paths', default='plain,share,recompute', help=f'comma-separated of {", ".join(PATHS)}')
    a('-precision', default='single', choices=('single', 'half'))
    a('-channelsLast', action='store_true', help='channels_last memory format')
    a('-steps', type=int, default=10)
    a('-warmup', type=int, default=3)
    a('-inference', action='store_true', help='also time eval-mode forward passes')
    a('-json', default=None, help='also write the results to this file')
    args = p.parse_args()

    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dataset = args.dataset or models.get_model(args.netType).datasets[0]
    size = 224 if dataset == 'imagenet' else 32
    batches = [int(b) for b in (args.batchSizes or ('64,256' if device.type == 'cuda' else '8')).split(',')]
    paths = args.paths.split(',')
    half = args.precision == 'half'
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({os.cpu_count()} cores)'
    print(f'{args.netType} on {dataset} ({size}x{size}), {name}, torch {torch.__version__}, '
          f'precision {args.precision}{", channels_last" if args.channelsLast else ""}')
    print(f'{"path":<10} {"mode":<9} {"batch":>5} {"ms/step":>9} {"img/s":>9} {"vs " + paths[0]:>9} {"peak MB":>9}')
    results = []
    for batch in batches:
        baseline = {}
        for path in paths:
            for mode in ('train', 'inference') if args.inference else ('train',):
                model = build(args.netType, dataset, path, device, args.channelsLast)
                seconds, peak = time_steps(model, batch, size, N_CLASSES[dataset], device, args.steps, args.warmup,
                                           half, train=mode == 'train')
                baseline.setdefault(mode, seconds)
                row = dict(path=path, mode=mode, batch=batch, ms_per_step=1000 * seconds, images_per_s=batch / seconds,
                           ratio=baseline[mode] / seconds, peak_mb=peak / 2**20 if peak is not None else None)
                results.append(row)
                peak_text = f'{row["peak_mb"]:9.0f}' if peak is not None else f'{"-":>9}'
                print(f'{path:<10} {mode:<9} {batch:>5} {row["ms_per_step"]:9.1f} {row["images_per_s"]:9.1f} '
                      f'{row["ratio"]:8.2f}x {peak_text}')
                del model
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'netType': args.netType, 'dataset': dataset, 'device': name, 'torch': torch.__version__,
                       'cuda': torch.version.cuda, 'precision': args.precision, 'channels_last': args.channelsLast,
                       'results': results}, f, indent=1)


if __name__ == '__main__':
    main()
