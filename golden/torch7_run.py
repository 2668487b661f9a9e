"""Parity of -rng torch7 with real Torch7 runs (case kinds lua_rng, lua_init, lua_run).

* lua_rng: the generator emulation (torch7/generator.py) against Torch7's raw words, every sampler, the
  interleavings of the Box-Muller cache and the seed conversions: all exact.
* lua_init: the initial weights of models/init.lua setup() after torch.manualSeed(seed), bit for bit, and the
  generator state after it, for the case's CIFAR and ImageNet networks.
* lua_run: the case's ``th main.lua`` command (meta.main_args, e.g. ``-netType gunn-15 -dataset cifar10
  -batchSize 8 -nEpochs 2 -manualSeed 5 -LR 0.1 -precision double -nGPU 1 -nThreads 1``) run through main.run
  with ``-rng torch7`` on the stored images, observed from outside (as the Lua run was): every batch's
  indices, inputs, logits, loss, errors and parameter sums after the step, the log lines, the final
  parameters and running statistics (from latest.pt) and the main generator's state at the end.
"""
import contextlib
import hashlib
import io
import os
import re
import tempfile

import numpy as np
import torch

import main
import models
from golden.cases import COMPACT, load_case, model_opt, worst, zero_grad_bias
from torch7.generator import Torch7Generator, read_torch7_state
from train import Trainer

# Float64 tolerances of the training run. An independent float64 replay of the same run reproduced the
# losses to 3.8e-15 and the parameters to 6.4e-14 (golden README); the margins cover BLAS/summation order.
RUN_TOLERANCES = {'loss': 1e-12, 'logits': 1e-10, 'parameters': 1e-11, 'running stats': 1e-11,
                  'parameter sums': 1e-12, 'input checksums': 1e-12, 'zero-gradient BN biases': 1e-12}


def _same_state(state, raw):
    """Our generator state equals the bytes of Torch7's torch.getRNGState()."""
    lua = read_torch7_state(raw)
    return (torch.equal(state['key'], lua['key']) and state['pos'] == lua['pos']
            and state['normal'] == lua['normal'])


# --- lua_rng ------------------------------------------------------------------------------------------------

def _sequences(constants):
    """name -> the Torch7 call of meta.sequences on our generator, as (generator, length) -> values."""
    s_normal, s_unif = constants['S_NORMAL'], constants['S_UNIF']
    f64, f32 = torch.float64, torch.float32

    def scalars(draw):
        return lambda g, n: [draw(g) for _ in range(n)]
    return {
        'uniform': scalars(lambda g: g.uniform()),
        'uniform_ab': scalars(lambda g: g.uniform(-2.5, 0.75)),
        'normal': scalars(lambda g: g.normal(0.5, 2.0)),
        'normal_default': scalars(lambda g: g.normal()),
        'random_ab': scalars(lambda g: g.random(-3, 17)),
        'random_b': scalars(lambda g: g.random(10)),
        'random_0_w': scalars(lambda g: g.random(0, 8)),
        'random_full': scalars(lambda g: g.random(0, 4294967295)),
        'bernoulli': scalars(lambda g: g.bernoulli(0.3)),
        # Tensor fills of bernoulli and random draw element by element like the scalar calls.
        'double_bernoulli': scalars(lambda g: g.bernoulli(0.3)),
        'double_random_ab': scalars(lambda g: g.random(5, 9)),
        'double_normal': lambda g, n: g.normal_fill(n, 0, s_normal, f64),
        'float_normal': lambda g, n: g.normal_fill(n, 0, s_normal, f32),
        'double_uniform': lambda g, n: g.uniform_fill(n, -s_unif, s_unif, f64),
        'float_uniform': lambda g, n: g.uniform_fill(n, -s_unif, s_unif, f32),
        'float_uniform01': lambda g, n: g.uniform_fill(n, 0, 1, f32),
        'rand': lambda g, n: g.uniform_fill(n),
        'randn': lambda g, n: g.normal_fill(n),
    }


def _exact(ours, lua):
    ours = np.asarray(ours.numpy() if isinstance(ours, torch.Tensor) else ours, dtype=lua.dtype)
    return np.array_equal(ours, lua)


