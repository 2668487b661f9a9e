"""The golden data of the original Lua code and the parity report (shared by parity.py and the checks of
golden/): reading a case (NAME.json + NAME.bin, format in docs/PARITY.md and lua/README.md), relative
errors, copying golden weights into a module, and the report table."""
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn

import opts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPACT = os.path.join(ROOT, 'golden', 'compact')  # the golden set kept in the repository


def load_case(name, folder=COMPACT):
    """(meta, {tensor name: read-only numpy array}) of the golden case NAME in folder."""
    header, tensors = read_case(name, folder)
    return header['meta'], tensors


def read_case(name, folder):
    """(the case's json header, {tensor name: read-only numpy array}), in the header's tensor order."""
    with open(os.path.join(folder, name + '.json')) as f:
        header = json.load(f)
    with open(os.path.join(folder, header['bin_file']), 'rb') as f:
        blob = f.read()
    if len(blob) != header['bin_size']:
        raise ValueError(f'{header["bin_file"]}: {len(blob)} bytes, the header says {header["bin_size"]}')
    tensors = {}
    for key, spec in header['tensors'].items():
        dtype = np.dtype(spec['dtype']).newbyteorder('<')
        count = int(np.prod(spec['shape']))
        if count * dtype.itemsize != spec['nbytes']:
            raise ValueError(f'{name}: tensor {key} has {spec["nbytes"]} bytes for shape {spec["shape"]}')
        tensors[key] = np.frombuffer(blob, dtype, count, spec['offset']).reshape(spec['shape'])
    return header, tensors


def rel_err(ours, lua):
    ours = torch.as_tensor(ours).detach().double().cpu()
    lua = torch.from_numpy(np.array(lua, dtype=np.float64))
    scale = lua.abs().max().item()
    return (ours - lua).abs().max().item() / (scale if scale > 0 else 1.0)


class Report:
    def __init__(self):
        self.rows = []
        self.notes = {}  # row index -> (verdict, text) of the rows below

    def add(self, case, quantity, precision, err, tol, absolute=False, known=None, problem=None):
        """One compared quantity. known: why the port differs from the Lua on purpose (a bug of the Lua);
        the row is listed as a known difference, with that reason, and does not fail (err may be None
        when the Lua gives nothing to compare). problem: a check besides the number that failed (the
        random draws, the in-place behaviour, a missing file; err may then be None); the row fails, with that
        reason."""
        if known is not None:
            ok = True
            self.notes[len(self.rows)] = ('known Lua bug', known)
        else:
            ok = problem is None and err <= tol and math.isfinite(err)
            if problem is not None:
                self.notes[len(self.rows)] = ('FAIL', problem)
        self.rows.append((case, quantity, precision, err, tol, 'abs' if absolute else 'rel', ok))
        return ok

    @property
    def passed(self):
        return all(row[-1] for row in self.rows)

    def part(self, start, stop=None):
        """The rows from start to stop (one case's) as a report of their own."""
        stop = len(self.rows) if stop is None else stop
        part = Report()
        part.rows = self.rows[start:stop]
        part.notes = {i - start: note for i, note in self.notes.items() if start <= i < stop}
        return part

    def summary(self):
        known = sum(verdict == 'known Lua bug' for verdict, _ in self.notes.values())
        within = sum(row[-1] for row in self.rows) - known
        text = f'{within}/{len(self.rows) - known} comparisons within tolerance'
        return text + (f', {known} known differences (bugs of the Lua, listed above)' if known else '')

    def table(self):
        head = ('case', 'quantity', 'precision', 'max error', 'tolerance', 'verdict')
        body, footnotes = [], []
        for i, (c, q, p, e, t, kind, ok) in enumerate(self.rows):
            verdict = 'ok' if ok else 'FAIL'
            if i in self.notes:
                footnotes.append(f'[{len(footnotes) + 1}] {c}: {self.notes[i][1]}')
                verdict = f'{self.notes[i][0]} [{len(footnotes)}]'
            body.append((c, q, p, '-' if e is None else f'{e:.2e} {kind}', f'{t:.0e}', verdict))
        widths = [max(len(str(r[i])) for r in [head] + body) for i in range(len(head))]
        fmt = '  '.join(f'{{:<{w}}}' for w in widths)
        lines = [fmt.format(*r).rstrip() for r in [head, ['-' * w for w in widths]] + body]
        return '\n'.join(lines + ([''] + footnotes if footnotes else []))


def model_opt(netType, dataset, memory, kernels='aten'):
    return opts.defaults(netType=netType, dataset=dataset, optnet=memory == 'recompute',
                         shareGradInput=memory == 'share', kernels=kernels)


def bns(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def load_golden_state(module, meta, tensors, param_prefix, bn_prefix=None):
    """Copy golden parameters (and running statistics) into module by Lua order, checking every shape."""
    params = list(module.parameters())
    assert len(params) == len(meta['params']), (len(params), len(meta['params']))
    with torch.no_grad():
        for p, info in zip(params, meta['params']):
            assert list(p.shape) == info['shape'], (info['name'], tuple(p.shape), info['shape'])
            p.copy_(torch.from_numpy(np.array(tensors[param_prefix + info['name']])))
        if bn_prefix is not None:
            for bn, info in zip(bns(module), meta['bn_modules']):
                bn.running_mean.copy_(torch.from_numpy(np.array(tensors[f'{bn_prefix}{info["name"]}.running_mean'])))
                bn.running_var.copy_(torch.from_numpy(np.array(tensors[f'{bn_prefix}{info["name"]}.running_var'])))


def worst(pairs):
    return max((rel_err(a, b) for a, b in pairs), default=0.0)


def bn_errors(module, meta, tensors, prefix):
    return worst((t, tensors[f'{prefix}{info["name"]}.{field}'])
                 for bn, info in zip(bns(module), meta['bn_modules'])
                 for field, t in (('running_mean', bn.running_mean), ('running_var', bn.running_var)))


def zero_grad_bias(name):
    # the biases whose gradient is mathematically zero in training mode (golden README)
    return name.endswith('.1.2.8.bias') or name.endswith('.1.1.2.bias')
