"""Training-step speed of the GunnLayer paths and execution options, side by side: python -m benchmarks.bench

Times Trainer.step (forward, loss, backward, SGD update and the step's loss/error figures: the step main.py
runs) on random data of the network's input size, for every combination of GunnLayer path, execution (eager,
or the whole step replayed as a CUDA graph), precision and memory layout, at each batch size, on the current
device. Prints ms/step, images/s, peak device memory and the ratio to the first combination (normally the
plain path, eager, single precision, NCHW) at the same batch size, measured in the same run. Absolute times on
shared machines are noisy: compare ratios.

  python -m benchmarks.bench -netType gunn-15 -batchSizes 64,256 -paths plain,share -exec eager,graph \\
      -precision single,bf16 -json benchmarks/results/h100-gunn15.json
"""
import argparse
import gc
import itertools
import json
import os
import platform
import time

import torch
import torch.nn as nn

import models
import opts
from datasets import N_CLASSES
from models.batchnorm import set_bn_split
from models.setup import set_cudnn_mode
from support.distributed import Process
from train import Trainer

PATHS = {'plain': dict(shareGradInput=False, optnet=False), 'share': dict(shareGradInput=True, optnet=False),
         'recompute': dict(shareGradInput=False, optnet=True),
         'triton': dict(shareGradInput=True, optnet=False, kernels='triton'),
         'triton2': dict(shareGradInput=True, optnet=False, kernels='triton2')}
EXECUTIONS = ('eager', 'graph')
PRECISIONS = ('single', 'bf16', 'half', 'double')
LAYOUTS = {'nchw': torch.contiguous_format, 'nhwc': torch.channels_last}


def build(netType, dataset, path, device, layout, bnSplit=1):
    opt = opts.defaults(netType=netType, dataset=dataset, **PATHS[path])
    torch.manual_seed(0)
    model = models.create(opt)
    set_bn_split(model, bnSplit)
    return model.to(device, memory_format=LAYOUTS[layout])


def skip_reason(path, execution, precision, device):
    if path not in PATHS:
        return f'no path {path!r} in this build (known: {", ".join(PATHS)})'
    if execution == 'graph' and device.type != 'cuda':
        return 'CUDA graphs need a GPU'
    if execution == 'graph' and precision == 'half':
        return 'not captured: float16 loss scaling reads an overflow flag on the host every step'
    return None


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def seconds_per_step(run, device, steps, warmup, rounds):
    """Median over `rounds` of the mean time of `steps` back-to-back calls (one device sync per round, as
    the training loop, which never waits for the device between steps)."""
    for _ in range(warmup):
        run()
    _sync(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            run()
        _sync(device)
        times.append((time.perf_counter() - start) / steps)
    return sorted(times)[len(times) // 2]


def top_kernels(run, device, steps, top):
    """The `top` kernels (device) or operators (CPU) by self time over `steps` profiled calls of run:
    [name, ms per step, calls per step], the largest first."""
    cuda = device.type == 'cuda'
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(steps):
            run()
        _sync(device)
    events = [(e.key, (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1000 / steps, e.count / steps)
              for e in profile.key_averages()]
    return sorted((e for e in events if e[1] > 0), key=lambda e: -e[1])[:top]


def measure(args, dataset, size, device, batch, path, execution, precision, layout, mode):
    """One row: ms/step, images/s and peak memory of one combination (and its top kernels with -profile)."""
    model = build(args.netType, dataset, path, device, layout, args.bnSplit)
    opt = opts.defaults(dataset=dataset, nEpochs=1, LR=0.01, precision=precision, progress='lines',
                        cudaGraph=execution == 'graph')
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, process=Process(device=str(device)))
    model.to(trainer.dtype)
    generator = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device, dtype=trainer.dtype, generator=generator)
    x = x.contiguous(memory_format=LAYOUTS[layout])
    y = torch.randint(0, N_CLASSES[dataset], (batch,), device=device, generator=generator)
    if mode == 'train':
        def run():
            trainer.runStep(x, y)
    else:
        model.eval()

        @torch.no_grad()
        def run():
            with trainer.autocasting():
                model(x)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    seconds = seconds_per_step(run, device, args.steps, args.warmup, args.rounds)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None
    row = dict(ms_per_step=1000 * seconds, images_per_s=batch / seconds, peak_mb=peak)
    if args.profile:
        row['top_kernels'] = top_kernels(run, device, args.steps, args.profile)
    return row


def describe(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})'


