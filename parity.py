"""Side-by-side parity with the original Lua code (docs/PARITY.md).

    python parity.py [DIR] [--present-only]
    python parity.py --lua GUNN_DIR [--th TH] [--out DIR] [--full] [--present-only]

Compares the port with a golden set: numbers written by running the original Torch7 files on a CPU. DIR
defaults to golden/compact, the set in the repository; --lua first writes a set from a GUNN checkout with
lua/generate.sh. The expected cases are those of DIR/cases.json (the reference set without one: its 10
cases). One row per compared quantity (case, quantity, precision, max error, tolerance, verdict), then one
line per expected case. Exit status 0 only when every expected case ran and every row passed; a case with
missing files fails, unless --present-only, which skips it.
"""
import os
import subprocess
import sys
import tempfile
from typing import NamedTuple

import torch

from golden import data, networks, sets, torch7_run
from golden.cases import COMPACT, ROOT, Report, load_case
from support import command
from support.errors import GunnError

# case kind -> check(report, case, folder)
CHECKS = {
    'gunnlayer': networks.check_gunnlayer,
    'gunn_train': networks.check_gunn_train,
    'torch7_import': networks.check_torch7_import,
    'gunn_logits': networks.check_gunn_logits,
    'extras': networks.check_extras,
    'lua_rng': torch7_run.check_lua_rng,
    'lua_init': torch7_run.check_lua_init,
    'lua_run': torch7_run.check_lua_run,
    'transforms': lambda report, case, folder: data.check_transforms(report, *load_case(case, folder)),
}


class Outcome(NamedTuple):
    case: sets.Case
    status: str  # passed, FAILED, missing (a failure) or skipped (missing, with --present-only)
    rows: range  # its rows of the report
    detail: str = ''


def _run(report, case):
    try:
        if case.kind not in CHECKS:
            raise GunnError(f'no check for case kind {case.kind!r}')
        CHECKS[case.kind](report, case.name, case.folder)
    except Exception as e:  # a broken case or port is a failed row, not the end of the report
        report.add(case.name, 'check ran', '-', None, 0, absolute=True, problem=f'raised {type(e).__name__}: {e}')


def compare(folder, present_only=False):
    """(report, [Outcome per expected case]) of the golden set in folder."""
    report, outcomes = Report(), []
    for case in sets.expected(folder):
        start = len(report.rows)
        missing = case.missing()
        if missing:
            detail = 'missing ' + ', '.join(missing)
            if present_only:
                outcomes.append(Outcome(case, 'skipped', range(start, start), detail))
                continue
            report.add(case.name, 'files present', '-', None, 0, absolute=True, problem=f'{detail} in {folder}')
            outcomes.append(Outcome(case, 'missing', range(start, start + 1), detail))
            continue
        _run(report, case)
        rows = range(start, len(report.rows))
        outcomes.append(Outcome(case, 'passed' if report.part(start).passed else 'FAILED', rows))
    return report, outcomes


def _case_table(outcomes):
    head = ('case', 'kind', 'comparisons', 'result')
    body = [(o.case.name, o.case.kind, str(len(o.rows)) if o.status in ('passed', 'FAILED') else '-',
             {'missing': 'FAILED'}.get(o.status, o.status) + (f': {o.detail}' if o.detail else '')) for o in outcomes]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt = '  '.join(f'{{:<{w}}}' for w in widths)
    return '\n'.join(fmt.format(*r).rstrip() for r in [head, ['-' * w for w in widths]] + body)


def _case_summary(outcomes, folder):
    names = {status: [o.case.name for o in outcomes if o.status == status]
             for status in ('passed', 'FAILED', 'missing', 'skipped')}
    ran = len(names['passed']) + len(names['FAILED'])
    text = f'{len(outcomes)} cases expected in {folder}: {ran} ran, {len(names["passed"])} passed'
    if names['FAILED']:
        text += f' ({len(names["FAILED"])} failed: {", ".join(names["FAILED"])})'
    missing = names['missing'] + names['skipped']
    text += f', {len(missing)} missing' + (f' ({", ".join(missing)})' if missing else '')
    return text + (' and skipped (--present-only)' if names['skipped'] else '')


def generate(gunn, out, th, full):
    """Writes a golden set from the GUNN checkout into out with lua/generate.sh."""
    cmd = ['bash', os.path.join(ROOT, 'lua', 'generate.sh'), gunn, out, '--full' if full else '--compact',
           '--python', sys.executable] + (['--th', th] if th else [])
    result = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode != 0:
        raise GunnError('generating the golden set failed: '
                        + (lines[-1] if lines else f'lua/generate.sh exited with status {result.returncode}'))
    sys.stderr.write(result.stderr)  # its warnings (other BLAS kernels than the reference's)
    print(f'=> golden set written to {out}\n')


def parse(argv):
    parser = command.Parser(prog='parity.py', description='Compares the port with a golden set of the Lua code.')
    parser.add_argument('folder', nargs='?', metavar='DIR', help=f'the golden set (default {COMPACT})')
    parser.add_argument('--present-only', action='store_true', help='skip the expected cases whose files are missing')
    parser.add_argument('--lua', metavar='GUNN_DIR', help='first write a golden set from this GUNN checkout')
    parser.add_argument('--th', help='the Torch7 launcher (lua/build_torch7.sh writes PREFIX/bin/th)')
    parser.add_argument('--out', metavar='DIR', help='where --lua writes the set (default: a new temporary folder)')
    parser.add_argument('--full', action='store_true', help='with --lua: the full-size reference cases')
    args = parser.parse_args(argv)
    if args.lua and args.folder:
        parser.error('give either DIR or --lua GUNN_DIR (--out names the folder it writes)')
    if not args.lua and (args.th or args.out or args.full):
        parser.error('--th, --out and --full go with --lua')
    return args


def main(argv):
    args = parse(argv)
    folder = args.folder or COMPACT
    if args.lua:
        folder = args.out or tempfile.mkdtemp(prefix='gunn-golden-')
        generate(args.lua, folder, args.th, args.full)
    if not os.path.isdir(folder):
        raise GunnError(f'no golden set at {folder}: not a folder')
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    report, outcomes = compare(folder, args.present_only)
    for o in outcomes:
        if o.status == 'skipped':
            print(f'-- {o.case.name}: not found, skipped ({o.detail})')
    ran = [o for o in outcomes if o.status in ('passed', 'FAILED')]
    if ran or report.rows:
        print(report.table())
    print(f'\n{_case_table(outcomes)}\n\n{report.summary()}\n{_case_summary(outcomes, folder)}')
    return 0 if ran and report.passed else 1


if __name__ == '__main__':
    sys.exit(command.run(main, sys.argv[1:], 'parity.py'))
