"""Seeded mutations of a small valid .t7 and a small valid .pt file, read by the port's loaders:

    python tests/fuzz_files.py t7|pt COUNT SEED OUT.json

tests/test_hostile_files.py runs it in a child process, which caps its own heap, so that a crash (a signal)
or an allocation the file does not justify (MemoryError, which the loaders never turn into a refusal) fails
the test. Each mutation must be refused with a one-line GunnError, or accepted with every tensor equal to a
reference decode: element by element from the storage and the sizes, strides and offset the file states.
Where the test wrote those fields itself (the 'view' and 'types' mutations), it also knows which outcome is
right. OUT.json gets the counts and every failure."""
import collections
import io
import json
import math
import os
import pickle
import random
import struct
import sys
import tempfile
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch7_writer as w  # noqa: E402

from support import fileio  # noqa: E402
from support.errors import GunnError  # noqa: E402
from torch7 import serialization  # noqa: E402

EXTREMES = [0, 1, 2, 3, 7, 100, -1, -5, 2**31 - 1, 2**31, 2**40, 2**62, -2**63]


def gather(data, sizes, strides, offset):
    """The reference decode of a view: element i of the tensor is data[offset + sum(i_k * stride_k)]."""
    if math.prod(sizes) == 0:
        return np.empty(sizes, data.dtype)
    flat = [data[offset + sum(i * s for i, s in zip(index, strides))] for index in np.ndindex(*sizes)]
    return np.array(flat, dtype=data.dtype).reshape(sizes)


def fits(sizes, strides, offset, storage_len, itemsize, file_bytes):
    """Whether a view is one the loaders must accept."""
    if min((*sizes, *strides, offset), default=0) < 0:
        return False
    count = math.prod(sizes)
    if count == 0:
        return True
    last = offset + sum((n - 1) * s for n, s in zip(sizes, strides))
    return last < storage_len and count * itemsize <= min(file_bytes, storage_len * itemsize)


class Outcome:
    def __init__(self):
        self.counts, self.failures = collections.Counter(), []

    def fail(self, mutation, problem):
        self.failures.append(f'{mutation}: {problem}')


def one_line(e):
    return '\n' not in str(e) and str(e) != ''


# --- .t7 ------------------------------------------------------------------------------------------------

def t7_tensors():
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    return {'conv': w.raw(conv), 'bn': w.raw(rng.standard_normal(4).astype(np.float32)),
            'linear': w.raw(rng.standard_normal((2, 4)))}


# where each tensor of t7_file is in the loaded tree (t7_views' names)
T7_NAMES = {'conv': 'root.modules.1.weight', 'bn': 'root.modules.2.weight', 'linear': 'root.modules.3.weight'}


def t7_file(tensors):
    tree = w.module('nn.Sequential', modules=w.lua_list([
        w.module('nn.SpatialConvolution', weight=tensors['conv'], kW=3, kH=3),
        w.module('nn.SpatialBatchNormalization', weight=tensors['bn'], eps=1e-5),
        w.module('nn.Linear', weight=tensors['linear'])]))
    f = io.BytesIO()
    w._Writer(f).value(tree)
    return f.getvalue()


