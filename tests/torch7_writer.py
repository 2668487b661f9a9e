"""Just enough of Torch7's binary serialisation (what torch.save writes) to make .t7 test files: torchfile
can only read them."""
import struct
from collections import namedtuple

import numpy as np
import torch.nn as nn

# A Torch class instance: its class name and its table of fields.
LuaObject = namedtuple('LuaObject', 'cls fields')
# A tensor written field by field, as a crafted file may state it: class names, sizes, strides, 0-based
# offset, the storage's stated element count and its data (written whatever the count says).
RawTensor = namedtuple('RawTensor', 'cls storage_cls sizes strides offset count data')

_TENSOR_TYPES = {np.dtype(np.float32): 'Float', np.dtype(np.float64): 'Double'}


class _Writer:
    def __init__(self, f):
        self.f, self.objects = f, 0

    def int(self, value):
        self.f.write(struct.pack('<i', value))

    def long(self, value):
        self.f.write(struct.pack('<q', value))

    def string(self, text):
        data = text.encode()
        self.int(len(data))
        self.f.write(data)

    def reference(self, kind):
        # every table and object gets a new index: nothing is shared in these files
        self.objects += 1
        self.int(kind)
        self.int(self.objects)

    def torch_header(self, cls):
        self.reference(4)
        self.string('V 1')
        self.string(cls)

    def value(self, obj):
        if obj is None:
            self.int(0)
        elif isinstance(obj, bool):
            self.int(5)
            self.int(int(obj))
        elif isinstance(obj, (int, float)):
            self.int(1)
            self.f.write(struct.pack('<d', obj))
        elif isinstance(obj, str):
            self.int(2)
            self.string(obj)
        elif isinstance(obj, np.ndarray):
            self.tensor(obj)
        elif isinstance(obj, RawTensor):
            self.raw_tensor(obj)
        elif isinstance(obj, LuaObject):
            self.torch_header(obj.cls)
            self.value(obj.fields)
        else:  # dict: a Lua table
            self.reference(3)
            self.int(len(obj))
            for key, item in obj.items():
                self.value(key)
                self.value(item)

    def tensor(self, array):
        self.raw_tensor(raw(array))

    def raw_tensor(self, t):
        self.torch_header(t.cls)
        self.int(len(t.sizes))
        for n in (*t.sizes, *t.strides):
            self.long(n)
        self.long(t.offset + 1)  # 1-based in the file
        self.torch_header(t.storage_cls)
        self.long(t.count)
        self.f.write(t.data.astype(t.data.dtype.newbyteorder('<')).tobytes())


def raw(array):
    """The RawTensor a contiguous array is written as."""
    kind = _TENSOR_TYPES[array.dtype]
    array = np.ascontiguousarray(array)
    return RawTensor(f'torch.{kind}Tensor', f'torch.{kind}Storage', array.shape,
                     tuple(s // array.itemsize for s in array.strides), 0, array.size, array.reshape(-1))


def save(obj, path):
    with open(path, 'wb') as f:
        _Writer(f).value(obj)


def lua_list(items):
    return {i: item for i, item in enumerate(items, 1)}


def module(cls, **fields):
    return LuaObject(cls, fields)


def lua_tree(model, dtype=np.float32, conv_class='nn.SpatialConvolutionMM'):
    """Our module as a Lua tree: containers become nn.Sequential (the extra nesting levels do not change
    the depth-first order of the weights), Conv2d the given convolution class (the MM one with 2-D
    weights), BatchNorm2d / ReLU / Linear their nn classes; weights in dtype."""
    def array(t):
        return t.detach().numpy().astype(dtype)
    if isinstance(model, nn.Conv2d):
        weight = array(model.weight)
        if conv_class.endswith('MM'):
            weight = weight.reshape(weight.shape[0], -1)
        (kH, kW), (dH, dW), (padH, padW) = model.kernel_size, model.stride, model.padding
        return module(conv_class, weight=weight, nInputPlane=model.in_channels, nOutputPlane=model.out_channels,
                      kW=kW, kH=kH, dW=dW, dH=dH, padW=padW, padH=padH)
    if isinstance(model, nn.BatchNorm2d):
        return module('nn.SpatialBatchNormalization', weight=array(model.weight), bias=array(model.bias),
                      running_mean=array(model.running_mean), running_var=array(model.running_var), eps=1e-5)
    if isinstance(model, nn.Linear):
        return module('nn.Linear', weight=array(model.weight), bias=array(model.bias))
    if isinstance(model, nn.ReLU):
        return module('nn.ReLU', inplace=True)
    return module('nn.Sequential', modules=lua_list(lua_tree(m, dtype, conv_class) for m in model.children()))


def unknown_network():
    """A small network no -netType matches: nn.Sequential{conv 3->4 3x3, nn.Tanh, nn.Linear 4->1000}."""
    conv = module('nn.SpatialConvolution', weight=np.zeros((4, 3, 3, 3), np.float32), bias=np.zeros(4, np.float32),
                  kW=3, kH=3, dW=1, dH=1, padW=1, padH=1)
    linear = module('nn.Linear', weight=np.zeros((1000, 4), np.float32), bias=np.zeros(1000, np.float32))
    return module('nn.Sequential', modules=lua_list([conv, module('nn.Tanh'), linear]))
