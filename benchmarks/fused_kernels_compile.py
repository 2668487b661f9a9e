"""Compile the fused GunnLayer kernels for a GPU, without one: python -m benchmarks.fused_kernels_compile

Runs one GunnLayer's fused training forward and backward on the CPU with the kernel launches recorded
instead of run, compiles every distinct kernel specialisation for the target (default sm_90, an H100)
with the installed Triton and its bundled ptxas, and prints per kernel: registers, spilled bytes, shared
memory, how many programs fit on one SM at once and what limits them (the CUDA occupancy rules), and the
latency properties of benchmarks/kernel_properties.py: fenced atomics, float64 instructions inside loops,
and how each innermost tile loop is software-pipelined. Edit a CONFIGS table (models/fused/layer.py,
layer2.py), rerun. It checks that the kernels compile for the GPU, not that they are right (the tests do that)
or fast (bench.py and gpu_profile.py on the GPU do that).

  python -m benchmarks.fused_kernels_compile -kernels triton2                 # gunn-15's first layer, batch 64
  python -m benchmarks.fused_kernels_compile -channels 400 -segments 10 -size 56 -batch 8 -dataset imagenet
"""
import argparse
import time

import torch

from models import GunnLayer
from models.batchnorm import set_bn_split
from models.fused import layer as fused
from models.fused import layer2 as fused2
from models.fused import occupancy

from . import kernel_properties

TRITON_TYPES = {torch.float32: 'fp32', torch.float64: 'fp64', torch.int64: 'i64'}


def resident_programs(arch, registers, warps, shared):
    """(how many programs of a kernel fit on one SM of compute capability `arch` at once, the resource that
    limits them)."""
    return occupancy.resident_programs(occupancy.SM_LIMITS[arch], registers, warps, shared)


VERSIONS = {'triton': fused, 'triton2': fused2}  # -kernels: the host module of each version of the kernels


def recorded_launches(version, layer, x, keep):
    """(kernel, arguments, keyword arguments) of every launch of one forward and backward of `layer` on `x`
    through `version` (a VERSIONS module), recorded instead of run."""
    from triton.runtime.jit import JITFunction
    calls = []

    def record(kernel, *args, grid, warmup, **kwargs):
        calls.append((kernel, args, kwargs))

    run, JITFunction.run = JITFunction.run, record
    try:
        out, geo, fstats, kept = version._run_forward(layer, x, keep)
        version._run_backward(layer, geo, x, out, fstats, kept, torch.ones_like(out))
    finally:
        JITFunction.run = run
    return calls


def specialisation(kernel, args, kwargs):
    """(signature, constexprs, divisibility attributes, options) as Triton's launcher would derive them."""
    constants = {k: v for k, v in kwargs.items() if k not in ('num_warps', 'num_stages')}
    options = {k: v for k, v in kwargs.items() if k in ('num_warps', 'num_stages')}
    runtime = iter(args)
    signature, attrs = {}, {}
    for i, param in enumerate(kernel.params):
        if param.name in constants:
            signature[param.name] = 'constexpr'
            continue
        value = next(runtime)
        if isinstance(value, torch.Tensor):
            signature[param.name] = '*' + TRITON_TYPES[value.dtype]
            aligned = value.data_ptr() % 16 == 0
        else:
            signature[param.name] = 'i32' if -2**31 <= value < 2**31 else 'i64'  # as Triton types ints
            aligned = value % 16 == 0 and not param.do_not_specialize
        if aligned:
            attrs[(i,)] = [['tt.divisibility', 16]]
    constexpr_ids = {(kernel.arg_names.index(k),): v for k, v in constants.items()}
    return signature, constexpr_ids, attrs, options


