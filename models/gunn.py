"""The GUNN networks by -netType name (ports of models/gunn-15.lua and models/gunn-18.lua).

Every network is one flat nn.Sequential, module for module the Lua model, so that ``parameters()`` and
the BatchNorm buffers come in the order of the Lua ``model:parameters()``.
"""
import math

import torch.nn as nn

from .batchnorm import BatchNorm2d
from .gunn_layer import GunnLayer

_REGISTRY = {}


def register_model(name, *, datasets, published=None, reconstruction=False):
    """Register ``fn(nClasses, dataset) -> nn.Sequential`` under a -netType name."""
    def wrap(fn):
        fn.netType, fn.datasets, fn.published, fn.reconstruction = name, datasets, published, reconstruction
        _REGISTRY[name] = fn
        return fn
    return wrap


def get_model(name):
    return _REGISTRY[name]


def list_models():
    return sorted(_REGISTRY)


def _conv_bn_relu(in_channels, out_channels, kernel_size=1, stride=1):
    return [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def cifar_gunn(channels, segments, layers_per_stage, nClasses, dataset):
    """The gunn-15 layout: 3x3 stem, then per stage a 1x1 transition (+ 2x2 average pooling from the
    second stage on) and GunnLayers; a final 1x1 conv, 8x8 average pooling and the classifier."""
    stem = 64
    layers = _conv_bn_relu(3, stem, 3)
    previous = stem
    for stage, (width, nSegments) in enumerate(zip(channels, segments)):
        layers += _conv_bn_relu(previous, width)
        if stage > 0:
            layers.append(nn.AvgPool2d(2))
        layers += [GunnLayer(width, nSegments, dataset) for _ in range(layers_per_stage)]
        previous = width
    layers += _conv_bn_relu(previous, previous)
    layers += [nn.AvgPool2d(8), nn.Flatten(), nn.Linear(previous, nClasses)]
    return nn.Sequential(*layers)


def imagenet_gunn(channels, segments, nClasses, dataset):
    """The gunn-18 layout: 7x7/2 stem and 3x3/2 max pooling, then per stage a 1x1 transition, a
    GunnLayer and average pooling (2x2, the last 7x7), and the classifier."""
    stem = 64
    layers = _conv_bn_relu(3, stem, 7, stride=2) + [nn.MaxPool2d(3, 2, 1)]
    previous = stem
    for stage, (width, nSegments) in enumerate(zip(channels, segments)):
        layers += _conv_bn_relu(previous, width)
        layers += [GunnLayer(width, nSegments, dataset), nn.AvgPool2d(7 if stage == len(channels) - 1 else 2)]
        previous = width
    layers += [nn.Flatten(), nn.Linear(previous, nClasses)]
    return nn.Sequential(*layers)


CIFAR_DATASETS = ('cifar10', 'cifar100', 'digits')


@register_model('gunn-15', datasets=CIFAR_DATASETS,
                published={'cifar10': 4.15, 'cifar100': 20.45})
def gunn15(nClasses, dataset):
    return cifar_gunn((240, 300, 360), (20, 25, 30), 1, nClasses, dataset)


@register_model('gunn-24', datasets=CIFAR_DATASETS, reconstruction=True,
                published={'cifar10': 3.21, 'cifar100': 16.69})
def gunn24(nClasses, dataset):
    # Reconstruction: the original repository never published this file. The gunn-15 layout with two
    # GunnLayers per stage at three times the width gives depth 1 + 3*(1+3+3) + 1 + 1 = 24 and
    # 29,568,666 parameters on CIFAR-10 (published: 29.6M).
    return cifar_gunn((720, 1080, 1440), (72, 108, 144), 2, nClasses, dataset)


@register_model('gunn-mini', datasets=CIFAR_DATASETS)
def gunn_mini(nClasses, dataset):
    # Not from the paper: a small gunn-15 layout for the CPU quick start and the tests.
    return cifar_gunn((32, 48, 64), (4, 4, 4), 1, nClasses, dataset)


@register_model('gunn-18', datasets=('imagenet',), published={'imagenet': (21.65, 5.87)})
def gunn18(nClasses, dataset):
    return imagenet_gunn((400, 800, 1600, 2000), (10, 20, 40, 50), nClasses, dataset)


@register_model('wide-gunn-18', datasets=('imagenet',), reconstruction=True,
                published={'imagenet': (20.59, 5.52)})
def wide_gunn18(nClasses, dataset):
    # Reconstruction: the gunn-18 layout with wider stages; 45,590,856 parameters (published: 45.6M).
    return imagenet_gunn((640, 1000, 2000, 2500), (10, 20, 40, 50), nClasses, dataset)


def initialize(model):
    """The Lua ConvInit/BNInit: He-normal conv weights with n = kW*kH*nOutputPlane, BN weight 1 and bias
    0, Linear bias 0 (the Linear weight keeps torch's default, U(-1/sqrt(in), 1/sqrt(in)) as in Torch7)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0, math.sqrt(2 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
