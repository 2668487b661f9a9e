"""Command-line options (port of opts.lua): the same single-dash names, defaults and checks."""
import argparse
import os
import sys

# What each -dataset gives the model files: the classifier size (gunn-18.lua always builds 1000 outputs).
N_CLASSES = {'imagenet': 1000, 'cifar10': 10, 'cifar100': 100, 'digits': 10}
DATASETS = tuple(N_CLASSES)
# nEpochs when -nEpochs is 0 (opts.lua: 90 for ImageNet, 164 for CIFAR)
DEFAULT_EPOCHS = {'imagenet': 90, 'cifar10': 164, 'cifar100': 164, 'digits': 10}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """Bad options: one line and exit status 2, as torch.CmdLine."""
        sys.stderr.write(f'{self.prog}: error: {message}\n')
        sys.exit(2)


def _bool(text):
    if text not in ('true', 'false'):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text == 'true'


def get_args_parser():
    p = _Parser(prog='main.py', add_help=False, allow_abbrev=False,
                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                description='GUNN training script (PyTorch port of the Torch-7 code)')
    a = p.add_argument
    a('-help', '-h', '--help', action='help', help='show this help and exit')
    g = p.add_argument_group('General options')
    g.add_argument('-data', default='', help='Path to dataset')
    g.add_argument('-dataset', default='cifar10', help='Options: imagenet | cifar10 | cifar100 | digits')
    g.add_argument('-manualSeed', type=int, default=0, help='Manually set RNG seed')
    g.add_argument('-nGPU', type=int, default=1, help='Number of GPUs to use by default')
    g.add_argument('-backend', default='cudnn', help='Options: cudnn | cunn (kept for compatibility; ignored)')
    g.add_argument('-cudnn', default='fastest', choices=('fastest', 'default', 'deterministic'),
                   help='Options: fastest | default | deterministic')
    g.add_argument('-gen', default='gen', help='Path to save generated files')
    g.add_argument('-precision', default='single', help='Options: single | double | half')
    g = p.add_argument_group('Data options')
    g.add_argument('-nThreads', type=int, default=2, help='number of data loading threads')
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
    g.add_argument('-netType', default='gunn-15', help='Options: gunn-15 | gunn-24 | gunn-18 | wide-gunn-18 | gunn-mini')
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
    g.add_argument('-kernels', default='aten', choices=('aten', 'triton'),
                   help='GunnLayer kernels: aten (PyTorch\'s) or triton (fused GPU kernels, 4 per segment forward '
                        'and 5 backward; the aten path where they cannot run: CPU, autocast)')
    return p


def parse(argv):
    parser = get_args_parser()
    opt = parser.parse_args(argv)
    try:
        check(opt)
    except ValueError as e:
        parser.error(str(e))
    return opt


def check(opt):
    """The derived defaults and consistency checks of opts.lua (plus a few of ours)."""
    if opt.dataset not in DATASETS:
        raise ValueError(f'unknown dataset: {opt.dataset}')
    if opt.precision not in ('single', 'double', 'half'):
        raise ValueError(f'unknown precision: {opt.precision}')
    if opt.batchSize <= 0:
        raise ValueError(f'-batchSize must be positive, got {opt.batchSize}')
    if opt.nEpochs < 0:
        raise ValueError(f'-nEpochs must not be negative, got {opt.nEpochs}')
    if opt.nThreads < 0:
        raise ValueError(f'-nThreads must not be negative, got {opt.nThreads}')
    if opt.nGPU < 1:
        raise ValueError(f'-nGPU must be at least 1, got {opt.nGPU}')
    if opt.cpuThreads < 1:
        raise ValueError(f'-cpuThreads must be at least 1, got {opt.cpuThreads}')
    if opt.bnSplit < 1:
        raise ValueError(f'-bnSplit must be at least 1, got {opt.bnSplit}')
    if opt.dataset == 'imagenet':
        if not os.path.isdir(opt.data):
            raise ValueError('missing ImageNet data directory' + (f': {opt.data}' if opt.data else ' (-data DIR)'))
        if not os.path.isdir(os.path.join(opt.data, 'train')):
            raise ValueError(f'ImageNet missing `train` directory: {os.path.join(opt.data, "train")}')
        opt.shortcutType = opt.shortcutType or 'B'
    else:
        opt.shortcutType = opt.shortcutType or 'A'
    if opt.tenCrop and opt.dataset != 'imagenet':
        raise ValueError(f'-tenCrop is for imagenet: the {opt.dataset} validation images are used whole')
    opt.nEpochs = opt.nEpochs or DEFAULT_EPOCHS[opt.dataset]
    if opt.resetClassifier and opt.nClasses == 0:
        raise ValueError('-nClasses required when resetClassifier is set')
    if opt.shareGradInput and opt.optnet:
        raise ValueError('cannot use both -shareGradInput and -optnet')
    try:
        os.makedirs(opt.save, exist_ok=True)
    except OSError as e:
        raise ValueError(f'unable to create checkpoint directory: {opt.save} ({e.strerror})') from None
