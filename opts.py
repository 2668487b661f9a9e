"""Command-line options (port of opts.lua): the same single-dash names, defaults and checks."""
import argparse
import math
import os
import re
import sys

import datasets
import models
from models.gunn_layer import KERNELS
from support import command

# nEpochs when -nEpochs is 0 (opts.lua: 90 for ImageNet, 164 for CIFAR)
PRECISIONS = ('single', 'double', 'half', 'bf16')
DEFAULT_EPOCHS = {'imagenet': 90, 'cifar10': 164, 'cifar100': 164, 'digits': 10}


class _Parser(command.Parser):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # '-weightDecay -1e-4' takes -1e-4 as a (negative, so refused) value, not as an unknown option
        self._negative_number_matcher = re.compile(r'^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$')


def _bool(text):
    if text not in ('true', 'false'):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text == 'true'


def get_args_parser():
    p = _Parser(prog='main.py', add_help=False,
                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                description='GUNN training script (PyTorch port of the Torch-7 code)')
    a = p.add_argument
    a('-help', '-h', '--help', action='help', help='show this help and exit')
    g = p.add_argument_group('General options')
    g.add_argument('-data', default='', help='Path to dataset')
    g.add_argument('-dataset', default='cifar10', choices=tuple(datasets.N_CLASSES), metavar='NAME',
                   help='Options: ' + ' | '.join(datasets.N_CLASSES))
    g.add_argument('-manualSeed', type=int, default=0, help='Manually set RNG seed')
    g.add_argument('-nGPU', type=int, default=1, help='Number of GPUs to use by default')
    g.add_argument('-backend', default='cudnn', help='Options: cudnn | cunn (kept for compatibility; ignored)')
    g.add_argument('-cudnn', default='fastest', choices=('fastest', 'default', 'deterministic'),
                   help='Options: fastest | default | deterministic')
    g.add_argument('-gen', default='gen', help='Path to save generated files')
    g.add_argument('-precision', default='single', choices=PRECISIONS, metavar='NAME',
                   help='Options: ' + ' | '.join(PRECISIONS))
    g = p.add_argument_group('Data options')
    g.add_argument('-nThreads', type=int, default=2,
                   help='number of data loading threads (worker processes per loader, train and val, and per '
                        'training process)')
    g = p.add_argument_group('Training options')
    g.add_argument('-nEpochs', type=int, default=0, help='Number of total epochs to run')
    g.add_argument('-epochNumber', type=int, default=1, help='Manual epoch number (useful on restarts)')
    g.add_argument('-batchSize', type=int, default=32, help='mini-batch size (1 = pure stochastic)')
    g.add_argument('-testOnly', type=_bool, default=False, help='Run on validation set only')
    g.add_argument('-tenCrop', type=_bool, default=False, help='Ten-crop testing')
    g = p.add_argument_group('Checkpointing options')
    g.add_argument('-save', default='checkpoints', help='Directory in which to save checkpoints')
    g.add_argument('-resume', default='none', help='Resume from the latest checkpoint in this directory')
    g = p.add_argument_group('Optimization options')
    g.add_argument('-LR', type=float, default=0.1, help='initial learning rate')
    g.add_argument('-momentum', type=float, default=0.9, help='momentum')
    g.add_argument('-weightDecay', type=float, default=1e-4, help='weight decay')
    g = p.add_argument_group('Model options')
    g.add_argument('-netType', default='gunn-15', choices=models.list_models(), metavar='NAME',
                   help='Options: ' + ' | '.join(models.list_models()))
    g.add_argument('-depth', type=int, default=20, help='ResNet depth (unused by GUNN)')
    g.add_argument('-shortcutType', default='', help='Options: A | B | C (unused by GUNN)')
    g.add_argument('-retrain', default='none', help='Path to model to retrain with (.pt, or .t7 from the Lua code)')
    g.add_argument('-optimState', default='none', help='Path to an optimState to reload from')
    g.add_argument('-shareGradInput', type=_bool, default=True,
                   help='Lua-style GunnLayer backward: keep only layer input/output, rebuild concatenations')
    g.add_argument('-optnet', type=_bool, default=False,
                   help='Also recompute the update units in the backward pass (least memory)')
    g.add_argument('-resetClassifier', type=_bool, default=False, help='Reset the fully connected layer for fine-tuning')
    g.add_argument('-nClasses', type=int, default=0, help='Number of classes in the dataset')
    g = p.add_argument_group('Model options for DenseNet (kept from the original opts.lua)')
    g.add_argument('-growthRate', type=int, default=12, help='unused by GUNN')
    g.add_argument('-bottleneck', type=_bool, default=True, help='unused by GUNN')
    g.add_argument('-reduction', type=float, default=0.5, help='unused by GUNN')
    g.add_argument('-dropRate', type=float, default=0, help='unused by GUNN')
    g.add_argument('-optMemory', type=int, default=0,
                   help='Memory level: 1 = as -optnet, >= 2 = as -shareGradInput')
    for d in ('-d1', '-d2', '-d3', '-d4'):
        g.add_argument(d, type=int, default=0, help='unused by GUNN')
    for action in p._actions:
        if action.type is _bool:
            action.metavar = 'true|false'
    g = p.add_argument_group('Options of this port (not in the Lua original)')
    g.add_argument('-progress', default='auto', choices=('auto', 'bar', 'lines'),
                   help='bar: progress bar with ETA; lines: the Lua per-iteration log lines; auto: bar on a terminal')
    g.add_argument('-device', default='auto', choices=('auto', 'cuda', 'cpu'),
                   help='auto: the GPU when there is one, else the CPU (with -nGPU N: N CPU processes)')
    g.add_argument('-cpuThreads', type=int, default=1,
                   help='threads of the training process on the CPU (the Lua fixes 1; more help CPU-only training '
                        'on an otherwise idle machine)')
    g.add_argument('-bnSplit', type=int, default=1,
                   help='normalise each of K slices of a process\'s batch separately, as K GPUs of the original '
                        'did (e.g. 4 on one GPU to emulate -nGPU 4)')
    g.add_argument('-rng', default='pytorch', choices=('pytorch', 'torch7'),
                   help='pytorch: per-image seeds (results independent of -nThreads); torch7: Torch7\'s generator '
                        'drawn exactly where main.lua draws it (same weights, batches and augmentation as th main.lua)')
    g.add_argument('-cudaGraph', type=_bool, default=False, metavar='true|false',
                   help='capture the whole training step as a CUDA graph and replay it (one GPU; not with '
                        '-precision half)')
    g.add_argument('-tensorboard', type=_bool, default=False, metavar='true|false',
                   help='also write the log.csv columns per epoch and the training loss per iteration as a '
                        'TensorBoard event file in -save (needs the tensorboard package)')
    g.add_argument('-kernels', default='aten', choices=KERNELS,
                   help='GunnLayer kernels: aten (PyTorch\'s), triton or triton2 (fused GPU kernels, versions 1 and 2: '
                        '9 and 6 per segment; the aten path where they cannot run: CPU, autocast)')
    return p


