"""Initial weights drawn from Torch7's generator exactly as the Lua model files draw them (-rng torch7).

Two passes over the generator, as in ``require('models/' .. netType)(opt)``:

1. Construction, in the order the Lua constructs the modules. The cudnn.SpatialConvolution constructor
   draws its weight and its (later removed) bias, U(-s, s) with s = 1/sqrt(kW*kH*nIn);
   cudnn.SpatialBatchNormalization its weight, U(0, 1); nn.Linear its weight and bias, U(-s, s) with
   s = 1/sqrt(nIn). Only the Linear weight survives; the other values are overwritten below, so their words
   are skipped. Inside a GunnLayer segment the Lua builds the conv branch before the shortcut, although the
   ConcatTable (and so ``parameters()``) holds the shortcut first.
2. The init loop: ConvInit fills every convolution weight, in ``findModules`` (depth-first) order, with
   N(0, sqrt(2/(kW*kH*nOut))); BNInit sets BN weight 1 and bias 0, the Linear bias is zeroed (no draws).

Everything is drawn into float32 tensors (main.lua's default FloatTensor), also for -precision double,
where the model is converted afterwards.
"""
import math

import torch
import torch.nn as nn

from .gunn_layer import UpdateUnit

_DRAWLESS = (nn.ReLU, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten)


def construction_order(module):
    """The leaf modules under ``module`` in the order the Lua code constructs them."""
    if isinstance(module, UpdateUnit):
        children = [module.branch] + ([module.shortcut] if module.shortcut is not None else [])
    else:
        children = list(module.children())
    if not children:
        yield module
    for child in children:
        yield from construction_order(child)


def draw_linear(linear, generator):
    """nn.Linear's constructor: weight then bias U(-s, s), s = 1/sqrt(nIn); the bias is zeroed afterwards
    by the model file (and by models/init.lua's resetClassifier), so only the weight is kept."""
    s = 1 / math.sqrt(linear.in_features)
    with torch.no_grad():
        linear.weight.copy_(generator.uniform_fill(linear.weight.numel(), -s, s, torch.float32)
                            .view_as(linear.weight))
        generator.skip(linear.out_features)
        linear.bias.zero_()


def _construct(module, generator):
    if isinstance(module, nn.Conv2d):
        generator.skip(module.weight.numel() + module.out_channels)
    elif isinstance(module, nn.BatchNorm2d):
        generator.skip(module.num_features)
    elif isinstance(module, nn.Linear):
        draw_linear(module, generator)
    elif not isinstance(module, _DRAWLESS):
        raise TypeError(f'no Torch7 construction draws known for {type(module).__name__}')


def initialize(model, generator):
    """Sets the parameters of a freshly built network as the Lua model file leaves them."""
    for module in construction_order(model):
        _construct(module, generator)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                std = math.sqrt(2 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels))
                m.weight.copy_(generator.normal_fill(m.weight.numel(), 0, std, torch.float32).view_as(m.weight))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1)
                m.bias.zero_()
