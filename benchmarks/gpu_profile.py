"""Where the GPU time of a GUNN step goes, measured before any kernel change is believed (one process):

  python -m benchmarks.gpu_profile -json OUT.json [-seconds 200]
  TRITON_INTERPRET=1 python -m benchmarks.gpu_profile -json OUT.json -dry-run   # the plumbing, on the CPU

Sections, in this order, each skipped (and said so) once -seconds are spent; the JSON is rewritten after each:
  layers     each gunn-15 GunnLayer shape alone (forward + backward) per path and batch: the replay time of a
             CUDA graph of it, and from torch.profiler over one replay every kernel's device time, their sum,
             the time some kernel runs (busy) and the first start to the last end (span): span - busy is lost
             between kernels, graph - span around them
  step       the whole gunn-15 training step (Trainer.runStep, as main.py -cudaGraph true runs it) the same way
  boundary   what a kernel boundary costs in a graph: N one-store Triton kernels in a row, one program each and
             one per SM, and with programmatic dependent launch (PDL) where this Triton has it
  bandwidth  copy_ of the layers' z tensors at each batch size: the DRAM bandwidth the head kernels can hope for
  ab         version 1 of the fused kernels with the switches that need no rewrite: relaxed atomics
             (GUNN_FUSED_V1_ATOMICS, read at import: one subprocess per setting) x the CONFIGS table or
             num_stages=3 with half tiles (fused_grid_sweep's stages3-half), as CUDA graphs
  pipelining per compiled fused kernel, the software-pipelining this GPU's Triton gave its tile loops (read from
             its TTGIR as benchmarks/kernel_properties.py reads it): does it pipeline as the Triton of the CPU
             compile checks does?
The summary tables come last. -dry-run: toy shapes on the CPU, eager instead of graphs, CPU operators instead
of kernels; the fused paths need TRITON_INTERPRET=1 there (the A/B subprocesses run without it, on aten).
"""
import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time

import torch
import torch.nn as nn
import triton
import triton.language as tl

import models
import opts
from benchmarks import bench, kernel_properties
from benchmarks.fused_grid_sweep import config_variant
from models.fused import kernels as kernels1
from models.fused import kernels2
from support.distributed import Process
from train import Trainer

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # a Triton without programmatic dependent launch (pdl_reason says so)
    gdc_launch_dependents = gdc_wait = None

# gunn-15's GunnLayers: channels, segments, image size; the dry run's toy ones
LAYERS = [(240, 20, 32), (300, 25, 16), (360, 30, 8)]
DRY_LAYERS = [(8, 2, 4)]
AB_VARIANTS = ('table', 'stages3-half')
AB_ATOMICS = ('acq_rel', 'relaxed')
BOUNDARY_KERNELS = 500


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def as_graph(fn, device, before_capture=lambda: None):
    """fn replayed as a CUDA graph (captured after three warm-up calls on a side stream); fn itself on the CPU."""
    if device.type != 'cuda':
        fn()
        return fn
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    before_capture()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def ms_per_call(run, device, calls):
    run()
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        run()
    sync(device)
    return 1000 * (time.perf_counter() - start) / calls


def union_ms(intervals):
    """Total length of a set of [start, end) intervals (us), in ms."""
    busy, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            busy, end = busy + b - a, b
        elif b > end:
            busy, end = busy + b - end, b
    return busy / 1000


def kernel_profile(run, device, top=12):
    """One call of run under torch.profiler: device kernels (on the CPU: top-level operators) with their
    time per name, sum, busy and span in ms."""
    cuda = device.type == 'cuda'
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        run()
        sync(device)
    kind = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
    events = [e for e in prof.events() if e.device_type == kind and (cuda or e.cpu_parent is None)]
    intervals = [(e.time_range.start, e.time_range.end) for e in events]
    by_name = {}
    for e in events:
        ms, calls = by_name.get(e.name, (0.0, 0))
        by_name[e.name] = (ms + (e.time_range.end - e.time_range.start) / 1000, calls + 1)
    ranked = sorted(by_name.items(), key=lambda item: -item[1][0])
    return dict(kernels=len(events), kernel_ms=sum(ms for ms, _ in by_name.values()), busy_ms=union_ms(intervals),
                span_ms=(max(b for _, b in intervals) - min(a for a, _ in intervals)) / 1000 if intervals else 0.0,
                top=[[name[:100], ms, calls] for name, (ms, calls) in ranked[:top]])


def measured(run, device, calls):
    """A graph (or eager) run's ms per call and its kernel profile, with what is lost between kernels."""
    row = dict(ms=ms_per_call(run, device, calls), **kernel_profile(run, device))
    row['between_kernels_ms'] = row['span_ms'] - row['busy_ms']
    row['outside_span_ms'] = row['ms'] - row['span_ms']
    return row


