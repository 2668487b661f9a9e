"""Two golden sets compared case by case: python -m golden.compare REFERENCE OTHER [--cases A,B]
[--expect CASE[:ITEM]]... [--details N]

How a regenerated set (lua/generate.sh) is shown to equal the one it regenerates. For every case of REFERENCE
(its cases.json, or the reference set's cases): every tensor bit for bit (else the max absolute and max
relative difference), the meta (equal, or the differing keys; wall-clock timings and paths are ignored) and
the other files byte for byte, or, for a Torch7 file, content for content. Prints one table row per case and
the differences below it. Exit status 1 if anything differs that --expect does not name (CASE: the whole case;
CASE:ITEM a tensor name, a meta key path such as meta.cases.x.draws, or a file name), 2 on a usage error.
"""
import argparse
import json
import math
import os
import re
import sys
import tempfile

import numpy as np

from golden import sets
from golden.cases import read_case
from support.errors import GunnError
from torch7 import serialization

# meta keys that hold wall-clock measurements, paths or the generator's own command lines
IGNORED_KEYS = {'wall_seconds', 'cpu_seconds_eval_forward', 'command', 'generated_at', 'paths'}
TIMINGS = re.compile(r'Time +[0-9.]+ +Data +[0-9.]+')


def tensor_difference(a, b):
    """None when a and b are the same bytes, else a short description."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return f'{a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}'
    if a.tobytes() == b.tobytes():
        return None
    x, y = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(x - y)
    scale = np.abs(x).max(initial=0.0)
    worst = float(np.nanmax(diff)) if diff.size else 0.0
    rel = worst / scale if scale > 0 else float('inf')
    return f'max abs {worst:.3g}, max rel {rel:.3g} (of max |ref|), {int((a != b).sum())}/{a.size} elements differ'


def normalise(value, key=None):
    if isinstance(value, str):
        return TIMINGS.sub('Time - Data -', value)
    return value


def meta_differences(a, b, path='meta'):
    """[(key path, reference value, other value)] of a and b, ignoring IGNORED_KEYS. A key that only the
    other set has, or items appended to a reference list, are additions (reference value '<added>'), not
    differences."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in IGNORED_KEYS:
                continue
            if k not in a:
                out.append((f'{path}.{k}', '<added>', b[k]))
            elif k not in b:
                out.append((f'{path}.{k}', a.get(k, '<absent>'), b.get(k, '<absent>')))
            else:
                out += meta_differences(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, list) and isinstance(b, list) and len(a) <= len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out += meta_differences(x, y, f'{path}[{i}]')
        if len(b) > len(a):  # the other list extends the reference list: an addition
            out.append((f'{path}[{len(a)}:]', '<added>', b[len(a):]))
    else:
        x, y = normalise(a), normalise(b)
        same = x == y and type(x) is type(y) or (isinstance(x, (int, float)) and isinstance(y, (int, float))
                                                 and not isinstance(x, bool) and not isinstance(y, bool)
                                                 and (x == y or (math.isnan(x) and math.isnan(y))))
        if not same:
            out.append((path, a, b))
    return out


def short(v, n=90):
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= n else s[:n - 3] + '...'


def t7_difference(a, b):
    """None when two Torch7 files are the same bytes; else a description (content equal or not)."""
    if a == b:
        return None
    with tempfile.TemporaryDirectory() as folder:
        trees = []
        for name, data in (('a.t7', a), ('b.t7', b)):
            path = os.path.join(folder, name)
            with open(path, 'wb') as f:
                f.write(data)
            try:
                trees.append(serialization.load(path))
            except GunnError as e:
                return f'bytes differ ({len(a)} vs {len(b)}) and cannot be read: {e}'
        diffs = t7_differences(*trees)
    if not diffs:
        return 'CONTENT-EQUAL'
    return f'content differs: {"; ".join(diffs[:3])}'


def t7_differences(a, b, path='', seen=None):
    """Paths where two loaded Torch7 trees differ, comparing tables as unordered maps (LuaJIT writes a
    table's keys in another order from one process to the next) and tensors element for element."""
    seen = set() if seen is None else seen
    if (id(a), id(b)) in seen:
        return []
    seen.add((id(a), id(b)))
    if serialization.is_module(a) and serialization.is_module(b):
        if a.torch_typename() != b.torch_typename():
            return [f'{path}: {a.torch_typename()} vs {b.torch_typename()}']
        return t7_differences(a._obj, b._obj, path, seen)
    if isinstance(a, serialization.TensorView) and isinstance(b, serialization.TensorView):
        a, b = a.array(path, 'a'), b.array(path, 'b')
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):  # a tensor, or a storage
        difference = tensor_difference(a, b)
        return [] if difference is None else [f'{path}: {difference}']
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            name = int(k) if isinstance(k, float) and k.is_integer() else k
            if k not in a or k not in b:
                out.append(f'{path}.{name}: present in one file only')
            else:
                out += t7_differences(a[k], b[k], f'{path}.{name}', seen)
        return out
    return [] if type(a) is type(b) and a == b else [f'{path}: {a!r} vs {b!r}']


