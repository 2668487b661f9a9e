"""Import of the original code's Torch7 checkpoints (torch7/t7.py, pretrained/torch7.py, convert_t7.py)."""
import os

import numpy as np
import pytest
import torch
import torch7_writer

import checkpoints
import models
import opts
from golden import cases as golden
from models.setup import load_model_file
from pretrained import convert_t7
from pretrained.load import load_for_inference
from support.errors import GunnError
from torch7 import t7

# the initial gunn-mini that the Lua's checkpoints.lua saved (its logits: the compact parity report)
MINI_T7 = os.path.join(golden.COMPACT, 'gunn_mini_cifar10_init.t7')

pytestmark = pytest.mark.usefixtures('one_thread')


def tensor(array):
    return torch.from_numpy(np.array(array))


@pytest.fixture(scope='module')
def mini():
    return golden.load_case('gunn_mini_cifar10')


def test_converted_t7_holds_the_lua_weights(mini, tmp_path, capsys):
    meta, lua = mini
    out = str(tmp_path / 'mini.pt')
    convert_t7.main([MINI_T7, out])  # no flags: network and dataset are recognised from the file
    assert 'gunn-mini for cifar10' in capsys.readouterr().out
    saved = checkpoints.load_file(out)
    assert (saved['netType'], saved['dataset'], saved['epoch'], saved['source']) == ('gunn-mini', 'cifar10', 0, MINI_T7)

    model, netType, dataset, labels = load_for_inference(out)
    assert (netType, dataset, len(labels)) == ('gunn-mini', 'cifar10', 10)
    for p, info in zip(model.parameters(), meta['params'], strict=True):
        assert torch.equal(p, tensor(lua['init/param/' + info['name']])), info['name']


def test_retrain_from_t7_loads_the_same_weights(mini):
    meta, lua = mini
    model = models.create(opts.defaults(netType='gunn-mini'))
    load_model_file(model, MINI_T7, 'gunn-mini')
    for p, info in zip(model.parameters(), meta['params'], strict=True):
        assert torch.equal(p, tensor(lua['init/param/' + info['name']])), info['name']
    assert all(torch.equal(bn.running_var, torch.ones_like(bn.running_var)) for bn in golden.bns(model))


def test_t7_of_another_network_names_the_mismatch():
    with pytest.raises(GunnError, match=r'is not a gunn-15 model: found modules nn.Sequential, '
                       r'cudnn.SpatialConvolution, .*nn.Linear; first mismatch: 4 cudnn.SpatialConvolution vs '
                       r'ours 3 Conv2d: weight \(32, 64, 1, 1\) vs \(240, 64, 1, 1\)'):
        load_for_inference(MINI_T7, netType='gunn-15')


@pytest.mark.parametrize('case,dataset', [('gunnlayer_cifar', 'cifar10'), ('gunnlayer_imagenet', 'imagenet')])
def test_gunnlayer_checkpoint_loads_weights_and_running_stats(case, dataset):
    meta, lua = golden.load_case(case)
    layer = models.GunnLayer(16, 4, dataset)
    layer.load_state_dict(t7.read_t7_model(os.path.join(golden.COMPACT, f'{case}_checkpoint.t7'), layer))
    # checkpoints.lua saved the float64 layer as float32; the work buffers in the file are ignored
    for p, info in zip(layer.parameters(), meta['params'], strict=True):
        assert torch.equal(p, tensor(lua['param/' + info['name']]).float()), info['name']
    for bn, info in zip(golden.bns(layer), meta['bn_modules'], strict=True):
        for field in ('running_mean', 'running_var'):
            assert torch.equal(getattr(bn, field), tensor(lua[f'bn_after/{info["name"]}.{field}']).float())


def test_gunnlayer_checkpoint_of_the_other_variant_is_refused():
    path = os.path.join(golden.COMPACT, 'gunnlayer_cifar_checkpoint.t7')
    with pytest.raises(GunnError, match='is not a GunnLayer model: found modules nn.GunnLayer, nn.Sequential, '
                                        'nn.ConcatTable, cudnn.SpatialConvolution, cudnn.SpatialBatchNormalization, '
                                        r'cudnn.ReLU, nn.CAddTable; first mismatch: 1.1.1.1 '):
        t7.read_t7_model(path, models.GunnLayer(16, 4, 'imagenet'))