def t7_views(obj, name='root', seen=None):
    """(name, TensorView) of every tensor in a loaded tree (a crafted file may make it a graph)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, serialization.TensorView):
        yield name, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from t7_views(value, f'{name}.{key.decode("latin1") if isinstance(key, bytes) else key}', seen)
    elif serialization.is_module(obj):
        yield from t7_views(obj._obj, name, seen)


def mutate_t7(rng):
    """(description, file bytes, the tensor whose fields were set and whether it must load, or None)."""
    tensors = t7_tensors()
    kind = rng.choice(['view', 'view', 'view', 'types', 'count', 'bytes', 'bytes', 'truncate'])
    target = rng.choice(sorted(tensors))
    t = tensors[target]
    if kind == 'view':
        field = rng.choice(['sizes', 'strides', 'offset'])
        value = rng.choice(EXTREMES)
        if field == 'offset':
            t = t._replace(offset=value)
        else:
            values = list(getattr(t, field))
            values[rng.randrange(len(values))] = value
            t = t._replace(**{field: tuple(values)})
        tensors[target] = t
        data = t7_file(tensors)
        itemsize = t.data.dtype.itemsize
        return f'{target} {field} {value}', data, (target, t, fits(t.sizes, t.strides, t.offset, t.count, itemsize,
                                                                   len(data)))
    if kind == 'types':
        names = ['torch.FloatTensor', 'torch.DoubleTensor', 'torch.LongTensor', 'torch.ByteTensor',
                 'torch.HalfTensor', 'torch.FooTensor', 'nn.Linear', '']
        field = rng.choice(['cls', 'storage_cls'])
        value = rng.choice(names)
        if field == 'storage_cls':
            value = value.replace('Tensor', 'Storage')
        tensors[target] = t._replace(**{field: value})
        unchanged = tensors[target] == t
        return f'{target} {field} {value!r}', t7_file(tensors), (target, t, True) if unchanged else None
    data = bytearray(t7_file(tensors))
    if kind == 'count':
        tensors[target] = t._replace(count=rng.choice(EXTREMES + [t.count - 1, t.count + 1]))
        return f'{target} count {tensors[target].count}', t7_file(tensors), None
    if kind == 'truncate':
        cut = rng.randrange(len(data))
        return f'cut at {cut}', bytes(data[:cut]), 'refused'
    changes = []
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data))
        if rng.random() < 0.5:
            data[at] ^= 1 << rng.randrange(8)
            changes.append(f'bit at {at}')
        else:
            fmt = rng.choice(['<i', '<q'])
            value = rng.choice(EXTREMES)
            packed = struct.pack('<q', value)[:struct.calcsize(fmt)]
            data[at:at + len(packed)] = packed
            changes.append(f'{fmt} {value} at {at}')
    return 'bytes ' + ', '.join(changes), bytes(data), None


def check_t7(outcome, rng, folder):
    description, data, expect = mutate_t7(rng)
    path = os.path.join(folder, 'fuzz.t7')
    with open(path, 'wb') as f:
        f.write(data)
    try:
        root = serialization.load(path)
        arrays = {name: (view, view.array(name, path)) for name, view in t7_views(root)}
    except GunnError as e:
        outcome.counts['refused'] += 1
        if not one_line(e):
            outcome.fail(description, f'refusal is not one line: {e!r}')
        elif expect not in (None, 'refused') and expect[2]:
            outcome.fail(description, f'a valid view was refused: {e}')
        elif expect not in (None, 'refused') and T7_NAMES[expect[0]] not in str(e):
            outcome.fail(description, f'the refusal does not name the tensor: {e}')
        return
    outcome.counts['accepted'] += 1
    if expect == 'refused' or (expect is not None and not expect[2]):
        outcome.fail(description, 'accepted, but the file states a view outside its storage')
    for name, (view, array) in arrays.items():
        if view.storage is not None and not np.array_equal(array, gather(view.storage, view.sizes, view.strides,
                                                                         view.offset), equal_nan=True):
            outcome.fail(description, f'{name} differs from the reference decode')
    if expect not in (None, 'refused'):
        target, t, _ = expect
        if not np.array_equal(arrays[T7_NAMES[target]][1], gather(t.data, t.sizes, t.strides, t.offset)):
            outcome.fail(description, f'{target} is not what the test wrote')


# --- .pt ------------------------------------------------------------------------------------------------

class _Storage:
    def __init__(self, storage_type, key, numel):
        self.storage_type, self.key, self.numel = storage_type, key, numel


class _View:
    """A tensor as torch.save pickles it, with whatever fields the test gives."""

    def __init__(self, storage, offset, sizes, strides):
        self.args = (storage, offset, tuple(sizes), tuple(strides), False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return 'storage', obj.storage_type, obj.key, 'cpu', obj.numel
        return None


def pt_file(views, records):
    """A checkpoint zip as torch.save lays it out, with data.pkl pickled from the given views."""
    template = io.BytesIO()
    torch.save({}, template)
    pickled = io.BytesIO()
    _Pickler(pickled, protocol=2).dump({'model': views, 'epoch': 3})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(template.getvalue())) as z, zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as o:
        prefix = z.namelist()[0].split('/')[0]
        for name in z.namelist():
            o.writestr(name, pickled.getvalue() if name.endswith('/data.pkl') else z.read(name))
        for key, data in records.items():
            o.writestr(f'{prefix}/data/{key}', data.tobytes())
    return out.getvalue()


def mutate_pt(rng):
    data = {'0': np.arange(20, dtype=np.float32) * 0.5, '1': np.linspace(-1, 1, 8)}
    fields = {'w': [torch.FloatStorage, '0', 20, 3, [3, 5], [5, 1]], 'b': [torch.DoubleStorage, '1', 8, 0, [2, 4], [4, 1]]}
    kind = rng.choice(['view', 'view', 'view', 'types', 'bytes', 'bytes', 'truncate'])
    target = rng.choice(sorted(fields))
    expect = None
    if kind == 'view':
        index = rng.choice([3, 4, 5])
        value = rng.choice(EXTREMES)
        if index == 3:
            fields[target][3] = value
        else:
            fields[target][index][rng.randrange(2)] = value
        storage_type, key, numel, offset, sizes, strides = fields[target]
        expect = target, fits(sizes, strides, offset, numel, data[key].itemsize, 10**9)
        description = f'{target} field {index} {value}'
    elif kind == 'types':
        choice = rng.choice([torch.DoubleStorage, torch.LongStorage, torch.HalfStorage, torch.FloatStorage,
                             torch.ByteStorage, os.system])
        fields[target][0] = choice
        description = f'{target} storage type {getattr(choice, "__name__", choice)}'
    views = {name: _View(_Storage(t, k, n), o, s, st) for name, (t, k, n, o, s, st) in fields.items()}
    file = bytearray(pt_file(views, data))
    if kind == 'truncate':
        cut = rng.randrange(len(file))
        return f'cut at {cut}', bytes(file[:cut]), 'refused', fields, data
    if kind == 'bytes':
        changes = []
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(file))
            file[at] ^= 1 << rng.randrange(8)
            changes.append(str(at))
        description = 'bits at ' + ', '.join(changes)
    return description, bytes(file), expect, fields, data


def pt_tensors(obj, name='root'):
    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from pt_tensors(value, f'{name}.{key}')
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from pt_tensors(value, f'{name}.{i}')


def check_pt(outcome, rng, folder):
    description, file, expect, fields, data = mutate_pt(rng)
    path = os.path.join(folder, 'fuzz.pt')
    with open(path, 'wb') as f:
        f.write(file)
    try:
        loaded = fileio.load(path, 'checkpoint file')
    except GunnError as e:
        outcome.counts['refused'] += 1
        if not one_line(e):
            outcome.fail(description, f'refusal is not one line: {e!r}')
        elif isinstance(expect, tuple) and expect[1]:
            outcome.fail(description, f'a valid view was refused: {e}')
        return
    outcome.counts['accepted'] += 1
    if expect == 'refused' or (isinstance(expect, tuple) and not expect[1]):
        outcome.fail(description, 'accepted, but the file states a view outside its storage')
    for name, tensor in pt_tensors(loaded):
        storage = np.frombuffer(bytes(tensor.untyped_storage()), tensor.numpy().dtype)
        if not np.array_equal(tensor.numpy(), gather(storage, tensor.shape, tensor.stride(),
                                                     tensor.storage_offset()), equal_nan=True):
            outcome.fail(description, f'{name} differs from the reference decode')
    if isinstance(expect, tuple):
        storage_type, key, numel, offset, sizes, strides = fields[expect[0]]
        ours = loaded['model'][expect[0]].numpy()
        if not np.array_equal(ours, gather(data[key], sizes, strides, offset)):
            outcome.fail(description, f'{expect[0]} is not what the test wrote')


def cap_heap(extra_bytes):
    """Let the process's heap grow by at most extra_bytes from here (Linux counts malloc and anonymous
    mappings in RLIMIT_DATA, not the libraries torch maps): a larger allocation raises MemoryError."""
    import resource
    with open('/proc/self/status') as f:
        data_kb = int(next(line for line in f if line.startswith('VmData:')).split()[1])
    limit = data_kb * 1024 + extra_bytes
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def main(kind, count, seed, out):
    cap_heap(256 * 2**20)  # the files are a few KB
    outcome = Outcome()
    check = {'t7': check_t7, 'pt': check_pt}[kind]
    with tempfile.TemporaryDirectory() as folder:
        for i in range(count):
            check(outcome, random.Random(seed * 100003 + i), folder)
    with open(out, 'w') as f:
        json.dump({'counts': outcome.counts, 'failures': outcome.failures}, f, indent=1)


if __name__ == '__main__':
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