def _interleave_step(g, call, saved, seed, s_normal):
    """Runs one call of meta.interleave on g; returns (results, saved state)."""
    calls = {
        'torch.normal()': lambda: [g.normal()],
        'torch.uniform()': lambda: [g.uniform()],
        'torch.normal(3, 0.5)': lambda: [g.normal(3, 0.5)],
        'torch.random(1, 6)': lambda: [g.random(1, 6)],
        'torch.random()': lambda: [g.random()],
        'torch.uniform(2, 3)': lambda: [g.uniform(2, 3)],
        'torch.bernoulli(0.5)': lambda: [g.bernoulli(0.5)],
        'torch.randperm(5)': lambda: [v + 1 for v in g.randperm(5)],
        'torch.DoubleTensor(3):normal()': lambda: g.normal_fill(3).tolist(),
        'torch.FloatTensor(2):normal(0, 0.1)': lambda: g.normal_fill(2, 0, 0.1, torch.float32).tolist(),
        'torch.FloatTensor(3):normal(1, S_NORMAL)': lambda: g.normal_fill(3, 1, s_normal, torch.float32).tolist(),
        'torch.FloatTensor(3):uniform()': lambda: g.uniform_fill(3, 0, 1, torch.float32).tolist(),
        'g = torch.Generator(); torch.manualSeed(g, 99); torch.normal(g)': lambda: [Torch7Generator(99).normal()],
    }
    if call == 'saved = torch.getRNGState()':
        return None, g.state_dict()
    if call == 'torch.setRNGState(saved)':
        g.load_state_dict(saved)
        return None, saved
    if call == 'torch.manualSeed(seed)':
        g.manual_seed(seed)
        return None, saved
    return calls[call](), saved


def _at_position(g, position, seed):
    """g's state is that of a fresh generator after ``position`` words (the cache aside)."""
    fresh = Torch7Generator(seed)
    fresh.skip(position)
    ours, theirs = g.state_dict(), fresh.state_dict()
    return torch.equal(ours['key'], theirs['key']) and ours['pos'] == theirs['pos']


def _randperm_sizes(tensors, label):
    """The n of every seq/LABEL/randperm_n, in the order the Lua drew them (increasing)."""
    found = (re.fullmatch(rf'seq/{label}/randperm_(\d+)', key) for key in tensors)
    return sorted(int(m.group(1)) for m in found if m)


def check_lua_rng(report, case='lua_rng', folder=COMPACT):
    """Sequence lengths, seeds and randperm sizes are those the case stored."""
    meta, t = load_case(case, folder)
    draws = _sequences(meta['constants'])
    raw = sequences = perms = interleave = 0  # mismatches
    checked = {'raw': 0, 'sequences': 0, 'randperm': 0, 'interleave': 0}
    for info in meta['seeds']:
        label, seed = info['label'], info['seed']
        g = Torch7Generator(seed)
        lua_raw = t[f'raw/{label}']
        raw += g.initial_seed != info['initialSeed'] or not _exact(g.words(len(lua_raw)).astype(np.int64), lua_raw)
        checked['raw'] += 1
        for sequence in meta['sequences']:
            lua = t[f'seq/{label}/{sequence["name"]}']
            sequences += not _exact(draws[sequence['name']](Torch7Generator(seed), len(lua)), lua)
            checked['sequences'] += 1
        g = Torch7Generator(seed)  # drawn one after another from one seed
        for n in _randperm_sizes(t, label):
            perms += not _exact([v + 1 for v in g.randperm(n)], t[f'seq/{label}/randperm_{n}'])
            checked['randperm'] += 1
        lua = t[f'seq/{label}/randperm_float_72']
        perms += not _exact([v + 1 for v in Torch7Generator(seed).randperm(len(lua))], lua)
        checked['randperm'] += 1
        g, saved = Torch7Generator(seed), None
        for step in meta['interleave'][label]:
            result, saved = _interleave_step(g, step['call'], saved, seed, meta['constants']['S_NORMAL'])
            wrong = ((result is not None and result != step['result'])
                     or (g.state_dict()['normal'] is not None) != step['normal_cached_after']
                     or not _at_position(g, step['position_after'], seed))
            interleave += wrong
            checked['interleave'] += 1
    conversions = sum(Torch7Generator(c['seed']).initial_seed != c['initialSeed']
                      or Torch7Generator(c['seed']).words(5).tolist() != c['first5'] for c in meta['seed_conversion'])
    report.add(case, f'raw words + initialSeed ({checked["raw"]} seeds)', 'int', raw, 0, absolute=True)
    report.add(case, f'sampler sequences wrong ({checked["sequences"]})', 'mixed', sequences, 0, absolute=True)
    report.add(case, f'randperms wrong ({checked["randperm"]})', 'int', perms, 0, absolute=True)
    report.add(case, f'interleave steps wrong ({checked["interleave"]})', 'mixed', interleave, 0, absolute=True)
    report.add(case, f'seed conversions wrong ({len(meta["seed_conversion"])})', 'int', conversions, 0,
               absolute=True)


# --- lua_init -----------------------------------------------------------------------------------------------

def _sha256(tensor):
    """Of the tensor's bytes (little-endian on every machine torch runs on)."""
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()