def compile_launches(layer, x, keep=True, arch=90, kernels='triton'):
    """Compile every distinct kernel specialisation one forward and backward of `layer` on `x` launches with
    -kernels `kernels`; yields (kernel name, constexpr flags, launch options, compiled kernel)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    seen = set()
    for kernel, args, kwargs in recorded_launches(VERSIONS[kernels], layer, x, keep):
        signature, constants, attrs, options = specialisation(kernel, args, kwargs)
        name = kernel.fn.__name__[:-len('_kernel')]
        key = (name, tuple(signature.items()), tuple(sorted(constants.items())), tuple(sorted(attrs)))
        if key not in seen:
            seen.add(key)
            compiled = triton.compile(ASTSource(kernel, signature, constants, attrs),
                                      target=GPUTarget('cuda', arch, 32), options=options)
            flags = {k: v for k, v in kwargs.items() if k not in options and not k.startswith('BLOCK')
                     and k not in ('H', 'W')}
            yield name, flags, options, compiled


def kernel_rows(layer, x, keep=True, arch=90, kernels='triton'):
    """One row per compiled kernel specialisation: name, flags, warps, kernel_properties.properties, and the
    programs that fit on an SM with what limits them; yielded as each is compiled."""
    for name, flags, options, compiled in compile_launches(layer, x, keep, arch, kernels):
        row = dict(name=name, flags=flags, warps=options['num_warps'], **kernel_properties.properties(compiled, arch))
        row['fit'], row['limit'] = resident_programs(arch, row['registers'], row['warps'], row['shared'])
        yield row


def loops_text(loops):
    """Tile loops as 'buffers/in-flight copies[+synchronous tile loads]' each, e.g. '2/3 3/2+1'."""
    return ' '.join(f'{loop["buffers"]}/{loop["in_flight"]}' + (f'+{loop["synchronous"]}' if loop['synchronous']
                                                                 else '') for loop in loops) or '-'


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = p.add_argument
    a('-kernels', default='triton', choices=tuple(VERSIONS), help='which version of the fused kernels')
    a('-channels', type=int, default=240)
    a('-segments', type=int, default=20)
    a('-size', type=int, default=32)
    a('-batch', type=int, default=64)
    a('-dataset', default='cifar10')
    a('-precision', default='single', choices=('single', 'double'))
    a('-bnSplit', type=int, default=1)
    a('-optnet', action='store_true', help='recompute in backward (-optnet)')
    a('-arch', type=int, default=90, help='compute capability x10 (80 or 90: H100)')
    args = p.parse_args()

    import triton
    dtype = torch.float64 if args.precision == 'double' else torch.float32
    layer = GunnLayer(args.channels, args.segments, args.dataset).to(dtype)
    set_bn_split(layer, args.bnSplit)
    x = torch.zeros(args.batch, args.channels, args.size, args.size, dtype=dtype)
    print(f'-kernels {args.kernels}: GunnLayer({args.channels}, {args.segments}) at '
          f'{args.batch}x{args.size}x{args.size} '
          f'{dtype}, triton {triton.__version__}, sm_{args.arch}')
    print('fenced: ordered atomics + GPU fences/L1 invalidations; fp64: float64 instructions inside loops; '
          'loops: per innermost tile loop, ring-buffer slots/copies left in flight[+synchronous tile loads]')
    print(f'{"kernel":<18} {"constexprs":<88} {"warps":>5} {"regs":>5} {"spill B":>7} {"smem KB":>7} {"fit/SM":>6} '
          f'{"limit":<13} {"fenced":>6} {"fp64":>5}  {"loops":<12} {"s":>5}')
    start = time.time()
    for row in kernel_rows(layer, x, not args.optnet, args.arch, args.kernels):
        text = ' '.join(f'{k}={v}' for k, v in row['flags'].items())
        print(f'{row["name"]:<18} {text:<88} {row["warps"]:>5} {row["registers"]:>5} {row["spills"]:>7} '
              f'{row["shared"] / 1024:>7.1f} {row["fit"]:>6} {row["limit"]:<13} {row["fenced_atomics"]:>6} '
              f'{row["fp64_in_loops"]:>5}  {loops_text(row["loops"]):<12} {time.time() - start:>5.1f}', flush=True)
        start = time.time()


if __name__ == '__main__':
    main()
