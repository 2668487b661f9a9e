"""A minimal reader of Torch7's binary serialisation (torch.save), numpy only, for comparing two files by
content: LuaJIT randomises its string hashes per process, so the same Lua table can be written with its
keys in another order (and its objects with other reference numbers) from one run to the next."""
import struct

import numpy as np

_ELEMENT = {'Byte': 'u1', 'Char': 'i1', 'Short': '<i2', 'Int': '<i4', 'Long': '<i8', 'Float': '<f4',
            'Double': '<f8'}


class Obj:
    """A Torch class instance: its class name and its content."""
    def __init__(self, cls):
        self.cls, self.value = cls, None


def load(data):
    pos, refs = 0, {}

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take('<i')
        s = data[pos:pos + n]
        pos += n
        return s.decode('latin1')

    def read():
        nonlocal pos
        kind = take('<i')
        if kind == 0:
            return None
        if kind == 1:
            return take('<d')
        if kind == 2:
            return string()
        if kind == 5:
            return bool(take('<i'))
        if kind not in (3, 4):
            raise ValueError(f'unsupported object type {kind} at byte {pos - 4}')
        index = take('<i')
        if index in refs:
            return refs[index]
        if kind == 3:
            table = {}
            refs[index] = table
            for _ in range(take('<i')):
                k = read()
                table[k] = read()
            return table
        version = string()
        cls = string() if version.startswith('V ') else version
        obj = Obj(cls)
        refs[index] = obj
        name = cls.replace('torch.', '')
        if name.endswith('Storage'):
            n = take('<q')
            dtype = np.dtype(_ELEMENT[name[:-7]])
            obj.value = np.frombuffer(data, dtype, n, pos).copy()
            pos += n * dtype.itemsize
        elif name.endswith('Tensor'):
            dims = take('<i')
            size = [take('<q') for _ in range(dims)]
            stride = [take('<q') for _ in range(dims)]
            offset = take('<q') - 1
            storage = read()
            if dims == 0 or storage is None:
                obj.value = np.zeros([0])
            else:
                flat = storage.value
                obj.value = np.lib.stride_tricks.as_strided(
                    flat[offset:], size, [s * flat.itemsize for s in stride]).copy()
        else:
            obj.value = read()
        return obj

    return read()


def differences(a, b, path='', seen=None):
    """Paths where a and b (read by load) differ, comparing tables as unordered maps."""
    seen = set() if seen is None else seen
    if (id(a), id(b)) in seen:
        return []
    seen.add((id(a), id(b)))
    if isinstance(a, Obj) and isinstance(b, Obj):
        if a.cls != b.cls:
            return [f'{path}: {a.cls} vs {b.cls}']
        if isinstance(a.value, np.ndarray):
            x, y = a.value, b.value
            if x.shape == y.shape and x.tobytes() == y.tobytes():
                return []
            if x.shape != y.shape:
                return [f'{path}: {a.cls} of shape {x.shape} vs {y.shape}']
            where = np.flatnonzero(x.reshape(-1) != y.reshape(-1))
            return [f'{path}: {a.cls} differs in {where.size} of {x.size} elements (first at flat index '
                    f'{where[0] if where.size else "?"}: {x.reshape(-1)[where[0]] if where.size else ""} vs '
                    f'{y.reshape(-1)[where[0]] if where.size else ""})']
        return differences(a.value, b.value, path, seen)
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            name = int(k) if isinstance(k, float) and k.is_integer() else k
            if k not in a or k not in b:
                out.append(f'{path}.{name}: present in one file only')
            else:
                out += differences(a[k], b[k], f'{path}.{name}', seen)
        return out
    return [] if type(a) is type(b) and a == b else [f'{path}: {a!r} vs {b!r}']
