"""The summary table of a tools/gpu_check.sh run: python tools/gpu_summary.py OUTDIR

Reads what the stages left in OUTDIR (stages.tsv, pytest-cuda.xml or .log, bench-*.json, main-epoch*/log.csv,
profile.log), prints the stage statuses, the test counts, the speed tables (images/s with the ratio to the plain
eager float32 step of the same bench run, and peak memory), each main.py epoch, the profile's own summary and
issue #10's targets, and writes OUTDIR/summary.json. Whatever a stage did not leave behind is reported as
missing, never guessed.
"""
import csv
import glob
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

# issue #10's targets
RATIO_AT_64, IMAGES_AT_256, GUNN18_RATIO, EPOCH_SECONDS = 8.0, 10000.0, 3.0, 12.0


def read_stages(out):
    path = os.path.join(out, 'stages.tsv')
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [dict(zip(('stage', 'status', 'seconds', 'rc'), line.rstrip('\n').split('\t'))) for line in f if line.strip()]


def read_tests(out):
    """Counts of the cuda tests, and the names of those that failed."""
    xml = os.path.join(out, 'pytest-cuda.xml')
    if os.path.isfile(xml):
        try:
            root = ET.parse(xml).getroot()
            suite = root if root.tag == 'testsuite' else root.find('testsuite')
            failed = [f'{c.get("classname")}::{c.get("name")}' for c in suite.iter('testcase')
                      if c.find('failure') is not None or c.find('error') is not None]
            counts = {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
            return {'passed': counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped'],
                    'failed': counts['failures'], 'errors': counts['errors'], 'skipped': counts['skipped'],
                    'failed_tests': failed, 'source': 'pytest-cuda.xml'}
        except (ET.ParseError, AttributeError):
            pass
    log = os.path.join(out, 'pytest-cuda.log')
    if not os.path.isfile(log):
        return None
    with open(log, errors='replace') as f:
        text = f.read()
    lines = re.findall(r'^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)', text, re.M)
    count = lambda word: sum(1 for _, w in lines if w == word)  # noqa: E731
    return {'passed': count('PASSED'), 'failed': count('FAILED'), 'errors': count('ERROR'),
            'skipped': count('SKIPPED'),
            'failed_tests': [name for name, w in lines if w in ('FAILED', 'ERROR')], 'source': 'pytest-cuda.log'}


def read_benches(out):
    benches = []
    for path in sorted(glob.glob(os.path.join(out, 'bench-*.json'))):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        data['file'] = os.path.basename(path)
        benches.append(data)
    return benches


def read_epochs(out):
    """main.py's epoch of each main-epoch* stage that left a log.csv."""
    epochs = []
    for folder in sorted(glob.glob(os.path.join(out, 'main-epoch*'))):
        path = os.path.join(folder, 'log.csv')
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        with open(os.path.join(folder, 'run.json')) as f:
            run = json.load(f)  # the options and the number of training images
        images_per_s = float(rows[0]['images_per_s'])
        epochs.append({'stage': os.path.basename(folder), 'images': run['images'], 'images_per_s': images_per_s,
                       'train_seconds': run['images'] / images_per_s,
                       'epoch_seconds_with_test': float(rows[0]['seconds']), 'options': run['options'] or '(none)',
                       'process_seconds': run.get('process_seconds'), 'exit_code': run.get('exit_code', 0)})
    return epochs


def read_profile(out):
    """The summary that benchmarks/gpu_profile.py printed last (its stage's log), or None."""
    path = os.path.join(out, 'profile.log')
    if not os.path.isfile(path):
        return None
    with open(path, errors='replace') as f:
        text = f.read()
    start = text.rfind('GPU profile on')
    return text[start:].rstrip() if start >= 0 else None


def key(row):
    return row['path'], row['exec'], row['precision'], row['layout']


def bench_table(bench):
    """Lines of one bench run: one row per combination, one column group per batch size."""
    batches = sorted({r['batch'] for r in bench['results'] if r['mode'] == 'train'})
    combos = list(dict.fromkeys(key(r) for r in bench['results'] if r['mode'] == 'train'))
    cell = {(key(r), r['batch']): r for r in bench['results'] if r['mode'] == 'train'}
    split = f', -bnSplit {bench["bnSplit"]}' if bench.get('bnSplit', 1) > 1 else ''
    lines = [f'{bench["netType"]} ({bench["size"]}x{bench["size"]}{split}) on {bench["device"]}, torch {bench["torch"]} '
             f'[{bench["file"]}]: train img/s, ratio to {bench["baseline"].split(", at")[0]}, peak MB',
             f'  {"path":<9} {"exec":<6} {"precision":<9} {"layout":<6}'
             + ''.join(f' | {"batch " + str(b):>26}' for b in batches)]
    for combo in combos:
        text = f'  {combo[0]:<9} {combo[1]:<6} {combo[2]:<9} {combo[3]:<6}'
        for b in batches:
            r = cell.get((combo, b))
            if r is None:
                text += f' | {"":>26}'
            elif 'skipped' in r:
                text += f' | {"skipped: " + r["skipped"][:17]:>26}'
            else:
                ratio = f'{r["ratio"]:.2f}x' if r.get('ratio') else '-'
                peak = f'{r["peak_mb"]:.0f}' if r.get('peak_mb') is not None else '-'
                text += f' | {r["images_per_s"]:9.{0 if r["images_per_s"] >= 100 else 2}f} {ratio:>7} {peak:>8}'
        lines.append(text)
    return lines


def best(rows):
    return max(rows, key=lambda r: r['images_per_s'], default=None)


def targets(benches, epochs, tests):
    """(target, measured, verdict) of issue #10's goals, from whatever was measured."""
    rows = [dict(r, file=b['file'], netType=b['netType']) for b in benches for r in b['results']
            if r['mode'] == 'train' and 'skipped' not in r and b.get('bnSplit', 1) == 1]
    baselines = {(r['file'], r['batch']): r for r in rows if key(r) == ('plain', 'eager', 'single', 'nchw')}
    fast = [r for r in rows if key(r) != ('plain', 'eager', 'single', 'nchw')]
    result = []

    def memory_note(r):
        base = baselines.get((r['file'], r['batch']))
        if r.get('peak_mb') is None or base is None or base.get('peak_mb') is None:
            return ''
        return f', peak {r["peak_mb"]:.0f} MB vs plain {base["peak_mb"]:.0f} MB'

    def add(goal, r, value, ok):
        if r is None:
            result.append((goal, 'not measured', '-'))
        else:
            what = f'{r["path"]} {r["exec"]} {r["precision"]} {r["layout"]}'
            result.append((goal, f'{value} ({what}{memory_note(r)})', 'met' if ok else 'NOT met'))

    r = best([x for x in fast if x['netType'] == 'gunn-15' and x['batch'] == 64 and x['precision'] == 'single'
              and x.get('ratio')])
    add('gunn-15 batch 64 float32 >= 8x plain', r, r and f'{r["ratio"]:.2f}x, {r["images_per_s"]:.0f} img/s',
        r and r['ratio'] >= RATIO_AT_64)
    r = best([x for x in fast if x['netType'] == 'gunn-15' and x['batch'] == 256 and x['precision'] == 'single'])
    add('gunn-15 batch 256 float32 >= 10,000 img/s', r, r and f'{r["images_per_s"]:.0f} img/s',
        r and r['images_per_s'] >= IMAGES_AT_256)
    r = best([x for x in fast if x['netType'] == 'gunn-18' and x['batch'] == 64 and x.get('ratio')])
    add('gunn-18 batch 64 >= 3x plain', r, r and f'{r["ratio"]:.2f}x, {r["images_per_s"]:.0f} img/s',
        r and r['ratio'] >= GUNN18_RATIO)
    r = best([x for x in fast if x['precision'] == 'bf16' and x['netType'] == 'gunn-15' and x['batch'] == 64])
    add('gunn-15 batch 64 bf16 (reported)', r, r and f'{r["images_per_s"]:.0f} img/s', True)
    epoch = best([e for e in epochs if e['images'] == 50000])
    if not epochs:
        result.append(('CIFAR-10 epoch in main.py < 12 s', 'not measured', '-'))
    elif epoch is None:
        result.append(('CIFAR-10 epoch in main.py < 12 s',
                       f'not measured ({epochs[0]["images"]:,} images, a rehearsal)', '-'))
    else:
        result.append(('CIFAR-10 epoch in main.py < 12 s',
                       f'{epoch["train_seconds"]:.1f} s, {epoch["images_per_s"]:.0f} img/s (options {epoch["options"]})',
                       'met' if epoch['train_seconds'] < EPOCH_SECONDS else 'NOT met'))
    if tests is None:
        result.append(('cuda tests pass', 'not run', '-'))
    else:
        bad = tests['failed'] + tests['errors']
        result.append(('cuda tests pass', f'{tests["passed"]} passed, {bad} failed, {tests["skipped"]} skipped',
                       'met' if bad == 0 and tests['passed'] > 0 else 'NOT met'))
    return result


def main(out):
    stages, tests, benches, epochs = read_stages(out), read_tests(out), read_benches(out), read_epochs(out)
    lines = ['', '=' * 100, f'GPU check summary ({out})', '', f'{"stage":<20} {"status":<24} {"seconds":>7}']
    lines += [f'{s["stage"]:<20} {s["status"]:<24} {s["seconds"]:>7}' for s in stages]
    lines.append('')
    if tests is None:
        lines.append('pytest -m cuda: no result')
    else:
        lines.append(f'pytest -m cuda: {tests["passed"]} passed, {tests["failed"]} failed, {tests["errors"]} errors, '
                     f'{tests["skipped"]} skipped ({tests["source"]})')
        lines += [f'  FAILED {name}' for name in tests['failed_tests']]
    for bench in benches:
        lines += [''] + bench_table(bench)
    lines.append('')
    if not epochs:
        lines.append('main.py CIFAR-10-sized epoch: no log.csv')
    for epoch in epochs:
        lines.append(f'main.py CIFAR-10-sized epoch [{epoch["stage"]}] (options {epoch["options"]}): '
                     f'{epoch["images_per_s"]:.0f} img/s = {epoch["train_seconds"]:.1f} s of training for '
                     f'{epoch["images"]:,} images; {epoch["epoch_seconds_with_test"]:.1f} s with the test pass'
                     + (f'; the process took {epoch["process_seconds"]} s from start to exit (code {epoch["exit_code"]})'
                        if epoch['process_seconds'] is not None else ''))
    profile = read_profile(out)
    lines += ['', profile if profile else 'benchmarks/gpu_profile.py: no summary in profile.log']
    goals = targets(benches, epochs, tests)
    lines += ['', 'issue #10 targets:'] + [f'  {g:<44} {v:<8} {m}' for g, m, v in goals]
    print('\n'.join(lines))
    with open(os.path.join(out, 'summary.json'), 'w') as f:
        json.dump({'stages': stages, 'tests': tests, 'epochs': epochs,
                   'targets': [dict(goal=g, measured=m, verdict=v) for g, m, v in goals],
                   'benches': [b['file'] for b in benches]}, f, indent=1)


if __name__ == '__main__':
    main(sys.argv[1])
