"""The data half of the parity report: the transforms, the dataset pipelines and image decoding against the
golden data of the original Lua (a case of kind transforms: 96 cases in the reference set, 85 in the compact
one; ``python parity.py`` runs them).

The Lua recorded every random draw it made. ``ReplayDraws`` answers the port's draws from that log (through
``datasets.transforms.draws_from``), checks that each draw has the kind and the arguments the Lua's had, and
that none is left over, so that the port runs on exactly the Lua's random numbers. Each case gives one row
(the one-row-source Scale case a second one, for the row the Lua leaves undefined): its output, compared with
the Lua's, plus the draws and the in-place behaviour (whether the input changed, whether the output is the
input object or shares its storage), which must match exactly.

Tolerances: 0 (bit for bit) wherever the port computes exactly what the Lua computes, which is every case
except those below; 2e-6 x max(1, max |lua|) absolute for the cases whose arithmetic the port rounds
differently at the float32-ulp level (Torch7's AVX2 kernels fuse the multiply-adds of Saturation's and
Contrast's grey blends, and so does the port where torch's kernels do, but the Lua's BLAS leaves the last
elements of a small plane unfused; image.rotate evaluates one bilinear term in float32, the port all four in
double).
Every real deviation seen so far (8-bit-only 16-bit PNGs, the image package's bugs) is 1e-3 or more.

Rows where the Lua's image package has a bug are listed as known differences with the reason and what the
port does instead; they do not fail the report.
"""
import json
import os
import tempfile

import numpy as np
import torch

import opts
from datasets import cifar, imagenet
from datasets import transforms as t
from support.errors import GunnError

ULP_TOLERANCE = 2e-6
# transforms whose float32 rounding differs from the Lua's (see above); a case containing one gets the
# ulp tolerance, every other case must match bit for bit
ULP_LEVEL = ('saturation', 'contrast', 'rotation')
PORT_INSTEAD = {
    'decode_jpeg_cmyk': 'the port converts CMYK to RGB (as torchvision and Pillow do)',
    'decode_png_palette_trns': 'the port returns the palette colours and drops the transparency, as for RGBA',
    'decode_png_gray_alpha': 'the port loads it: grey replicated to RGB, alpha dropped',
    'scale_w4h1_to2': 'the port repeats the source row there, like every other row',
}


class DrawMismatch(Exception):
    pass


class ReplayDraws:
    """A draw source (the methods of transforms.TorchDraws) that answers from the Lua's draw log."""

    def __init__(self, draws):
        self.draws, self.used = draws, 0

    def _next(self, fn, args):
        if self.used == len(self.draws):
            raise DrawMismatch(f'the port draws {fn}{tuple(args)} after the {len(self.draws)} draws of the Lua')
        draw = self.draws[self.used]
        self.used += 1
        lua_args = draw['args'] or ([0, 1] if draw['fn'] == 'torch.uniform' else [])
        if draw['fn'] != fn or [float(a) for a in lua_args] != [float(a) for a in args]:
            raise DrawMismatch(f'draw {self.used}: the port draws {fn}{tuple(args)}, the Lua drew '
                               f'{draw["fn"]}{tuple(lua_args)}')
        return draw

    def uniform(self, a=0.0, b=1.0):
        return self._next('torch.uniform', [a, b])['result']

    def random(self, a, b):
        return self._next('torch.random', [a, b])['result']

    def randperm(self, n):
        return [k - 1 for k in self._next('torch.randperm', [n])['result']]

    def normal(self, n, mean, std):
        draw = self._next('Tensor:normal', [mean, std])
        if draw['size'] != [n]:
            raise DrawMismatch(f'draw {self.used}: the port fills {n} normal values, the Lua {draw["size"]}')
        return torch.tensor(draw['result'], dtype=torch.float64)

    def finish(self):
        if self.used != len(self.draws):
            raise DrawMismatch(f'the port made {self.used} draws, the Lua {len(self.draws)}')


def build(spec):
    """The port's transform for a Lua constructor call {name, args} (meta.cases[case].transform)."""
    name, args = spec['name'], spec['args']
    if name in ('Compose', 'RandomOrder'):
        return getattr(t, name)([build(s) for s in args[0]])
    if name == 'ColorJitter':
        return t.ColorJitter(**args[0])
    return getattr(t, name)(*args)


def _ulp_level(meta):
    described = meta['pipeline'] if meta['kind'] == 'pipeline' else json.dumps(meta['transform'])
    return any(name in described.lower() for name in ULP_LEVEL)


def tolerance(meta, lua):
    return ULP_TOLERANCE * max(1.0, float(np.abs(lua).max(initial=0))) if _ulp_level(meta) else 0.0


def _tensor(array):
    return torch.from_numpy(np.array(array))


def _in_place_facts(before, inp, out):
    return {'input_modified_in_place': not torch.equal(before, inp),
            'output_is_input': out is inp,
            'output_shares_input_storage': out.untyped_storage().data_ptr() == inp.untyped_storage().data_ptr()}


