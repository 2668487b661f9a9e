"""The network half of the parity report: one GunnLayer of each variant, gunn-15 (forward, backward, three SGD
steps), gunn-18's logits, the extras (learning-rate schedule, computeScore, optim.sgd) and the original's
gunn-15 .t7 read into the port."""
import contextlib
import io
import os

import numpy as np
import torch
import torch.nn as nn

import models
import opts
from dataloader import FixedBatches
from golden.cases import (
    SEARCH_DIRS,
    bn_errors,
    find_case,
    load_case,
    load_golden_state,
    model_opt,
    rel_err,
    worst,
    zero_grad_bias,
)
from support.distributed import Process
from torch7 import t7
from train import Trainer, learning_rate


def _row_name(case, memory, kernels, device):
    """A report row's case: the golden case, the path, and the device where it is not the CPU."""
    path = memory if kernels == 'aten' else f'{memory}, {kernels}'
    return f'{case} [{path}]' + (f' {device}' if device != 'cpu' else '')


def check_gunnlayer(report, case, dirs=SEARCH_DIRS, modes=models.gunn_layer.MEMORY_MODES, device='cpu',
                    kernels='aten'):
    """One GunnLayer(16, 4) in float64: train output, gradients, running statistics, eval output."""
    meta, t = load_case(case, dirs)
    dataset = 'imagenet' if case.endswith('imagenet') else 'cifar10'
    tol = 1e-10
    for memory in modes:
        layer = models.GunnLayer(16, 4, dataset, memory, kernels).double()
        load_golden_state(layer, meta, t, 'param/', 'bn_before/')
        layer.to(device)
        x = torch.from_numpy(np.array(t['input'])).to(device).requires_grad_()
        out = layer(x)
        out.backward(torch.from_numpy(np.array(t['grad_output'])).to(device))
        name = _row_name(case, memory, kernels, device)
        report.add(name, 'train output', 'float64', rel_err(out, t['output_train']), tol)
        report.add(name, 'gradInput', 'float64', rel_err(x.grad, t['grad_input']), tol)
        report.add(name, 'gradParameters', 'float64',
                   worst((p.grad, t['grad_param/' + i['name']]) for p, i in zip(layer.parameters(), meta['params'])), tol)
        report.add(name, 'running stats', 'float64', bn_errors(layer, meta, t, 'bn_after/'), tol)
        layer.eval()
        with torch.no_grad():
            report.add(name, 'eval output', 'float64', rel_err(layer(x), t['output_eval']), tol)


class _RecordingLoss(nn.CrossEntropyLoss):
    def __init__(self):
        super().__init__()
        self.values = []

    def forward(self, output, target):
        loss = super().forward(output, target)
        self.values.append(loss.item())
        return loss