def combinations(args, lists):
    """(path, exec, precision, layout, mode) in the order measured: the baseline first, each one once."""
    modes = ('train', 'inference') if args.inference else ('train',)
    combos = [c for c in itertools.product(lists['paths'], lists['exec'], lists['precision'], lists['layout'], modes)
              if c[-1] == 'train' or c[1] == 'eager']  # inference is timed eagerly only
    if args.baseline != 'none':
        combos = [(*args.baseline.split(','), mode) for mode in modes] + combos
    return list(dict.fromkeys(combos))


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = p.add_argument
    a('-netType', default='gunn-15')
    a('-dataset', default=None, help='default: cifar10, or imagenet for the ImageNet networks')
    a('-batchSizes', default=None, help='comma-separated; default 64,256 on a GPU, 8 on the CPU')
    a('-paths', default='plain,share,recompute', help=f'GunnLayer paths, comma-separated: {", ".join(PATHS)}')
    a('-exec', default='eager', help='comma-separated: eager (kernel by kernel), graph (the step as a CUDA graph)')
    a('-precision', default='single', help=f'comma-separated: {", ".join(PRECISIONS)} (bf16, half: autocast)')
    a('-layout', default='nchw', help='comma-separated: nchw, nhwc (channels_last)')
    a('-baseline', default='plain,eager,single,nchw',
      help='path,exec,precision,layout measured first at each batch size, the yardstick of the ratios; '
           'none: the first combination measured')
    a('-bnSplit', type=int, default=1, help='BatchNorm over K slices of the batch, as main.py -bnSplit K')
    a('-steps', type=int, default=10, help='steps per timed round')
    a('-rounds', type=int, default=3, help='timed rounds (the median is reported)')
    a('-warmup', type=int, default=6, help='untimed steps first (a CUDA graph is captured after 3)')
    a('-inference', action='store_true', help='also time eval-mode forward passes (eager)')
    a('-device', default='auto', choices=('auto', 'cuda', 'cpu'))
    a('-profile', type=int, default=0, metavar='N',
      help='also list each row\'s N kernels of the most device time (CPU: operators), from torch.profiler')
    a('-json', default=None, help='also write the results to this file (rewritten after every row)')
    args = p.parse_args(argv)
    lists = {k: getattr(args, k).split(',') for k in ('paths', 'exec', 'precision', 'layout')}
    named = {k: list(v) for k, v in lists.items()}  # every value given, the baseline's included
    if args.baseline != 'none':
        if len(args.baseline.split(',')) != 4:
            p.error(f'-baseline: expected path,exec,precision,layout or none, got {args.baseline!r}')
        for name, value in zip(named, args.baseline.split(',')):
            named[name].append(value)
    for name, allowed in (('exec', EXECUTIONS), ('precision', PRECISIONS), ('layout', LAYOUTS)):
        unknown = [v for v in named[name] if v not in allowed]
        if unknown:
            p.error(f'-{name}: unknown {unknown[0]!r} (choose from {", ".join(allowed)})')
    if args.device == 'cuda' and not torch.cuda.is_available():
        p.error('-device cuda, but no GPU is visible')
    return args, lists


def main(argv=None):
    args, lists = parse(argv)
    cuda = torch.cuda.is_available() and args.device != 'cpu'
    device = torch.device('cuda' if cuda else 'cpu')
    dataset = args.dataset or models.get_model(args.netType).datasets[0]
    size = 224 if dataset == 'imagenet' else 32
    batches = [int(b) for b in (args.batchSizes or ('64,256' if cuda else '8')).split(',')]
    set_cudnn_mode('fastest')  # main.py's default -cudnn fastest
    header = {'netType': args.netType, 'dataset': dataset, 'size': size, 'device': describe(device),
              'torch': torch.__version__, 'cuda': torch.version.cuda if cuda else None,
              'cudnn': torch.backends.cudnn.version() if cuda else None, 'bnSplit': args.bnSplit, 'steps': args.steps,
              'rounds': args.rounds, 'warmup': args.warmup,
              'baseline': (args.baseline if args.baseline != 'none' else 'the first combination measured')
              + ', at the same batch size and mode'}
    print(f'{args.netType} on {dataset} ({size}x{size}), {header["device"]}, torch {torch.__version__}'
          + (f', CUDA {torch.version.cuda}' if cuda else '') + (f', -bnSplit {args.bnSplit}' if args.bnSplit > 1 else ''),
          flush=True)
    print(f'{"path":<10} {"exec":<6} {"precision":<9} {"layout":<6} {"mode":<9} {"batch":>5} {"ms/step":>9} '
          f'{"img/s":>9} {"vs base":>8} {"peak MB":>8}', flush=True)
    results = []
    for batch in batches:
        baseline = {}
        for path, execution, precision, layout, mode in combinations(args, lists):
            row = dict(path=path, exec=execution, precision=precision, layout=layout, mode=mode, batch=batch)
            label = f'{path:<10} {execution:<6} {precision:<9} {layout:<6} {mode:<9} {batch:>5}'
            reason = skip_reason(path, execution, precision, device)
            if reason is None:
                try:
                    row.update(measure(args, dataset, size, device, batch, path, execution, precision, layout, mode))
                except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # one failed row must not lose the rest
                    reason = f'failed: {str(e).strip().splitlines()[0][:200]}'
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
            results.append(row)
            if reason is not None:
                row['skipped'] = reason
                baseline.setdefault(mode, None)
                print(f'{label}  skipped: {reason}', flush=True)
            else:
                base = baseline.setdefault(mode, row['ms_per_step'])
                row['ratio'] = base / row['ms_per_step'] if base else None
                ratio = f'{row["ratio"]:7.2f}x' if base else f'{"-":>8}'
                peak = f'{row["peak_mb"]:8.0f}' if row['peak_mb'] is not None else f'{"-":>8}'
                print(f'{label} {row["ms_per_step"]:9.2f} {row["images_per_s"]:9.1f} {ratio} {peak}', flush=True)
                for name, ms, calls in row.get('top_kernels', ()):
                    print(f'    {ms:8.3f} ms/step {calls:6.0f} calls/step  {name[:120]}', flush=True)
            if args.json:
                with open(args.json + '.tmp', 'w') as f:
                    json.dump({**header, 'results': results}, f, indent=1)
                os.replace(args.json + '.tmp', args.json)


if __name__ == '__main__':
    main()
