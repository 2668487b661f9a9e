"""Building, loading and describing a network (port of models/init.lua)."""
import torch
import torch.nn as nn

from checkpoints import clean_state_dict, load_file
from datasets import N_CLASSES
from support.errors import GunnError
from torch7.t7 import read_t7_model

from . import torch7_init
from .batchnorm import set_bn_split
from .gunn import get_model, initialize, list_models
from .gunn_layer import GunnLayer


def memory_mode(opt):
    """GunnLayer backward variant for the memory options (see models/gunn_layer.py)."""
    if opt.optnet or opt.optMemory == 1:
        return 'recompute'
    if opt.shareGradInput or opt.optMemory >= 2:
        return 'share'
    return 'plain'


def create(opt, generator=None):
    """The bare, initialised network for opt.netType / opt.dataset, like the Lua createModel(opt); its initial
    weights come from ``generator`` (a torch7.generator.Torch7Generator) as the Lua draws them, if one is given."""
    try:
        build = get_model(opt.netType)
    except KeyError:
        raise GunnError(f'unknown -netType {opt.netType!r}; available: {", ".join(list_models())}') from None
    if opt.dataset not in build.datasets:
        raise GunnError(f'-netType {opt.netType} is built for {"/".join(build.datasets)}, not -dataset {opt.dataset}')
    model = build(N_CLASSES[opt.dataset], opt.dataset)
    if generator is None:
        initialize(model)
    else:
        torch7_init.initialize(model, generator)
    for layer in gunn_layers(model):
        layer.memory = memory_mode(opt)
        layer.kernels = opt.kernels
    return model


def gunn_layers(model):
    return [m for m in model.modules() if isinstance(m, GunnLayer)]


def setup(opt, checkpoint=None, generator=None):
    """(model, criterion) as models/init.lua setup: build, then resume / retrain / reset the classifier.
    ``generator``: the Torch7 generator that draws the new weights (-rng torch7), or None."""
    print(f'=> Creating model {opt.netType}')
    model = create(opt, generator)
    if checkpoint is not None:
        if opt.resetClassifier:  # a fine-tuned run's checkpoint already has the new classifier
            reset_classifier(model, opt.nClasses, announce=False)
        print(f'=> Resuming model from {checkpoint["path"]}')
        load_model_state(model, checkpoint, checkpoint['path'], opt.netType)
    else:
        if opt.retrain != 'none':
            print(f'Loading model from file: {opt.retrain}')
            load_model_file(model, opt.retrain, opt.netType)
        if opt.resetClassifier:
            reset_classifier(model, opt.nClasses, generator=generator)
    set_bn_split(model, opt.bnSplit)
    print(lua_string(model))
    print(f'| number of parameters: {sum(p.numel() for p in model.parameters())}')
    if opt.precision == 'double':
        model.double()
    set_cudnn_mode(opt.cudnn)
    return model, nn.CrossEntropyLoss()


def set_cudnn_mode(mode):
    torch.backends.cudnn.benchmark = mode == 'fastest'
    torch.backends.cudnn.deterministic = mode == 'deterministic'


def check_classes(model, nClasses, opt):
    """A data set with more classes than the classifier has outputs cannot be trained (nor evaluated)."""
    outputs = getattr(model, 'module', model)[-1].out_features
    if nClasses > outputs:
        raise GunnError(f'the {opt.dataset} data has {nClasses} classes but the {opt.netType} classifier has {outputs} '
                        f'outputs; use -resetClassifier true -nClasses {nClasses}')


def reset_classifier(model, nClasses, announce=True, generator=None):
    old = model[-1]
    if not isinstance(old, nn.Linear):
        raise GunnError('expected last layer to be fully connected')
    if announce:
        print(f' => Replacing classifier with {nClasses}-way classifier')
    new = nn.Linear(old.in_features, nClasses)
    if generator is None:
        nn.init.zeros_(new.bias)
    else:
        torch7_init.draw_linear(new, generator)
    model[-1] = new.to(old.weight.device, old.weight.dtype)


def load_model_state(model, checkpoint, source, netType):
    """Copy a checkpoint dict {'netType', 'model': state_dict, ...} into model, refusing any mismatch."""
    if checkpoint.get('netType', netType) != netType:
        raise GunnError(f'{source} holds a {checkpoint["netType"]} model, not -netType {netType}')
    state = clean_state_dict(checkpoint['model'])
    own = model.state_dict()
    for name, value in own.items():
        if name not in state:
            raise GunnError(f'{source} does not match the {netType} model: it has no {name} {tuple(value.shape)}')
        if state[name].shape != value.shape:
            raise GunnError(f'{source} does not match the {netType} model: {name} has shape '
                            f'{tuple(state[name].shape)} in the file, {tuple(value.shape)} in the model')
    extra = sorted(set(state) - set(own))
    if extra:
        raise GunnError(f'{source} does not match the {netType} model: unexpected entry {extra[0]}')
    model.load_state_dict(state)


def load_model_file(model, path, netType):
    """-retrain: our checkpoint files (.pt) or a Torch7 file of the original code (.t7)."""
    if str(path).endswith('.t7'):
        checkpoint = {'model': read_t7_model(path, model, netType)}
    else:
        checkpoint = load_file(path)
    load_model_state(model, checkpoint, path, netType)


def _lua_module_string(m, linear_in):
    if isinstance(m, nn.Conv2d):
        (kh, kw), (dh, dw), (ph, pw) = m.kernel_size, m.stride, m.padding
        s = f'cudnn.SpatialConvolution({m.in_channels} -> {m.out_channels}, {kw}x{kh}'
        if (dw, dh, pw, ph) != (1, 1, 0, 0):
            s += f', {dw},{dh}'
        if (pw, ph) != (0, 0):
            s += f', {pw},{ph}'
        return s + ')' + (' without bias' if m.bias is None else '')
    if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
        k, d, p = (m.kernel_size, m.stride, m.padding)
        name = 'cudnn.SpatialAveragePooling' if isinstance(m, nn.AvgPool2d) else 'nn.SpatialMaxPooling'
        return f'{name}({k}x{k}, {d},{d}' + (f', {p},{p})' if p else ')')
    if isinstance(m, nn.Linear):
        return f'nn.Linear({m.in_features} -> {m.out_features})'
    if isinstance(m, nn.Flatten):
        return f'nn.Reshape({linear_in})'
    if isinstance(m, nn.BatchNorm2d):
        return 'cudnn.SpatialBatchNormalization'
    return {nn.ReLU: 'cudnn.ReLU', GunnLayer: 'nn.GunnLayer'}.get(type(m), type(m).__name__)


def lua_string(model):
    """The network printed as Torch7 prints the original model (print(model) in the Lua)."""
    linear_in = model[-1].in_features
    n = len(model)
    lines = ['nn.Sequential {', '  [input -> ' + ' -> '.join(f'({i})' for i in range(1, n + 1)) + ' -> output]']
    lines += [f'  ({i}): {_lua_module_string(m, linear_in)}' for i, m in enumerate(model, 1)]
    return '\n'.join(lines + ['}'])
