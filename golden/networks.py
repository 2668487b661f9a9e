"""The network half of the parity report: one GunnLayer (kind gunnlayer), a whole CIFAR network (gunn_train:
forward, backward, a few SGD steps), an ImageNet network's logits (gunn_logits), the extras (learning-rate
schedule, computeScore, optim.sgd) and the original's saved initial network read into the port
(torch7_import). Each check reads its configuration (network, layer size, precision, steps) from the case."""
import contextlib
import io
import os
import re

import numpy as np
import torch
import torch.nn as nn

import models
import opts
from dataloader import FixedBatches
from golden.cases import (
    COMPACT,
    bn_errors,
    load_case,
    load_golden_state,
    model_opt,
    rel_err,
    worst,
    zero_grad_bias,
)
from golden.sets import checkpoint_base
from support.distributed import Process
from torch7 import t7
from train import Trainer, learning_rate


def _row_name(case, memory, kernels, device):
    """A report row's case: the golden case, the path, and the device where it is not the CPU."""
    path = memory if kernels == 'aten' else f'{memory}, {kernels}'
    return f'{case} [{path}]' + (f' {device}' if device != 'cpu' else '')


_CONSTRUCTOR = re.compile(r"nn\.GunnLayer\((\d+), (\d+), \{dataset='(\w+)'\}\)")


def gunnlayer_config(meta):
    """(channels, segments, dataset) of the layer the Lua built (meta.constructor)."""
    channels, segments, dataset = _CONSTRUCTOR.fullmatch(meta['constructor']).groups()
    return int(channels), int(segments), dataset


def check_gunnlayer(report, case, folder=COMPACT, modes=models.gunn_layer.MEMORY_MODES, device='cpu',
                    kernels='aten'):
    """One float64 GunnLayer, as the case built it: train output, gradients, running statistics, eval output."""
    meta, t = load_case(case, folder)
    if not meta['precision'].startswith('float64'):
        raise ValueError(f'{case}: the GunnLayer check compares float64 runs, the case holds {meta["precision"]}')
    channels, segments, dataset = gunnlayer_config(meta)
    tol = 1e-10
    for memory in modes:
        layer = models.GunnLayer(channels, segments, dataset, memory, kernels).double()
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


def check_gunn_train(report, case='gunn_mini_cifar10', folder=COMPACT, memory='share', device='cpu', kernels='aten'):
    """The network of meta.opt from the Lua's initial weights: one forward/backward in float64, the Lua's SGD
    steps through Trainer.train, and a float32 forward."""
    meta, t = load_case(case, folder)
    T = lambda key: torch.from_numpy(np.array(t[key])).to(device)  # noqa: E731
    lua_opt = meta['opt']
    net = lambda: models.create(model_opt(lua_opt['netType'], lua_opt['dataset'], memory, kernels))  # noqa: E731
    target = T('target') - 1
    name = _row_name(case, memory, kernels, device)

    model = net().double()
    report.add(name, 'print(model) differs', 'text', float(models.lua_string(model) != meta['model_string']), 0,
               absolute=True)
    load_golden_state(model, meta, t, 'init/param/')
    model.to(device).eval()
    with torch.no_grad():
        report.add(name, 'init eval logits', 'float64', rel_err(model(T('eval_input').double()), t['f64/init/eval_logits']), 1e-9)
    model.train()
    x = T('input').double().requires_grad_()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, target)
    loss.backward()
    report.add(name, 'logits', 'float64', rel_err(logits, t['f64/fwd/logits']), 1e-10)
    report.add(name, 'loss', 'float64', abs(loss.item() - meta['f64']['fwd_loss']) / meta['f64']['fwd_loss'], 1e-12)
    report.add(name, 'gradInput', 'float64', rel_err(x.grad, t['f64/fwd/grad_input']), 1e-9)
    named = list(zip(model.parameters(), meta['params']))
    # the golden gradients are float64 values stored as float32: 6e-8 is their rounding
    report.add(name, 'gradParameters', 'float64', worst((p.grad, t['f64/fwd/grad_param/' + i['name']])
                                                        for p, i in named if not zero_grad_bias(i['name'])), 1e-6)
    report.add(name, 'zero-gradient BN biases', 'float64',
               max(p.grad.abs().max().item() for p, i in named if zero_grad_bias(i['name'])), 1e-12, absolute=True)
    report.add(name, 'running stats', 'float64', bn_errors(model, meta, t, 'f64/fwd/bn/'), 1e-10)

    # the Lua's steps of Trainer.train on the golden batches, from the initial weights again
    model = net().double()
    load_golden_state(model, meta, t, 'init/param/')
    model.to(device)
    opt = opts.defaults(dataset=lua_opt['dataset'], nEpochs=lua_opt['nEpochs'], LR=lua_opt['LR'],
                        momentum=lua_opt['momentum'], weightDecay=lua_opt['weightDecay'], precision='double',
                        progress='lines')
    criterion = _RecordingLoss()
    steps = len(meta['f64']['train']['steps'])
    batches = [{'input': T(f'train/batch{i}/input'), 'target': T(f'train/batch{i}/target') - 1,
                'batchTotal': t[f'train/batch{i}/target'].shape[0]} for i in range(1, steps + 1)]
    with contextlib.redirect_stdout(io.StringIO()):
        Trainer(model, criterion, opt, process=Process(device=device)).train(1, FixedBatches(batches))
    lua_losses = [s['loss'] for s in meta['f64']['train']['steps']]
    after = f'f64/train/after{steps}/'
    report.add(name, f'{steps} SGD steps: losses', 'float64',
               max(abs(a - b) / abs(b) for a, b in zip(criterion.values, lua_losses)), 1e-10)
    report.add(name, f'{steps} SGD steps: parameters', 'float64',
               worst((p, t[after + 'param/' + i['name']]) for p, i in zip(model.parameters(), meta['params'])
                     if not zero_grad_bias(i['name'])), 1e-6)
    report.add(name, f'{steps} SGD steps: zero-gradient BN biases', 'float64',
               max(p.abs().max().item() for p, i in zip(model.parameters(), meta['params']) if zero_grad_bias(i['name'])),
               1e-12, absolute=True)
    report.add(name, f'{steps} SGD steps: running stats', 'float64', bn_errors(model, meta, t, after + 'bn/'), 1e-9)
    model.eval()
    with torch.no_grad():
        report.add(name, f'{steps} SGD steps: eval logits', 'float64',
                   rel_err(model(T('eval_input').double()), t[after + 'eval_logits']), 1e-8)

    # float32 is well conditioned in the forward pass only (golden README)
    model = net()
    load_golden_state(model, meta, t, 'init/param/')
    with torch.no_grad():
        report.add(name, 'logits', 'float32', rel_err(model.to(device)(T('input')), t['f32/fwd/logits']), 1e-5)