def run_with_draws(transform, inp, meta):
    """(output, problem or None): transform(inp) on the Lua's draws, with the draws and the in-place
    behaviour checked against meta."""
    before = inp.clone()
    try:
        with t.draws_from(ReplayDraws(meta['draws'])) as source:
            out = transform(inp)
            source.finish()
    except DrawMismatch as e:
        return None, str(e)
    except Exception as e:  # a broken port is a failed row, not the end of the report
        return None, f'raised {type(e).__name__}: {e}'
    facts = _in_place_facts(before, inp, out)
    wrong = [f'{k}: port {v}, Lua {meta[k]}' for k, v in facts.items() if v != meta[k]]
    return out, '; '.join(wrong) or None


def _compare(report, case, meta, out, lua, problem, region=(...,)):
    tol = tolerance(meta, lua)
    if problem is None and tuple(out.shape) != lua.shape:
        problem = f'output shape {tuple(out.shape)}, Lua {lua.shape}'
    err = float('inf') if problem else float((out[region].double() - _tensor(lua[region]).double()).abs().max())
    draws = len(meta.get('draws', ()))
    report.add(case, f'output, {draws} draw{"" if draws == 1 else "s"}, in place', 'float32', err, tol,
               absolute=True, problem=problem)


def _dataset(case_meta, raw, folder):
    if case_meta['dataset'] == 'imagenet':
        os.makedirs(os.path.join(folder, case_meta['split']), exist_ok=True)
        info = {'classList': [], case_meta['split']: {'imagePath': torch.zeros(1, 1, dtype=torch.uint8),
                                                      'imageClass': torch.zeros(1, dtype=torch.int64)}}
        opt = opts.defaults(data=folder, gen=folder, dataset='imagenet', tenCrop=case_meta['tenCrop'])
        return imagenet.Dataset(info, opt, case_meta['split'])
    info = {'classList': [], case_meta['split']: {'data': _tensor(raw)[None],
                                                  'labels': torch.zeros(1, dtype=torch.int64)}}
    return cifar.Dataset(info, opts.defaults(dataset=case_meta['dataset']), case_meta['split'])


def check_transform(report, case, meta, tensors):
    inp, lua = _tensor(tensors[f'{case}/input']), tensors[f'{case}/output']
    out, problem = run_with_draws(build(meta['transform']), inp, meta)
    if meta.get('compare_region') == 'all_but_last_row':
        _compare(report, case, meta, out, lua, problem, region=(..., slice(0, -1), slice(None)))
        if out is not None:
            report.add(case, 'last row', 'float32', float((out[..., -1, :] - _tensor(lua[..., -1, :])).abs().max()),
                       0.0, absolute=True, known=f'{meta["lua_bug"]} Instead, {PORT_INSTEAD[case]}.')
    else:
        _compare(report, case, meta, out, lua, problem)


def check_pipeline(report, case, meta, tensors, folder):
    """Through the real dataset classes: CIFAR from the stored uint8 image (get() is checked too),
    ImageNet from the stored float image."""
    dataset = _dataset(meta, tensors.get(f'{case}/raw'), folder)
    inp = _tensor(tensors[f'{case}/input'])
    problem = None
    if meta['dataset'] != 'imagenet':
        got = dataset.get(0)['input']
        problem = None if torch.equal(got, inp) else 'get() differs from the Lua CifarDataset:get()'
        inp = got
    out, replay_problem = run_with_draws(dataset.preprocess(), inp, meta)
    _compare(report, case, meta, out, tensors[f'{case}/output'], problem or replay_problem)


def check_decode(report, case, meta, tensors, folder):
    """The file's bytes under its name, through ImagenetDataset.get (the loader of the training data)."""
    os.makedirs(os.path.join(folder, 'val', 'x'), exist_ok=True)
    with open(os.path.join(folder, 'val', 'x', meta['file_name']), 'wb') as f:
        f.write(tensors[f'{case}/file'].tobytes())
    path = np.frombuffer(f'x/{meta["file_name"]}'.encode(), dtype=np.uint8)
    info = {'classList': ['x'], 'val': {'imagePath': torch.from_numpy(path.copy())[None],
                                       'imageClass': torch.zeros(1, dtype=torch.int64)}}
    known = f'{meta["informational_reason"]}. Instead, {PORT_INSTEAD[case]}.' if meta.get('informational') else None
    lua = tensors.get(f'{case}/output')
    quantity = 'decoded pixels' if lua is not None else 'decoded (the Lua raises)'
    try:
        out = imagenet.Dataset(info, opts.defaults(data=folder, gen=folder, dataset='imagenet'), 'val').get(0)['input']
    except GunnError as e:
        report.add(case, quantity, 'float32', float('inf'), 0.0, absolute=True, problem=str(e))
        return
    if lua is None:
        report.add(case, quantity, 'float32', None, 0.0, absolute=True, known=known)
        return
    err = float((out - _tensor(lua)).abs().max()) if tuple(out.shape) == lua.shape else float('inf')
    report.add(case, quantity, 'float32', err, 0.0, absolute=True, known=known)


def check_transforms(report, meta, tensors):
    """Every case of a transforms case (meta, tensors of golden.cases.load_case), in its order."""
    with tempfile.TemporaryDirectory() as folder:
        for case in meta['case_order']:
            case_meta = meta['cases'][case]
            kind = case_meta['kind']
            if kind == 'transform':
                check_transform(report, case, case_meta, tensors)
            elif kind == 'pipeline':
                check_pipeline(report, case, case_meta, tensors, folder)
            else:
                check_decode(report, case, case_meta, tensors, folder)