def compare_case(ref, other, name, files):
    """(tensors equal, tensor count, [difference lines as (item, text)])."""
    diffs, notes_only = [], []
    h1, t1 = read_case(name, ref)
    if not os.path.isfile(os.path.join(other, name + '.json')):
        return 0, len(h1['tensor_order']), [(name, 'missing in the other set')], []
    h2, t2 = read_case(name, other)
    equal = 0
    for key in h1['tensor_order']:
        if key not in h2['tensors']:
            diffs.append((key, 'tensor missing'))
            continue
        x, y = t1[key], t2[key]
        d = tensor_difference(x, y)
        if d is not None and key.endswith('.t7') and x.dtype == np.uint8 and y.dtype == np.uint8:
            d = t7_difference(x.tobytes(), y.tobytes())
            if d == 'CONTENT-EQUAL':
                notes_only.append((key, 'Torch7 file: bytes differ, content equal (serialisation order)'))
                d = None
        if d is None:
            equal += 1
        else:
            diffs.append((key, d))
    added = [key for key in h2['tensor_order'] if key not in h1['tensors']]
    if added:
        notes_only.append(('tensors', f'added: {", ".join(added)}'))
    if h1['tensor_order'] != [k for k in h2['tensor_order'] if k in h1['tensors']]:
        diffs.append(('tensor_order', 'another order'))
    for path, x, y in meta_differences(h1['meta'], h2['meta']):
        if x == '<added>':
            notes_only.append((path, f'added: {short(y)}'))
        else:
            diffs.append((path, f'{short(x)} vs {short(y)}'))
    for f in files:
        if f in (name + '.json', h1['bin_file']):
            continue
        p1, p2 = os.path.join(ref, f), os.path.join(other, f)
        if not os.path.isfile(p2):
            diffs.append((f, 'file missing'))
            continue
        with open(p1, 'rb') as x, open(p2, 'rb') as y:
            a, b = x.read(), y.read()
        if a != b:
            d = t7_difference(a, b) if f.endswith('.t7') else f'{len(a)} vs {len(b)} bytes'
            if d == 'CONTENT-EQUAL':
                notes_only.append((f, 'Torch7 file: bytes differ, content equal (serialisation order)'))
            else:
                diffs.append((f, d))
    return equal, len(h1['tensor_order']), diffs, notes_only


def expected(expects, name, item):
    return name in expects or f'{name}:{item}' in expects or any(
        e.startswith(name + ':') and item.startswith(e.split(':', 1)[1] + '.') for e in expects)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('reference')
    p.add_argument('other')
    p.add_argument('--cases', help='comma-separated case names (default: every case of the reference)')
    p.add_argument('--expect', action='append', default=[], help='CASE or CASE:ITEM whose difference is expected')
    p.add_argument('--details', type=int, default=12, help='difference lines shown per case (default 12)')
    a = p.parse_args(argv)
    for d in (a.reference, a.other):
        if not os.path.isdir(d):
            print(f'python -m golden.compare: not a folder: {d}', file=sys.stderr)
            return 2
    cases = {name: files for name, kind, files in sets.listed(a.reference)}
    if a.cases:
        wanted = a.cases.split(',')
        unknown = [c for c in wanted if c not in cases]
        if unknown:
            print(f'python -m golden.compare: not in {a.reference}: {", ".join(unknown)}', file=sys.stderr)
            return 2
        cases = {c: cases[c] for c in wanted}
    rows, notes, failed = [], [], False
    for name, files in cases.items():
        equal, total, diffs, infos = compare_case(a.reference, a.other, name, files)
        unexpected = [d for d in diffs if not expected(a.expect, name, d[0])]
        failed |= bool(unexpected)
        verdict = 'equal' if not diffs else ('expected differences' if not unexpected else 'DIFFERS')
        n_meta = sum(d[0].startswith('meta') for d in diffs)
        n_files = sum(d[0] in files for d in diffs)
        rows.append((name, f'{equal}/{total}', 'equal' if n_meta == 0 else f'{n_meta} keys differ',
                     f"{len(files) - 2 - n_files}/{len(files) - 2}" if len(files) > 2 else "-", verdict))
        for item, text in diffs[:a.details]:
            notes.append(f'{name}: {item}: {text}' + ('' if expected(a.expect, name, item) else '  [unexpected]'))
        if len(diffs) > a.details:
            notes.append(f'{name}: ... {len(diffs) - a.details} more differences')
        notes += [f'{name}: {item}: {text}  [note]' for item, text in infos]
    head = ('case', 'tensors bit-equal', 'meta', 'other files equal', 'verdict')
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    fmt = '  '.join(f'{{:<{w}}}' for w in widths)
    print('\n'.join(fmt.format(*r).rstrip() for r in [head, ['-' * w for w in widths]] + rows))
    if notes:
        print('\n' + '\n'.join(notes))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