def deterministic_fill(model):
    """The gunn_logits case's weights: tensor k, element j -> float32(0.05 sin(0.37 j + k))."""
    with torch.no_grad():
        for k, p in enumerate(model.parameters(), 1):
            j = np.arange(1, p.numel() + 1, dtype=np.float64)
            p.copy_(torch.from_numpy((0.05 * np.sin(0.37 * j + k)).astype(np.float32).reshape(p.shape)))


def check_gunn_logits(report, case='gunn18_imagenet', folder=COMPACT):
    """The case's network with deterministic weights: eval-mode, then training-mode logits and the classifier's
    input, in float64 and float32."""
    meta, t = load_case(case, folder)
    # the reference set's case predates meta.config: it is gunn-18 in both precisions
    config = meta.get('config', {'net': 'gunn-18', 'precisions': ['float32', 'float64']})
    net = lambda: models.create(model_opt(config['net'], meta['opt']['dataset'], 'share'))  # noqa: E731
    tols = {'float64': {'eval logits': 1e-10, 'train logits': 1e-9, 'train features': 1e-8},
            'float32': {'eval logits': 1e-5, 'train logits': 1e-3, 'train features': 1e-1}}
    report.add(case, 'print(model) differs', 'text', float(models.lua_string(net()) != meta['model_string']), 0,
               absolute=True)
    for precision in sorted(config['precisions'], reverse=True):  # float64 first
        dtype = getattr(torch, precision)
        prefix = 'f64/' if precision == 'float64' else ''
        model = net()
        deterministic_fill(model)
        model.to(dtype)
        features = {}
        model[-1].register_forward_hook(lambda m, inp, out: features.update(value=inp[0]))
        x = torch.from_numpy(np.array(t['input'])).to(dtype)
        with torch.no_grad():
            model.eval()  # the Lua ran the eval-mode forward first, then the training-mode one
            report.add(case, 'eval logits', precision, rel_err(model(x), t[prefix + 'eval_logits']),
                       tols[precision]['eval logits'])
            model.train()
            logits = model(x)
        report.add(case, 'train logits', precision, rel_err(logits, t[prefix + 'train_logits']),
                   tols[precision]['train logits'])
        report.add(case, 'train features', precision,
                   rel_err(features['value'], t[prefix + 'train_features']), tols[precision]['train features'])


def check_extras(report, case='extras', folder=COMPACT):
    """Learning-rate schedule, computeScore and optim.sgd on a vector."""
    meta, t = load_case(case, folder)
    worst_lr = 0.0
    for name, info in meta['lr_schedule'].items():
        nEpochs = int(name.rsplit('nEpochs', 1)[1])
        opt = opts.defaults(dataset=info['dataset'], nEpochs=nEpochs, LR=info['LR'])
        ours = [learning_rate(opt, e) for e in range(1, len(info['lr']) + 1)]
        worst_lr = max(worst_lr, max(abs(a - b) / b for a, b in zip(ours, info['lr'])))
    report.add(case, 'learning-rate schedules', 'float64', worst_lr, 0.0)
    for kind, nCrops in (('single', 1), ('tencrop', 10)):
        top1, top5 = Trainer.computeScore(torch.from_numpy(np.array(t[f'score/{kind}/logits'])),
                                          torch.from_numpy(np.array(t[f'score/{kind}/target'])) - 1, nCrops)
        lua = meta['compute_score'][kind]
        report.add(case, f'computeScore ({kind})', 'float32',
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
    report.add(case, 'optim.sgd (3 steps)', 'float64', max(errs), 1e-15)


def check_torch7_import(report, case='gunn_mini_cifar10_init.t7', folder=COMPACT):
    """The initial network that the gunn_train case saved with checkpoints.lua (NAME_init.t7), read into ours:
    its weights and float32 logits."""
    meta, t = load_case(checkpoint_base(case), folder)
    netType, dataset = meta['opt']['netType'], meta['opt']['dataset']
    model = models.create(model_opt(netType, dataset, 'share'))
    model.load_state_dict(t7.read_t7_model(os.path.join(folder, case), model, netType))
    report.add(case, 'weights vs init/param', 'float32',
               worst((p, t['init/param/' + i['name']]) for p, i in zip(model.parameters(), meta['params'])), 0)
    with torch.no_grad():  # eval mode first: the training-mode forward moves the running statistics
        model.eval()
        report.add(case, 'init eval logits', 'float32',
                   rel_err(model(torch.from_numpy(np.array(t['eval_input']))), t['f32/init/eval_logits']), 1e-5)
        model.train()
        report.add(case, 'logits', 'float32', rel_err(model(torch.from_numpy(np.array(t['input']))), t['f32/fwd/logits']),
                   1e-5)