def test_nn_classes_double_tensors_and_2d_convolution_weights(tmp_path):
    torch.manual_seed(0)
    source = models.GunnLayer(8, 2, 'imagenet')
    for bn in golden.bns(source):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 1.5)
    path = str(tmp_path / 'layer.t7')
    torch7_writer.save(torch7_writer.lua_tree(source, np.float64), path)
    state = t7.read_t7_model(path, models.GunnLayer(8, 2, 'imagenet'))
    assert state.keys() == source.state_dict().keys()
    for name, value in source.state_dict().items():
        assert torch.equal(value, state[name]), name  # float32 -> float64 -> float32 is exact


def test_convolution_geometry_is_compared(tmp_path):
    lua = torch7_writer.lua_tree(models.GunnLayer(8, 2, 'imagenet'), conv_class='cudnn.SpatialConvolution')
    units = lua.fields['modules'][1]
    units.fields['modules'][1].fields['modules'][1].fields['modules'][4].fields.update(dW=2, dH=2)
    path = str(tmp_path / 'strided.t7')
    torch7_writer.save(lua, path)
    with pytest.raises(GunnError, match=r'first mismatch: 1.1.1.4 cudnn.SpatialConvolution vs ours '
                                        r'units.0.branch.3 Conv2d: stride \(2, 2\) vs \(1, 1\)'):
        t7.read_t7_model(path, models.GunnLayer(8, 2, 'imagenet'))


def test_unknown_architecture_lists_the_classes_found(tmp_path):
    path = str(tmp_path / 'unknown.t7')
    torch7_writer.save(torch7_writer.unknown_network(), path)
    with pytest.raises(GunnError, match='is none of the -netType models for imagenet .gunn-18, wide-gunn-18.: '
                                        'found modules nn.Sequential, nn.SpatialConvolution, nn.Tanh, nn.Linear$'):
        load_for_inference(path)
    with torch.device('meta'):  # the shapes are all the comparison needs
        gunn18 = models.get_model('gunn-18')(1000, 'imagenet')
    with pytest.raises(GunnError, match='is not a gunn-18 model: found modules .*; first mismatch: 1 '
                                        r'nn.SpatialConvolution vs ours 0 Conv2d: kernel \(3, 3\) vs \(7, 7\)'):
        t7.read_t7_model(path, gunn18, 'gunn-18')


def test_classifier_size_selects_the_dataset(tmp_path):
    path = str(tmp_path / 'odd.t7')
    network = torch7_writer.unknown_network()
    network.fields['modules'][3] = torch7_writer.module('nn.Linear', weight=np.zeros((7, 4), np.float32))
    torch7_writer.save(network, path)
    with pytest.raises(GunnError, match='has a 7-way classifier; no -dataset has that many classes'):
        load_for_inference(path)


@pytest.mark.parametrize('cut,reason', [(20, 'unpack requires'), (3000, 'a storage of 1728 elements, but the file ends before them'),
                                        (60000, '')])
def test_truncated_file_is_a_one_line_error(tmp_path, cut, reason):
    with open(os.path.join(golden.COMPACT, 'gunnlayer_cifar_checkpoint.t7'), 'rb') as f:
        data = f.read(cut)
    path = tmp_path / 'cut.t7'
    path.write_bytes(data)
    with pytest.raises(GunnError, match=f'cannot read Torch7 file {path}: truncated or not a Torch7 file .{reason}'):
        t7.load_t7(str(path))


def test_our_checkpoint_is_not_a_t7(tmp_path):
    path = tmp_path / 'model.t7'
    torch.save({'model': {}}, path)
    with pytest.raises(GunnError, match='cannot read Torch7 file .*unknown object type'):
        t7.load_t7(str(path))