def check_lua_init(report, case='lua_init', folder=COMPACT):
    """Initial weights of setup() after torch.manualSeed(seed), for the network of each slot: slot gunn15 (a
    CIFAR network) against the stored tensors (float32, and float64 by its SHA-256 sums), slot gunn18 (an
    ImageNet network) against its SHA-256 sums; the generator state after setup."""
    meta, t = load_case(case, folder)
    for slot in ('gunn15', 'gunn18'):
        info = meta[slot]
        netType, dataset = info['opt']['netType'], info['opt']['dataset']  # the command line opts.parse read
        g = Torch7Generator(meta['seed'])
        params = list(models.create(model_opt(netType, dataset, 'share'), g).parameters())
        row = f'{case} {netType}'
        if slot == 'gunn15':
            wrong = sum(not np.array_equal(p.detach().numpy(), t[f'gunn15/param/{i["name"]}'])
                        for p, i in zip(params, info['params']))
            report.add(row, f'parameter tensors not bit-identical ({len(params)})', 'float32', wrong, 0,
                       absolute=True)
            float64 = info['float64_run']['param_sha256_float64_le']
            wrong = sum(_sha256(p.double()) != h for p, h in zip(params, float64))
            report.add(row, f'parameter tensors not bit-identical ({len(params)})', 'float64', wrong, 0,
                       absolute=True)
        else:
            wrong = sum(_sha256(p) != c['sha256_le_bytes'] for p, c in zip(params, info['param_checksums']))
            report.add(row, f'parameter tensors with another SHA-256 ({len(params)})', 'float32', wrong, 0,
                       absolute=True)
        report.add(row, 'generator state after setup differs', 'state',
                   float(not _same_state(g.state_dict(), t[f'{slot}/rng_state_after_setup'])), 0, absolute=True)


# --- lua_run ------------------------------------------------------------------------------------------------

class _Observer:
    """Records what the Lua driver recorded, by wrapping the Trainer that main.run creates."""

    def __init__(self):
        self.batches, self.scores, self.initial = [], [], None

    @contextlib.contextmanager
    def watching(self):
        original = Trainer.__init__
        observer = self

        def init(trainer, model, criterion, *args, **kwargs):
            original(trainer, model, criterion, *args, **kwargs)
            observer.attach(trainer)
        Trainer.__init__ = init
        try:
            yield self
        finally:
            Trainer.__init__ = original

    def attach(self, trainer):
        self.initial = [p.detach().clone() for p in trainer.model.parameters()]
        copy_inputs, score = trainer.copyInputs, trainer.score

        def copyInputs(sample):
            input, target = copy_inputs(sample)
            self.batches.append({'train': trainer.model.training, 'indices': sample['indices'].tolist(),
                                 'input': input.clone()})
            return input, target

        def scored(top1Wrong, top5Wrong, batchSize):
            # the trainer scores each batch once its counts reach the host, one batch late: in batch order
            top1, top5 = score(top1Wrong, top5Wrong, batchSize)
            self.scores.append({'top1': top1, 'top5': top5})
            return top1, top5

        trainer.copyInputs, trainer.score = copyInputs, scored
        trainer.model.register_forward_hook(lambda m, i, out: self.batches[-1].update(logits=out.detach().clone()))
        trainer.criterion.register_forward_hook(lambda m, i, loss: self.batches[-1].update(loss=loss.item()))

        def after_step(optimizer, args, kwargs):
            flat = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
            self.batches[-1].update(param_sum=flat.sum().item(), param_abs_sum=flat.abs().sum().item())
        trainer.optimizer.register_step_post_hook(after_step)


def write_golden_images(tensors, meta, folder):
    """The run's images as the CIFAR python-version files (meta.data.python_files); returns the -data folder."""
    for info in meta['data']['python_files']:
        path = os.path.join(folder, info['path'])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(np.asarray(tensors[info['tensor']], dtype=np.uint8).tobytes())
    return folder


def run_golden_command(meta, tensors, workdir, extra=()):
    """main.main on meta.main_args + -rng torch7 (+ extra); returns (observer, printed text, latest.pt)."""
    data = write_golden_images(tensors, meta, os.path.join(workdir, 'data'))
    argv = [*meta['main_args'], '-rng', 'torch7', '-data', data, '-gen', os.path.join(workdir, 'gen'),
            '-save', os.path.join(workdir, 'save'), '-progress', 'lines', '-device', 'cpu', *extra]
    out, threads = io.StringIO(), torch.get_num_threads()
    try:
        with _Observer().watching() as observer, contextlib.redirect_stdout(out):
            main.main(argv)
    finally:
        torch.set_num_threads(threads)  # main.run sets -cpuThreads
    latest = torch.load(os.path.join(workdir, 'save', 'latest.pt'), weights_only=True)
    return observer, out.getvalue(), latest


_TIMES = re.compile(r'Time +[0-9.]+ +Data +[0-9.]+')


def log_lines(text):
    """The training and test log lines of a run's output, with their timings blanked (they differ run to run)."""
    kept = [line for line in text.split('\n') if line.startswith((' | Epoch', ' | Test', ' * ', '=> Training'))]
    return [_TIMES.sub('Time - Data -', line) for line in kept]