def check_gunn15(report, dirs=SEARCH_DIRS, memory='share', device='cpu', kernels='aten'):
    meta, t = load_case('gunn15_cifar10', dirs)
    T = lambda key: torch.from_numpy(np.array(t[key])).to(device)  # noqa: E731
    target = T('target') - 1
    case = _row_name('gunn15_cifar10', memory, kernels, device)

    model = models.create(model_opt('gunn-15', 'cifar10', memory, kernels)).double()
    report.add(case, 'print(model) differs', 'text', float(models.lua_string(model) != meta['model_string']), 0,
               absolute=True)
    load_golden_state(model, meta, t, 'init/param/')
    model.to(device).eval()
    with torch.no_grad():
        report.add(case, 'init eval logits', 'float64', rel_err(model(T('eval_input').double()), t['f64/init/eval_logits']), 1e-9)
    model.train()
    x = T('input').double().requires_grad_()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, target)
    loss.backward()
    report.add(case, 'logits', 'float64', rel_err(logits, t['f64/fwd/logits']), 1e-10)
    report.add(case, 'loss', 'float64', abs(loss.item() - meta['f64']['fwd_loss']) / meta['f64']['fwd_loss'], 1e-12)
    report.add(case, 'gradInput', 'float64', rel_err(x.grad, t['f64/fwd/grad_input']), 1e-9)
    named = list(zip(model.parameters(), meta['params']))
    # the golden gradients are float64 values stored as float32: 6e-8 is their rounding
    report.add(case, 'gradParameters', 'float64', worst((p.grad, t['f64/fwd/grad_param/' + i['name']])
                                                        for p, i in named if not zero_grad_bias(i['name'])), 1e-6)
    report.add(case, 'zero-gradient BN biases', 'float64',
               max(p.grad.abs().max().item() for p, i in named if zero_grad_bias(i['name'])), 1e-12, absolute=True)
    report.add(case, 'running stats', 'float64', bn_errors(model, meta, t, 'f64/fwd/bn/'), 1e-10)

    # three steps of Trainer.train on the golden batches, from the initial weights again
    model = models.create(model_opt('gunn-15', 'cifar10', memory, kernels)).double()
    load_golden_state(model, meta, t, 'init/param/')
    model.to(device)
    opt = opts.defaults(dataset='cifar10', nEpochs=300, precision='double', progress='lines')
    criterion = _RecordingLoss()
    batches = [{'input': T(f'train/batch{i}/input'), 'target': T(f'train/batch{i}/target') - 1, 'batchTotal': 4}
               for i in (1, 2, 3)]
    with contextlib.redirect_stdout(io.StringIO()):
        Trainer(model, criterion, opt, process=Process(device=device)).train(1, FixedBatches(batches))
    lua_losses = [s['loss'] for s in meta['f64']['train']['steps']]
    report.add(case, '3 SGD steps: losses', 'float64',
               max(abs(a - b) / abs(b) for a, b in zip(criterion.values, lua_losses)), 1e-10)
    report.add(case, '3 SGD steps: parameters', 'float64',
               worst((p, t['f64/train/after3/param/' + i['name']]) for p, i in zip(model.parameters(), meta['params'])
                     if not zero_grad_bias(i['name'])), 1e-6)
    report.add(case, '3 SGD steps: zero-gradient BN biases', 'float64',
               max(p.abs().max().item() for p, i in zip(model.parameters(), meta['params']) if zero_grad_bias(i['name'])),
               1e-12, absolute=True)
    report.add(case, '3 SGD steps: running stats', 'float64', bn_errors(model, meta, t, 'f64/train/after3/bn/'), 1e-9)
    model.eval()
    with torch.no_grad():
        report.add(case, '3 SGD steps: eval logits', 'float64',
                   rel_err(model(T('eval_input').double()), t['f64/train/after3/eval_logits']), 1e-8)

    # float32 is well conditioned in the forward pass only (golden README)
    model = models.create(model_opt('gunn-15', 'cifar10', memory, kernels))
    load_golden_state(model, meta, t, 'init/param/')
    with torch.no_grad():
        report.add(case, 'logits', 'float32', rel_err(model.to(device)(T('input')), t['f32/fwd/logits']), 1e-5)


def gunn18_fill(model):
    """The golden README's deterministic weights: tensor k, element j -> float32(0.05 sin(0.37 j + k))."""
    with torch.no_grad():
        for k, p in enumerate(model.parameters(), 1):
            j = np.arange(1, p.numel() + 1, dtype=np.float64)
            p.copy_(torch.from_numpy((0.05 * np.sin(0.37 * j + k)).astype(np.float32).reshape(p.shape)))


def check_gunn18(report, dirs=SEARCH_DIRS, precisions=('float64', 'float32')):
    meta, t = load_case('gunn18_imagenet', dirs)
    tols = {'float64': {'eval logits': 1e-10, 'train logits': 1e-9, 'train features': 1e-8},
            'float32': {'eval logits': 1e-5, 'train logits': 1e-3, 'train features': 1e-1}}
    report.add('gunn18_imagenet', 'print(model) differs', 'text',
               float(models.lua_string(models.create(model_opt('gunn-18', 'imagenet', 'share'))) != meta['model_string']),
               0, absolute=True)
    for precision in precisions:
        dtype = getattr(torch, precision)
        prefix = 'f64/' if precision == 'float64' else ''
        model = models.create(model_opt('gunn-18', 'imagenet', 'share'))
        gunn18_fill(model)
        model.to(dtype)
        features = {}
        model[-1].register_forward_hook(lambda m, inp, out: features.update(value=inp[0]))
        x = torch.from_numpy(np.array(t['input'])).to(dtype)
        with torch.no_grad():
            model.eval()  # the Lua ran the eval-mode forward first, then the training-mode one
            report.add('gunn18_imagenet', 'eval logits', precision, rel_err(model(x), t[prefix + 'eval_logits']),
                       tols[precision]['eval logits'])
            model.train()
            logits = model(x)
        report.add('gunn18_imagenet', 'train logits', precision, rel_err(logits, t[prefix + 'train_logits']),
                   tols[precision]['train logits'])
        report.add('gunn18_imagenet', 'train features', precision,
                   rel_err(features['value'], t[prefix + 'train_features']), tols[precision]['train features'])


