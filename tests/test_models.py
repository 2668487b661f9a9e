"""The networks: registry, parameter counts, Lua printing, initialisation, smoke forward/backward, errors."""
import math

import pytest
import torch
import torch.nn as nn
from helpers import mini_opt

import models
import opts
from datasets import N_CLASSES
from support.errors import GunnError


def opt(netType, dataset, **kw):
    return opts.defaults(netType=netType, dataset=dataset, **kw)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('netType,dataset,count', [
    ('gunn-15', 'cifar10', 1_585_746), ('gunn-15', 'cifar100', 1_618_236), ('gunn-18', 'imagenet', 28_909_736),
    ('gunn-24', 'cifar10', 29_568_666), ('wide-gunn-18', 'imagenet', 45_590_856)])
def test_parameter_counts(netType, dataset, count):
    with torch.device('meta'):  # counts need no memory or initialisation
        model = models.get_model(netType)(N_CLASSES[dataset], dataset)
    assert n_params(model) == count


def test_published_sizes_of_the_reconstructions_round_as_the_paper():
    assert round(29_568_666 / 1e6, 1) == 29.6 and round(45_590_856 / 1e6, 1) == 45.6
    assert models.get_model('gunn-24').reconstruction and models.get_model('wide-gunn-18').reconstruction
    assert not models.get_model('gunn-15').reconstruction


def test_registry_lists_every_network():
    assert models.list_models() == ['gunn-15', 'gunn-18', 'gunn-24', 'gunn-mini', 'wide-gunn-18']


def test_unknown_net_type_lists_available_names():
    with pytest.raises(GunnError, match='unknown -netType .resnet.; available: gunn-15, gunn-18'):
        models.create(opt('resnet', 'cifar10'))


def test_net_type_for_the_wrong_dataset():
    with pytest.raises(GunnError, match='gunn-18 is built for imagenet, not -dataset cifar10'):
        models.create(opt('gunn-18', 'cifar10'))


def test_indivisible_segments_name_both_numbers():
    with pytest.raises(ValueError, match='nChannels=10 is not divisible by nSegments=4'):
        models.GunnLayer(10, 4)


def test_initialisation_follows_the_lua_model_files():
    torch.manual_seed(0)
    model = models.create(opt('gunn-15', 'cifar10'))
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    big = model[3]  # 64 -> 240 1x1: std sqrt(2 / (1*1*240))
    assert big.weight.std().item() == pytest.approx(math.sqrt(2 / 240), rel=0.02)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    linear = model[-1]
    assert torch.all(linear.bias == 0) and linear.weight.abs().max() <= 1 / math.sqrt(360)


def test_parameter_order_is_the_lua_order():
    layer = models.GunnLayer(16, 4, 'cifar10')
    shapes = [tuple(p.shape) for p in layer.units[0].parameters()]
    # shortcut (conv, bn) before the branch, as the Lua ConcatTable
    assert shapes[:3] == [(4, 16, 1, 1), (4,), (4,)]
    assert shapes[3] == (8, 16, 1, 1)


@pytest.mark.parametrize('netType,dataset,size', [
    ('gunn-mini', 'digits', 32), ('gunn-15', 'cifar100', 32), ('gunn-24', 'cifar10', 32),
    ('gunn-18', 'imagenet', 224), ('wide-gunn-18', 'imagenet', 224)])
def test_smoke_forward_backward(netType, dataset, size):
    torch.manual_seed(0)
    model = models.create(opt(netType, dataset))
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, N_CLASSES[dataset])
    nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_lua_printing_of_gunn15():
    model = models.create(opt('gunn-15', 'cifar10'))
    text = models.lua_string(model)
    assert text.splitlines()[8] == '  (7): nn.GunnLayer'
    assert '(23): nn.Linear(360 -> 10)' in text and '(22): nn.Reshape(360)' in text


@pytest.mark.parametrize('flags,mode', [
    (dict(), 'share'), (dict(shareGradInput=False), 'plain'), (dict(shareGradInput=False, optnet=True), 'recompute'),
    (dict(shareGradInput=False, optMemory=1), 'recompute'), (dict(shareGradInput=False, optMemory=2), 'share'),
    (dict(optMemory=1), 'recompute')])  # the Lua allows -optMemory 1 with -shareGradInput true and applies both
def test_memory_options_select_the_gunn_layer_path(flags, mode):
    model = models.create(opt('gunn-mini', 'digits', **flags))
    assert {layer.memory for layer in models.gunn_layers(model)} == {mode}


def test_more_classes_than_outputs_is_refused():
    model = models.create(opt('gunn-mini', 'digits'))
    models.check_classes(model, 10, mini_opt())
    with pytest.raises(GunnError, match='the imagenet data has 12 classes but the gunn-mini classifier has 10 outputs; '
                                        'use -resetClassifier true -nClasses 12'):
        models.check_classes(model, 12, mini_opt(dataset='imagenet'))
