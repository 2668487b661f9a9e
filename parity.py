"""Side-by-side parity with the original Lua code: python parity.py [DIR]

Runs every golden case found in DIR (default: ../shared/parity, then tests/fixtures/lua) — data written by
running the original Torch7 files on a CPU — through this port, and prints one row per compared quantity:
case, quantity, precision, max relative error (max |ours - lua| / max |lua| per tensor, the worst tensor),
tolerance and verdict. Exit status 1 if any row fails. The rows of the data pipeline (transforms, dataset
pipelines, image decoding) come from data.py, those of Torch7's generator and of a real main.lua run
from torch7_run.py; each states its tolerances. golden.py reads the cases and prints the report.
"""
import os
import sys

import torch

from golden import data, torch7_run
from golden.cases import SEARCH_DIRS, Report, find_case, load_case
from golden.networks import check_extras, check_gunn15, check_gunn18, check_gunnlayer, check_torch7_import, has_t7

# case name -> (is it in dirs, check)
CASES = {
    'gunnlayer_cifar': (find_case, lambda r, d: check_gunnlayer(r, 'gunnlayer_cifar', d)),
    'gunnlayer_imagenet': (find_case, lambda r, d: check_gunnlayer(r, 'gunnlayer_imagenet', d)),
    'gunn15_cifar10': (find_case, check_gunn15),
    'gunn15_cifar10_init.t7': (has_t7, check_torch7_import),
    'gunn18_imagenet': (find_case, check_gunn18),
    'extras': (find_case, check_extras),
    'lua_rng': (find_case, torch7_run.check_lua_rng),
    'lua_init': (find_case, torch7_run.check_lua_init),
    'lua_run_cifar10': (find_case, torch7_run.check_lua_run),
    'transforms': (find_case, lambda r, d: data.check_transforms(r, *load_case('transforms', d))),
}


def main(argv):
    dirs = (argv[0],) if argv else SEARCH_DIRS
    report = Report()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for name, (present, check) in CASES.items():
        if not present(name, dirs):
            print(f'-- {name}: not found, skipped')
            continue
        check(report, dirs)
    if not report.rows:
        print(f'no golden data found in {", ".join(dirs)}', file=sys.stderr)
        return 1
    print(report.table())
    print(f'\n{report.summary()}')
    return 0 if report.passed else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
