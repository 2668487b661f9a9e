"""Reading Torch7 checkpoints of the original Lua code (model_best.t7: the bare nn.Sequential that
checkpoints.lua saves) into state_dicts of this port's networks (-retrain FILE.t7, parity.py, the tools).
It needs no model registry, so models/ imports it; which -netType a file holds is pretrained/torch7.py's job.

The Lua module tree and our module tree hold their weights in the same depth-first order (models/gunn.py
builds them module for module), so the modules that carry weights are paired one to one by position:
(cudnn|nn).SpatialConvolution <-> nn.Conv2d, SpatialBatchNormalization <-> nn.BatchNorm2d, nn.Linear <->
nn.Linear. Only weight, bias, running_mean and running_var are read, under the same names in both trees;
everything else in the file (GunnLayer work buffers, gradients, cudnn.torch's own fields) is ignored.
"""
import math

import torch
import torch.nn as nn

from support import fileio
from support.errors import GunnError
from torch7 import serialization

PACKAGES = ('nn', 'cudnn')
LUA_KINDS = {'SpatialConvolution': 'conv', 'SpatialConvolutionMM': 'conv',
             'SpatialBatchNormalization': 'bn', 'Linear': 'linear'}
OUR_KINDS = ((nn.Conv2d, 'conv'), (nn.BatchNorm2d, 'bn'), (nn.Linear, 'linear'))
FIELDS = ('weight', 'bias', 'running_mean', 'running_var')


def load_t7(path):
    """The root module object of a Torch7 file."""
    fileio.require_file(path, 'model file')
    root = serialization.load(path)
    if not serialization.is_module(root):
        raise GunnError(f'{path} holds no Torch7 module (found a {type(root).__name__})')
    return root


def _class_name(module):
    return module.torch_typename().decode('latin1')


def _field(module, name):
    table = module._obj
    return table.get(name.encode()) if isinstance(table, dict) else None


def _tensor(module, name):
    """A non-empty tensor field (a serialization.TensorView), else None (Torch7 keeps empty tensors for
    absent ones)."""
    value = _field(module, name)
    if isinstance(value, serialization.TensorView) and value.storage is not None and 0 not in value.sizes:
        return value
    return None


def _children(module):
    table = _field(module, 'modules')
    if not isinstance(table, dict):
        return []
    return [table[k] for k in sorted(k for k in table if isinstance(k, int))
            if serialization.is_module(table[k])]


def _walk(module, path=''):
    """(dotted 1-based path as in the golden README, module), depth first, as Lua's parameters() visits them."""
    yield path or '(root)', module
    for i, child in enumerate(_children(module), 1):
        yield from _walk(child, f'{path}.{i}' if path else str(i))


def module_classes(root):
    """The distinct module class names of the tree, in the order they first appear."""
    return list(dict.fromkeys(_class_name(m) for _, m in _walk(root)))


def found_modules(root):
    """'found modules <classes>', for error messages."""
    return f'found modules {", ".join(module_classes(root))}'


def _lua_kind(module):
    package, _, name = _class_name(module).partition('.')
    return LUA_KINDS.get(name) if package in PACKAGES else None


def _lua_weight_modules(root):
    """(path, module, kind) of every module with weights; kind None for a class this port does not know."""
    return [(path, m, _lua_kind(m)) for path, m in _walk(root)
            if _lua_kind(m) or any(_tensor(m, f) is not None for f in FIELDS)]


def _our_kind(module):
    return next((kind for cls, kind in OUR_KINDS if isinstance(module, cls)), None)


def _our_weight_modules(model):
    return [(name, m) for name, m in model.named_modules()
            if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))]


def _geometry_problem(lua, conv):
    """Kernel, stride and padding must agree too: a different stride leaves every weight shape unchanged."""
    geometry = {'kernel': ('kH', 'kW', conv.kernel_size), 'stride': ('dH', 'dW', conv.stride),
                'padding': ('padH', 'padW', conv.padding)}
    for what, (h, w, ours) in geometry.items():
        theirs = (_field(lua, h) or 0, _field(lua, w) or 0)
        if theirs != tuple(ours):
            return f'{what} {theirs} vs {tuple(ours)}'
    return None


def _pair(lua, path, kind, module, prefix, state, source):
    """Copy the Lua module's tensors into state under prefix; a description of the problem if they don't fit.
    Each tensor is made from the file only once its shape is known to be the model's."""
    if kind is None or kind != _our_kind(module):
        return 'different module types'
    if kind == 'conv':
        problem = _geometry_problem(lua, module)
        if problem:
            return problem
    for name, ours in module.state_dict().items():
        if name == 'num_batches_tracked':  # Torch7 has no counter; 0 is what a fresh BatchNorm2d holds
            state[prefix + name] = torch.zeros((), dtype=ours.dtype)
            continue
        view = _tensor(lua, name)
        if view is None:
            return f'no {name} in the file'
        # nn.SpatialConvolutionMM keeps its weight 2-D
        flat = kind == 'conv' and len(view.sizes) == 2 and math.prod(view.sizes) == ours.numel()
        if not flat and view.sizes != tuple(ours.shape):
            return f'{name} {view.sizes} vs {tuple(ours.shape)}'
        value = view.array(f'{path}.{name}', source).reshape(tuple(ours.shape))
        state[prefix + name] = torch.tensor(value, dtype=ours.dtype)
    extra = [f for f in FIELDS if _tensor(lua, f) is not None and f not in module.state_dict()]
    return f'{extra[0]} in the file, none in the model' if extra else None


def t7_state(root, model, source, netType=None):
    """The state_dict of model filled from the Torch7 module tree root (a GunnError if they differ)."""
    lua, ours = _lua_weight_modules(root), _our_weight_modules(model)
    state = {}

    def mismatch(detail):
        return GunnError(f'{source} is not a {netType or type(model).__name__} model: {found_modules(root)}; '
                         f'first mismatch: {detail}')

    for (path, lua_module, kind), (name, module) in zip(lua, ours):
        problem = _pair(lua_module, path, kind, module, f'{name}.' if name else '', state, source)
        if problem:
            raise mismatch(f'{path} {_class_name(lua_module)} vs ours {name or "(root)"} '
                           f'{type(module).__name__}: {problem}')
    if len(lua) != len(ours):
        raise mismatch(f'{len(lua)} modules with weights in the file, {len(ours)} in the model')
    return state


def read_t7_model(path, model, netType=None):
    """The state_dict for model from the Torch7 file path (-retrain FILE.t7 and the tools)."""
    return t7_state(load_t7(path), model, path, netType)


def classifier_outputs(root, source):
    """Output count of the last nn.Linear of the tree."""
    weights = [_tensor(m, 'weight') for _, m, kind in _lua_weight_modules(root) if kind == 'linear']
    if not weights or weights[-1] is None:
        raise GunnError(f'{source} has no nn.Linear classifier: {found_modules(root)}')
    return weights[-1].sizes[0]