# ------------------------------------------------------------------------------------------ sections

def layers_section(ctx):
    rows = []
    for channels, segments, size in ctx.layers:
        for batch in ctx.batches:
            for path in ctx.paths:
                torch.manual_seed(0)
                layer = models.GunnLayer(channels, segments, 'cifar10', 'share', 'aten' if path == 'share' else path)
                layer.to(ctx.device)
                x = torch.randn(batch, channels, size, size, device=ctx.device, requires_grad=True)
                g = torch.randn_like(x)

                def forget_grads():
                    x.grad = None
                    layer.zero_grad(set_to_none=True)
                run = as_graph(lambda: layer(x).backward(g), ctx.device, forget_grads)
                row = dict(channels=channels, segments=segments, size=size, batch=batch, path=path)
                rows.append(dict(row, **measured(run, ctx.device, ctx.calls)))
                ctx.log(f'layers {channels}@{size}x{size} batch {batch} {path}: {rows[-1]["ms"]:.2f} ms')
                ctx.release()
    return rows


def step_section(ctx):
    rows = []
    for path in ctx.step_paths:
        batch = ctx.batches[0]
        model = bench.build(ctx.net, 'cifar10', path, ctx.device, 'nchw')
        opt = opts.defaults(dataset='cifar10', nEpochs=1, LR=0.01, progress='lines',
                            cudaGraph=ctx.device.type == 'cuda')
        trainer = Trainer(model, nn.CrossEntropyLoss(), opt, process=Process(device=str(ctx.device)))
        x = torch.randn(batch, 3, 32, 32, device=ctx.device)
        y = torch.randint(0, 10, (batch,), device=ctx.device)
        for _ in range(4):  # the trainer captures its graph after 3 steps
            trainer.runStep(x, y)
        rows.append(dict(path=path, batch=batch, **measured(lambda: trainer.runStep(x, y), ctx.device, ctx.calls)))
        ctx.log(f'step {path} batch {batch}: {rows[-1]["ms"]:.2f} ms')
        ctx.release()
    return rows


@triton.jit
def _store_kernel(x):
    tl.store(x + tl.program_id(0), 1.0)


@triton.jit
def _pdl_store_kernel(x):
    gdc_wait()  # the previous kernel's writes are visible from here on
    tl.store(x + tl.program_id(0), 1.0)
    gdc_launch_dependents()  # the next kernel may start its prologue


def pdl_reason():
    """Why programmatic dependent launch cannot be measured here (None when it can)."""
    if os.environ.get('TRITON_INTERPRET') == '1':
        return 'not under the interpreter'
    if gdc_wait is None:
        return 'this Triton has no gdc_wait'
    from triton.backends.nvidia.compiler import CUDAOptions
    return None if 'launch_pdl' in CUDAOptions.__dataclass_fields__ else 'this Triton has no launch_pdl'


def boundary_section(ctx):
    rows = []
    sms = torch.cuda.get_device_properties(ctx.device).multi_processor_count if ctx.device.type == 'cuda' else 2
    x = torch.zeros(sms, device=ctx.device)
    count = BOUNDARY_KERNELS if ctx.device.type == 'cuda' else 3
    for pdl in (False, True):
        for programs in (1, sms):
            row = dict(pdl=pdl, programs=programs, kernels=count)
            reason = pdl_reason() if pdl else None
            if reason:
                rows.append(dict(row, skipped=reason))
                continue
            kernel, extra = (_pdl_store_kernel, dict(launch_pdl=True)) if pdl else (_store_kernel, {})

            def chain():
                for _ in range(count):
                    kernel[(programs,)](x, **extra)
            try:
                ms = ms_per_call(as_graph(chain, ctx.device), ctx.device, ctx.calls)
                rows.append(dict(row, us_per_kernel=1000 * ms / count))
            except RuntimeError as e:  # e.g. a capture that refuses the launch attribute
                rows.append(dict(row, skipped=f'failed: {str(e).splitlines()[0][:160]}'))
    return rows


def bandwidth_section(ctx):
    rows = []
    for channels, _, size in ctx.layers:
        for batch in ctx.batches:
            src = torch.randn(batch, channels, size, size, device=ctx.device)
            dst = torch.empty_like(src)
            ms = ms_per_call(lambda: dst.copy_(src), ctx.device, ctx.calls * 4)
            megabytes = src.numel() * src.element_size() / 1e6
            rows.append(dict(channels=channels, size=size, batch=batch, mb=megabytes, ms=ms,
                             gb_per_s=2 * megabytes / ms))  # read and write
    ctx.release()
    return rows