def parse(argv):
    parser = get_args_parser()
    opt = parser.parse_args(argv)
    try:
        check(opt)
    except ValueError as e:
        parser.error(str(e))
    return opt


def defaults(**overrides):
    """The options of a command line that gives only ``overrides`` (names without the dash), with the derived
    defaults but no checks: how the tools and the tests build options."""
    opt = get_args_parser().parse_args([])
    unknown = sorted(set(overrides) - set(vars(opt)))
    if unknown:
        raise TypeError(f'no option named {", ".join(unknown)}')
    vars(opt).update(overrides)
    _derive(opt)
    return opt


def _derive(opt):
    """The defaults opts.lua derives from other options."""
    opt.shortcutType = opt.shortcutType or ('B' if opt.dataset == 'imagenet' else 'A')
    opt.nEpochs = opt.nEpochs or DEFAULT_EPOCHS[opt.dataset]


def check(opt):
    """The derived defaults and consistency checks of opts.lua (plus a few of ours)."""
    _check_values(opt)
    _check_data(opt)
    built_for = models.get_model(opt.netType).datasets
    if opt.dataset not in built_for:
        raise ValueError(f'-netType {opt.netType} is built for {"/".join(built_for)}, not -dataset {opt.dataset}')
    if opt.tenCrop and opt.dataset != 'imagenet':
        raise ValueError(f'-tenCrop is for imagenet: the {opt.dataset} validation images are used whole')
    _derive(opt)
    if opt.resetClassifier and opt.nClasses == 0:
        raise ValueError('-nClasses required when resetClassifier is set')
    if opt.shareGradInput and opt.optnet:
        raise ValueError('cannot use both -shareGradInput and -optnet')
    # -save is created and checked by the training run itself (checkpoints.claim): -testOnly writes nothing


def _check_values(opt):
    """Values that cannot work, refused here rather than by torch in the middle of a run."""
    at_least = {'batchSize': 1, 'nEpochs': 0, 'epochNumber': 1, 'nThreads': 0, 'nGPU': 1, 'cpuThreads': 1,
                'bnSplit': 1, 'nClasses': 0}
    for name, low in at_least.items():
        value = getattr(opt, name)
        if value < low:
            raise ValueError(f'-{name} must ' + ('not be negative' if low == 0 else f'be at least {low}') + f', got {value}')
    if not -2**63 <= opt.manualSeed < 2**64:
        raise ValueError(f'-manualSeed must be a 64-bit integer, got {opt.manualSeed}')
    for name in ('LR', 'weightDecay'):
        value = getattr(opt, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f'-{name} must be a number >= 0, got {value:g}')
    if not 0 < opt.momentum < 1:  # Nesterov momentum (optim.sgd of train.lua) needs a positive one
        raise ValueError(f'-momentum must be between 0 and 1 (Nesterov momentum needs one above 0), got {opt.momentum:g}')
    if opt.cudaGraph and opt.precision == 'half':
        raise ValueError('-cudaGraph true does not work with -precision half (its loss scaling reads an overflow '
                         'flag on the host every step); use -precision bf16 or -cudaGraph false')
    for name in ('save', 'resume'):
        if not getattr(opt, name):
            raise ValueError(f'-{name} must name a folder' + (' (or be none)' if name == 'resume' else ''))


def _check_data(opt):
    """-data for the datasets that read it; ignored, with a warning, for digits (embedded)."""
    if opt.dataset == 'digits':
        if opt.data:
            print(f'warning: -data {opt.data} is ignored: the digits data set is embedded', file=sys.stderr)
    elif opt.dataset == 'imagenet':
        if os.path.isfile(opt.data):
            raise ValueError(f'-data {opt.data} is a file: ImageNet needs a folder holding train/ and val/')
        if not os.path.isdir(opt.data):
            raise ValueError('missing ImageNet data directory' + (f': {opt.data}' if opt.data else ' (-data DIR)'))
        for split in ('train', 'val'):
            if not os.path.isdir(os.path.join(opt.data, split)):
                raise ValueError(f'ImageNet missing `{split}` directory: {os.path.join(opt.data, split)}')
    elif opt.data and not os.path.exists(opt.data):
        raise ValueError(f'-data {opt.data}: no such file or folder')