def check_extras(report, dirs=SEARCH_DIRS):
    """Learning-rate schedule, computeScore and optim.sgd on a vector."""
    meta, t = load_case('extras', dirs)
    worst_lr = 0.0
    for name, info in meta['lr_schedule'].items():
        nEpochs = int(name.rsplit('nEpochs', 1)[1])
        opt = opts.defaults(dataset=info['dataset'], nEpochs=nEpochs, LR=info['LR'])
        ours = [learning_rate(opt, e) for e in range(1, len(info['lr']) + 1)]
        worst_lr = max(worst_lr, max(abs(a - b) / b for a, b in zip(ours, info['lr'])))
    report.add('extras', 'learning-rate schedules', 'float64', worst_lr, 0.0)
    for kind, nCrops in (('single', 1), ('tencrop', 10)):
        top1, top5 = Trainer.computeScore(torch.from_numpy(np.array(t[f'score/{kind}/logits'])),
                                          torch.from_numpy(np.array(t[f'score/{kind}/target'])) - 1, nCrops)
        lua = meta['compute_score'][kind]
        report.add('extras', f'computeScore ({kind})', 'float32',
                   max(abs(top1 - lua['top1_err']), abs(top5 - lua['top5_err'])), 1e-9, absolute=True)
    x = torch.from_numpy(np.array(t['sgd/x0'])).clone().requires_grad_()
    state = meta['sgd']['state']
    sgd = torch.optim.SGD([x], lr=state['learningRate'], momentum=state['momentum'], dampening=state['dampening'],
                          nesterov=state['nesterov'], weight_decay=state['weightDecay'])
    errs = []
    for i in (1, 2, 3):
        x.grad = torch.from_numpy(np.array(t[f'sgd/grad{i}'])).clone()
        sgd.step()
        errs += [rel_err(x, t[f'sgd/x_after{i}']),
                 rel_err(sgd.state[x]['momentum_buffer'], t[f'sgd/momentum_buffer_after{i}'])]
    report.add('extras', 'optim.sgd (3 steps)', 'float64', max(errs), 1e-15)


def check_torch7_import(report, dirs=SEARCH_DIRS):
    """The original's gunn15_cifar10_init.t7, read into our gunn-15: its float32 logits."""
    meta, t = load_case('gunn15_cifar10', dirs)
    model = models.create(model_opt('gunn-15', 'cifar10', 'share'))
    t7_path = os.path.join(find_case('gunn15_cifar10', dirs), 'gunn15_cifar10_init.t7')
    model.load_state_dict(t7.read_t7_model(t7_path, model, 'gunn-15'))
    case = 'gunn15_cifar10_init.t7'
    report.add(case, 'weights vs init/param', 'float32',
               worst((p, t['init/param/' + i['name']]) for p, i in zip(model.parameters(), meta['params'])), 0)
    with torch.no_grad():  # eval mode first: the training-mode forward moves the running statistics
        model.eval()
        report.add(case, 'init eval logits', 'float32',
                   rel_err(model(torch.from_numpy(np.array(t['eval_input']))), t['f32/init/eval_logits']), 1e-5)
        model.train()
        report.add(case, 'logits', 'float32', rel_err(model(torch.from_numpy(np.array(t['input']))), t['f32/fwd/logits']),
                   1e-5)


def has_t7(name, dirs):
    folder = find_case('gunn15_cifar10', dirs)
    return folder is not None and os.path.isfile(os.path.join(folder, name))