def _relative(ours, lua):
    return abs(ours - lua) / abs(lua)


def _compare_batches(report, case, batches, meta, t):
    """Every batch of the run: indices, inputs, logits, losses, errors, parameter sums after the step."""
    tol = RUN_TOLERANCES
    lua_batches = meta['iterations']
    report.add(case, f'batches ({len(lua_batches)} expected)', 'count', abs(len(batches) - len(lua_batches)), 0,
               absolute=True)
    pairs = list(zip(batches, lua_batches))
    train = [(o, i) for o, i in pairs if i['phase'] == 'train']
    report.add(case, 'batch indices (train and test)', 'int',
               sum(o['indices'] != [k - 1 for k in i['indices']] or o['train'] != (i['phase'] == 'train')
                   for o, i in pairs), 0, absolute=True)
    stored = [(o['input'], t[i['input_stored']]) for o, i in pairs if 'input_stored' in i]
    report.add(case, f'stored batch inputs ({len(stored)})', 'float64', worst(stored), 0)
    report.add(case, 'input sum, |sum|, sum of squares (all)', 'float64',
               max(max(_relative(o['input'].sum().item(), i['input_sum']),
                       _relative(o['input'].abs().sum().item(), i['input_abs_sum']),
                       _relative((o['input'] ** 2).sum().item(), i['input_sq_sum'])) for o, i in pairs),
               tol['input checksums'])
    report.add(case, 'logits (train and test, all)', 'float64',
               worst((o['logits'], t[i['logits_tensor']]) for o, i in pairs), tol['logits'])
    report.add(case, f'training losses ({len(train)})', 'float64',
               max(_relative(o['loss'], i['loss']) for o, i in train), tol['loss'])
    report.add(case, 'top-1/top-5 errors (train and test, all)', 'float64',
               max(max(abs(o['top1'] - i['top1']), abs(o['top5'] - i['top5'])) for o, i in pairs), 0, absolute=True)
    report.add(case, 'parameter sum and |sum| after each step', 'float64',
               max(max(_relative(o['param_sum'], i['param_sum_after']),
                       _relative(o['param_abs_sum'], i['param_abs_sum_after'])) for o, i in train),
               tol['parameter sums'])


def _compare_final(report, case, latest, meta, t):
    """latest.pt after the run: parameters, running statistics, the main generator's state."""
    tol = RUN_TOLERANCES
    state = latest['model']
    named = list(zip([v for k, v in state.items() if k.endswith(('.weight', '.bias'))], meta['params']))
    report.add(case, 'final parameters (latest.pt)', 'float64',
               worst((p, t['final/param/' + i['name']]) for p, i in named if not zero_grad_bias(i['name'])),
               tol['parameters'])
    report.add(case, 'final zero-gradient BN biases', 'float64',
               max((p - torch.from_numpy(t['final/param/' + i['name']].copy())).abs().max().item()
                   for p, i in named if zero_grad_bias(i['name'])),
               tol['zero-gradient BN biases'], absolute=True)
    stats = [v for k, v in state.items() if k.endswith(('.running_mean', '.running_var'))]
    names = [f'{bn}.{field}' for bn in meta['bn_modules'] for field in ('running_mean', 'running_var')]
    report.add(case, 'final running statistics (latest.pt)', 'float64',
               worst((s, t['final/bn/' + n]) for s, n in zip(stats, names)), tol['running stats'])
    report.add(case, 'main generator state at the end differs', 'state',
               float(not _same_state(latest['rng']['main'], t['rng/main_at_end'])), 0, absolute=True)


def check_lua_run(report, case='lua_run_mini_cifar10', folder=COMPACT, workdir=None):
    meta, t = load_case(case, folder)
    if meta['opt']['precision'] != 'double':  # float32 training drifts apart within a few steps
        raise ValueError(f'{case}: the run check compares -precision double runs, the case ran -precision '
                         f'{meta["opt"]["precision"]}')
    with tempfile.TemporaryDirectory() as tmp:
        observer, output, latest = run_golden_command(meta, t, workdir or tmp)
    report.add(case, 'initial parameters (init/param)', 'float64',
               worst((p, t['init/param/' + i['name']]) for p, i in zip(observer.initial, meta['params'])), 0)
    _compare_batches(report, case, [{**b, **s} for b, s in zip(observer.batches, observer.scores)], meta, t)
    _compare_final(report, case, latest, meta, t)
    ours, lua = log_lines(output), log_lines('\n'.join(meta['printed_lines']))
    report.add(case, f'log lines differ (of {len(lua)}, timings blanked)', 'text',
               sum(a != b for a, b in zip(ours, lua)) + abs(len(ours) - len(lua)), 0, absolute=True)
