"""The fused path's speed for several persistent grid sizes, side by side (a GPU measurement):

  python tools/fused_grid_sweep.py [-programs 4,8,16,32] BENCH_OPTIONS...

The fused kernels run a persistent grid of models/fused_gunn_layer.PROGRAMS_PER_SM programs per streaming
multiprocessor, each walking its share of the tiles. Few programs keep few loads in flight (the first H100 run
measured the fused path at about a fifth of its bandwidth model); many programs add statistics atomics. This
runs `bench.py -paths triton BENCH_OPTIONS` once per grid size, in one process (the kernels compile once:
the grid is no compile-time constant).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench  # noqa: E402
from models import fused_gunn_layer  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('-programs', default='4,8,16,32', help='programs per SM, comma-separated')
    args, bench_options = p.parse_known_args(argv)
    for programs in [int(n) for n in args.programs.split(',')]:
        fused_gunn_layer.PROGRAMS_PER_SM = programs
        print(f'--- {programs} programs per SM', flush=True)
        bench.main(['-paths', 'triton', '-baseline', 'none', *bench_options])


if __name__ == '__main__':
    main()