def ab_section(ctx):
    rows = []
    for atomics in AB_ATOMICS:
        env = dict(os.environ, GUNN_FUSED_V1_ATOMICS=atomics)
        if ctx.dry_run:
            env.pop('TRITON_INTERPRET', None)  # the plumbing: the fused path falls back to aten on the CPU
        out = ctx.json + f'.ab-{atomics}.tmp'
        argv = [sys.executable, '-m', 'benchmarks.gpu_profile', '-ab-child', out, '-batchSizes',
                ','.join(map(str, ctx.batches)), '-net', ctx.net] + (['-dry-run'] if ctx.dry_run else [])
        child = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=max(30, ctx.left()))
        if child.returncode != 0:
            rows.append(dict(atomics=atomics, skipped=f'failed: {child.stderr.strip().splitlines()[-1:]}'))
            continue
        with open(out) as f:
            rows += json.load(f)
        os.remove(out)
    return rows


def ab_child(args):
    """In a subprocess whose version-1 atomics GUNN_FUSED_V1_ATOMICS set: the training step of the fused path,
    version 1, per launch-settings variant and batch (bench.py's measurement)."""
    steps, rounds, warmup = (2, 1, 1) if args.dry_run else (10, 2, 4)
    bench_args, _ = bench.parse(['-netType', args.net, '-steps', str(steps), '-rounds', str(rounds),
                                 '-warmup', str(warmup)])
    device = torch.device('cpu' if args.dry_run else 'cuda')
    rows = []
    for variant in AB_VARIANTS:
        with config_variant(variant) if variant != 'table' else contextlib.nullcontext():
            for batch in [int(b) for b in args.batchSizes.split(',')]:
                row = bench.measure(bench_args, 'cifar10', 32, device, batch, 'triton',
                                    'eager' if args.dry_run else 'graph', 'single', 'nchw', 'train')
                rows.append(dict(variant=variant, atomics=kernels1.ATOMIC_SEM.value, batch=batch, **row))
    with open(args.ab_child, 'w') as f:
        json.dump(rows, f)


def pipelining_section(ctx):
    if os.environ.get('TRITON_INTERPRET') == '1':
        return 'no compiled kernels under the interpreter'
    rows = []
    for module in (kernels1, kernels2):
        for name in sorted(n for n in dir(module) if n.endswith('_kernel')):
            for cache in getattr(module, name).device_caches.values():
                for compiled in cache[0].values():
                    rows.append(dict(version=module.__name__.split('.')[-1], kernel=name[:-len('_kernel')],
                                     num_stages=compiled.metadata.num_stages,
                                     loops=kernel_properties.tile_loops(compiled.asm['ttgir'])))
    return rows


SECTIONS = {'layers': layers_section, 'step': step_section, 'boundary': boundary_section,
            'bandwidth': bandwidth_section, 'ab': ab_section, 'pipelining': pipelining_section}


# ------------------------------------------------------------------------------------------- summary

def summary(result):
    lines = ['', f'GPU profile on {result["device"]} (torch {result["torch"]}, triton {result["triton"]})']
    sections = result['sections']
    for name in SECTIONS:
        if isinstance(sections.get(name), str):
            lines.append(f'{name}: {sections[name]}')
    if isinstance(sections.get('layers'), list) or isinstance(sections.get('step'), list):
        lines += ['', 'ms per call (graph replay): kernels = sum of kernel times, busy = some kernel running, '
                  'between = span - busy, outside = graph - span',
                  f'  {"what":<32} {"path":<8} {"batch":>5} {"graph":>8} {"kernels":>8} {"busy":>8} {"between":>8} '
                  f'{"outside":>8} {"#":>5}  top kernel']
        for row in (sections.get('layers') or []) + (sections.get('step') or []):
            what = (f'layer {row["channels"]}/{row["segments"]} @{row["size"]}x{row["size"]}' if 'channels' in row
                    else 'whole step')
            top = f'{row["top"][0][1]:.2f} ms {row["top"][0][0][:40]}' if row['top'] else '-'
            lines.append(f'  {what:<32} {row["path"]:<8} {row["batch"]:>5} {row["ms"]:8.2f} {row["kernel_ms"]:8.2f} '
                         f'{row["busy_ms"]:8.2f} {row["between_kernels_ms"]:8.2f} {row["outside_span_ms"]:8.2f} '
                         f'{row["kernels"]:>5}  {top}')
    if isinstance(sections.get('boundary'), list):
        lines += ['', 'kernel boundary in a graph (one-store kernels in a row):']
        lines += [f'  PDL {"on " if r["pdl"] else "off"} {r["programs"]:>4} programs: '
                  + (f'{r["us_per_kernel"]:.2f} us per kernel' if 'us_per_kernel' in r else f'skipped: {r["skipped"]}')
                  for r in sections['boundary']]
    if isinstance(sections.get('bandwidth'), list):
        lines += ['', 'copy_ bandwidth (read + write):']
        lines += [f'  z of {r["channels"]}@{r["size"]}x{r["size"]} batch {r["batch"]:>3}: {r["mb"]:8.1f} MB '
                  f'{r["gb_per_s"]:8.0f} GB/s' for r in sections['bandwidth']]
    if isinstance(sections.get('ab'), list):
        lines += ['', 'A/B of version 1 (gunn-15 training step, ms/step; ratio to the table with acq_rel atomics):']
        base = {r['batch']: r['ms_per_step'] for r in sections['ab']
                if r.get('variant') == 'table' and r.get('atomics') == 'acq_rel' and 'ms_per_step' in r}
        for r in sections['ab']:
            if 'ms_per_step' in r:
                ratio = f'{base[r["batch"]] / r["ms_per_step"]:.2f}x' if r['batch'] in base else '-'
                lines.append(f'  {r["variant"]:<13} {r["atomics"]:<8} batch {r["batch"]:>3}: {r["ms_per_step"]:8.2f} '
                             f'ms {r["images_per_s"]:9.0f} img/s {ratio:>7}')
            else:
                lines.append(f'  {r["atomics"]}: skipped: {r["skipped"]}')
    if isinstance(sections.get('pipelining'), list):
        lines += ['', 'pipelining as compiled here (per tile loop: buffers/copies in flight[+synchronous loads]):']
        lines += [f'  {r["version"]:<8} {r["kernel"]:<26} stages {r["num_stages"]}: '
                  + (' '.join(f'{lp["buffers"]}/{lp["in_flight"]}' + (f'+{lp["synchronous"]}' if lp['synchronous']
                                                                       else '') for lp in r['loops']) or '-')
                  for r in sections['pipelining']]
    return '\n'.join(lines)


