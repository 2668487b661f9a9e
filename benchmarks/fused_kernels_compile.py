"""Compile the fused GunnLayer kernels for a GPU, without one: python -m benchmarks.fused_kernels_compile

Runs one GunnLayer's fused training forward and backward on the CPU with the kernel launches recorded
instead of run, compiles every distinct kernel specialisation for the target (default sm_90, an H100)
with the installed Triton and its bundled ptxas, and prints registers, spilled bytes and shared memory per
kernel: what the CONFIGS table of models/fused/layer.py should keep within (no spills; shared memory
well under the 227 KB an H100 block may have). It also prints how many programs of each kernel fit on one
SM at once, and what limits them, from the CUDA occupancy rules: the fused path launches
PROGRAMS_PER_SM programs per SM, and those that do not fit wait for the others to finish. Edit the table,
rerun. It checks that the kernels compile for the GPU, not that they are right (the tests do that) or fast
(bench.py on the GPU does that).

  python -m benchmarks.fused_kernels_compile                                  # gunn-15's first layer, batch 64
  python -m benchmarks.fused_kernels_compile -channels 400 -segments 10 -size 56 -batch 8 -dataset imagenet
"""
import argparse
import os
import re
import subprocess
import tempfile
import time

import torch

from models import GunnLayer
from models.batchnorm import set_bn_split
from models.fused import layer as fused

TRITON_TYPES = {torch.float32: 'fp32', torch.float64: 'fp64', torch.int64: 'i64'}
# per SM, by compute capability (CUDA occupancy calculator): registers, warps, resident blocks, shared
# memory bytes (of which 1 KB is reserved per block); registers are allocated per warp in units of 256
SM_LIMITS = {80: (65536, 64, 32, 164 * 1024), 90: (65536, 64, 32, 228 * 1024)}
REGISTER_UNIT = 256
RESERVED_SHARED = 1024


def resident_programs(arch, registers, warps, shared):
    """(how many programs of a kernel fit on one SM at once, the resource that limits them)."""
    registers_per_sm, max_warps, max_blocks, shared_per_sm = SM_LIMITS[arch]
    per_warp = -(-registers * 32 // REGISTER_UNIT) * REGISTER_UNIT
    fits = {'registers': registers_per_sm // (per_warp * warps),
            'shared memory': shared_per_sm // (shared + RESERVED_SHARED),
            'warps': max_warps // warps, 'blocks': max_blocks}
    limit = min(fits, key=fits.get)
    return fits[limit], limit


def recorded_launches(layer, x, keep):
    """(kernel name, arguments, constexprs, launch config) of every launch of one forward and backward."""
    calls = []

    def record(geo, name, kernel_args, axis2=1, **constexprs):
        calls.append((name, kernel_args, constexprs, dict(geo.config[name])))

    launch, fused.Geometry.launch = fused.Geometry.launch, record
    try:
        out, geo, fstats, kept = fused._run_forward(layer, x, keep)
        fused._run_backward(layer, geo, x, out, fstats, kept, torch.ones_like(out))
    finally:
        fused.Geometry.launch = launch
    return calls


def specialisation(kernel, args, constexprs, config):
    """(signature, constexprs, divisibility attributes, options) as Triton's launcher would derive them."""
    constants = dict(constexprs, **{k: v for k, v in config.items() if k.startswith('BLOCK')})
    options = {k: v for k, v in config.items() if k in ('num_warps', 'num_stages')}
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


def compile_launches(layer, x, keep=True, arch=90):
    """Compile every distinct kernel specialisation one forward and backward of `layer` on `x` launches;
    yields (kernel name, constexpr flags, launch options, compiled kernel)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernels = fused._kernels()
    seen = set()
    for name, kernel_args, constexprs, config in recorded_launches(layer, x, keep):
        kernel = getattr(kernels, name + '_kernel')
        signature, constants, attrs, options = specialisation(kernel, kernel_args, constexprs, config)
        key = (name, tuple(signature.items()), tuple(sorted(constants.items())), tuple(sorted(attrs)))
        if key not in seen:
            seen.add(key)
            compiled = triton.compile(ASTSource(kernel, signature, constants, attrs),
                                      target=GPUTarget('cuda', arch, 32), options=options)
            yield name, {k: v for k, v in constexprs.items() if not k.startswith('BLOCK')}, options, compiled


def ptxas_report(ptx, arch):
    """(registers, spilled bytes) per thread that ptxas reports for the kernel."""
    import triton
    ptxas = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'ptxas')
    with tempfile.NamedTemporaryFile('w', suffix='.ptx') as f:
        f.write(ptx)
        f.flush()
        text = subprocess.run([ptxas, '-v', f'--gpu-name=sm_{arch}a', f.name, '-o', os.devnull],
                              capture_output=True, text=True).stderr
    registers = re.search(r'Used (\d+) registers', text)
    spills = re.search(r'(\d+) bytes spill stores', text)
    return (int(registers.group(1)) if registers else -1), (int(spills.group(1)) if spills else -1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a = p.add_argument
    a('-channels', type=int, default=240)
    a('-segments', type=int, default=20)
    a('-size', type=int, default=32)
    a('-batch', type=int, default=64)
    a('-dataset', default='cifar10')
    a('-precision', default='single', choices=('single', 'double'))
    a('-bnSplit', type=int, default=1)
    a('-optnet', action='store_true', help='recompute in backward (-optnet)')
    a('-arch', type=int, default=90, help='compute capability x10 (90: H100; 80 and 90 get the occupancy columns)')
    args = p.parse_args()

    import triton
    dtype = torch.float64 if args.precision == 'double' else torch.float32
    layer = GunnLayer(args.channels, args.segments, args.dataset).to(dtype)
    set_bn_split(layer, args.bnSplit)
    x = torch.zeros(args.batch, args.channels, args.size, args.size, dtype=dtype)
    print(f'GunnLayer({args.channels}, {args.segments}) at {args.batch}x{args.size}x{args.size} {dtype}, '
          f'triton {triton.__version__}, sm_{args.arch}; the grid asks for {fused.PROGRAMS_PER_SM} programs per SM')
    print(f'{"kernel":<26} {"constexprs":<44} {"warps":>5} {"regs":>5} {"spill B":>8} {"smem KB":>8} '
          f'{"fit/SM":>6} {"limit":<13} {"warps/SM":>8} {"s":>5}')
    start = time.time()
    for name, flags, options, compiled in compile_launches(layer, x, not args.optnet, args.arch):
        registers, spills = ptxas_report(compiled.asm['ptx'], args.arch)
        text = ' '.join(f'{k}={v}' for k, v in flags.items())
        warps, shared = options['num_warps'], compiled.metadata.shared
        fit, limit, resident_warps = '-', '-', '-'
        if args.arch in SM_LIMITS:
            fit, limit = resident_programs(args.arch, registers, warps, shared)
            resident_warps = fit * warps
        print(f'{name:<26} {text:<44} {warps:>5} {registers:>5} {spills:>8} {shared / 1024:>8.1f} '
              f'{fit:>6} {limit:<13} {resident_warps:>8} {time.time() - start:>5.1f}', flush=True)
        start = time.time()


if __name__ == '__main__':
    main()
