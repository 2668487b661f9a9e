"""The fused path's speed for several persistent grid sizes and launch settings, side by side (a GPU
measurement):

  python -m benchmarks.fused_grid_sweep [-programs 2,4,16] [-configs warps8,half-tiles] BENCH_OPTIONS...

The fused kernels run a persistent grid of models/fused/layer.PROGRAMS_PER_SM programs per streaming
multiprocessor, each walking its share of the tiles, with the launch settings of its CONFIGS table. Compiled
for sm_90 (benchmarks/fused_kernels_compile.py), most kernels of that table use 160-255 registers a thread, so
only 1-3 programs (8-16 warps) fit on an SM at once: few loads in flight (the first H100 run measured the
fused path at about a fifth of its bandwidth model). This runs `bench.py -paths triton BENCH_OPTIONS` once
per grid size with the table as it is, then once per other launch setting (CONFIG_VARIANTS) with the
configured grid, in one process. The variants change tile sizes and warps only, which every kernel takes
(the interpreter tests run tiles of 16); the float32 sums come out in another order.
"""
import argparse
import contextlib

import torch

from benchmarks import bench
from models.fused import layer as fused_gunn_layer

# launch settings to try, as edits of each kernel's float32 CONFIGS entry
CONFIG_VARIANTS = {
    'warps8': lambda config: dict(config, num_warps=8),  # the same tiles over twice the threads: fewer registers each
    'half-tiles': lambda config: dict(config, BLOCK_P=max(16, config['BLOCK_P'] // 2)),  # fewer registers, more tiles
    # two buffers per pipelined loop instead of one (num_stages=2 pipelines nothing), in the half tiles' registers
    'stages3-half': lambda config: dict(config, BLOCK_P=max(16, config['BLOCK_P'] // 2),
                                        **({'num_stages': 3} if 'num_stages' in config else {})),
}


@contextlib.contextmanager
def config_variant(name):
    """The float32 CONFIGS tables edited as CONFIG_VARIANTS[name] says, restored afterwards."""
    tables = [table for (dtype, _), table in fused_gunn_layer.CONFIGS.items() if dtype == torch.float32]
    saved = [dict(table) for table in tables]
    try:
        for table in tables:
            table.update({kernel: CONFIG_VARIANTS[name](config) for kernel, config in table.items()})
        yield
    finally:
        for table, kept in zip(tables, saved):
            table.update(kept)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('-programs', default='2,4,16', help='programs per SM, comma-separated (the table as it is)')
    p.add_argument('-configs', default=','.join(CONFIG_VARIANTS),
                   help=f'launch settings, comma-separated, from {", ".join(CONFIG_VARIANTS)}; "" for none')
    args, bench_options = p.parse_known_args(argv)
    variants = [name for name in args.configs.split(',') if name]
    unknown = [name for name in variants if name not in CONFIG_VARIANTS]
    if unknown:
        p.error(f'unknown -configs {", ".join(unknown)}; known: {", ".join(CONFIG_VARIANTS)}')
    configured = fused_gunn_layer.PROGRAMS_PER_SM
    runs = [(int(n), None) for n in args.programs.split(',') if n] + [(configured, name) for name in variants]
    try:
        for programs, variant in runs:
            fused_gunn_layer.PROGRAMS_PER_SM = programs
            print(f'--- {programs} programs per SM, ' + (f'launch settings {variant}' if variant
                                                        else 'the CONFIGS table as it is'), flush=True)
            with config_variant(variant) if variant else contextlib.nullcontext():
                bench.main(['-paths', 'triton', '-baseline', 'none', *bench_options])
    finally:
        fused_gunn_layer.PROGRAMS_PER_SM = configured

if __name__ == '__main__':
    main()