class Context:
    def __init__(self, args):
        self.dry_run, self.json, self.calls = args.dry_run, args.json, 1 if args.dry_run else 5
        self.device = torch.device('cpu' if args.dry_run else 'cuda')
        self.layers = DRY_LAYERS if args.dry_run else LAYERS
        self.batches = [int(b) for b in args.batchSizes.split(',')]
        self.paths = args.paths.split(',')
        self.step_paths = args.stepPaths.split(',')
        self.net = args.net
        self.deadline = time.time() + args.seconds

    def left(self):
        return self.deadline - time.time()

    def release(self):
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()

    @staticmethod
    def log(text):
        print(text, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = p.add_argument
    a('-json', help='where the results go (rewritten after each section)')
    a('-seconds', type=float, default=200, help='sections that would start later are skipped')
    a('-sections', default=','.join(SECTIONS), help=f'comma-separated, from {", ".join(SECTIONS)}')
    a('-batchSizes', default=None, help='comma-separated (default 64,256; dry run 2)')
    a('-paths', default=None, help='GunnLayer paths of the layers section (default share,triton,triton2; dry run '
                                   'share,triton2)')
    a('-stepPaths', default=None, help='paths of the step section (default share,triton,triton2; dry run share)')
    a('-net', default=None, help='network of the step and A/B sections (default gunn-15; dry run gunn-mini)')
    a('-dry-run', dest='dry_run', action='store_true', help='toy sizes on the CPU: the plumbing, not the numbers')
    a('-ab-child', dest='ab_child', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    dry = args.dry_run
    args.batchSizes = args.batchSizes or ('2' if dry else '64,256')
    args.paths = args.paths or ('share,triton2' if dry else 'share,triton,triton2')
    args.stepPaths = args.stepPaths or ('share' if dry else 'share,triton,triton2')
    args.net = args.net or ('gunn-mini' if dry else 'gunn-15')
    if args.ab_child:
        return ab_child(args)
    if not args.json:
        p.error('-json is required')
    if not dry and not torch.cuda.is_available():
        p.error('no GPU visible (-dry-run rehearses on the CPU)')
    ctx = Context(args)
    bench.set_cudnn_mode('fastest')
    result = dict(device=torch.cuda.get_device_name() if not dry else f'CPU ({platform.machine()}), dry run',
                  torch=torch.__version__, triton=triton.__version__, dry_run=dry, batches=ctx.batches, sections={})
    for name in args.sections.split(','):
        start = time.time()
        if ctx.left() < 5:
            result['sections'][name] = 'not run (out of time)'
        else:
            try:
                result['sections'][name] = SECTIONS[name](ctx)
            except Exception as e:  # one failed section must not lose the others
                result['sections'][name] = f'failed: {str(e).strip().splitlines()[0][:200]}'
        result.setdefault('seconds', {})[name] = round(time.time() - start, 1)
        print(f'== {name}: {result["seconds"][name]} s', flush=True)
        with open(args.json + '.tmp', 'w') as f:
            json.dump(result, f, indent=1)
        os.replace(args.json + '.tmp', args.json)
    print(summary(result))


if __name__ == '__main__':
    main()
