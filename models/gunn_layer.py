"""The gradually updated layer of GUNN (port of the original models/GunnLayer.lua).

A GunnLayer splits its C input channels into S segments of o = C/S channels and recomputes them one
after another: segment i is replaced by ``unit_i(z_i) + x_i`` where z_i is the channel concatenation of
the already updated segments 1..i-1 and the not yet updated segments i..S.

Three execution paths, selected by ``GunnLayer.memory`` (models.setup sets it from the options):

* ``'plain'``: ``reference_forward``, ordinary autograd through the update units. It is the readable
  definition and the yardstick every other path is tested against. Autograd keeps every z_i alive.
* ``'share'`` (``-shareGradInput true``, the default): the Lua backward. Autograd keeps the layer input
  and output plus each unit's inner activations; z_i is rebuilt in the backward pass from the input and
  the output, one segment at a time, in a single buffer.
* ``'recompute'`` (``-optnet true`` / ``-optMemory 1``): keeps only the input and the output and also
  recomputes each unit's inner activations in the backward pass (checkpointing).

The two saving paths share one hand-written forward (``_unit_forward``) and backward (``_unit_backward``)
of the update unit, built on the aten kernels that autograd itself uses.

``GunnLayer.kernels`` (``-kernels``) picks the kernels: ``'aten'`` (the paths above), ``'triton'``, the
fused GPU path of models/fused/layer.py (4 kernels per segment forward, 5 backward), or ``'triton2'``, its
second version, models/fused/layer2.py (3 and 3); both fall back to the aten path where they cannot run (CPU
tensors, autocast, no Triton).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .batchnorm import BatchNorm2d
from .fused import layer as fused_gunn_layer
from .fused import layer2 as fused_gunn_layer2

aten = torch.ops.aten

MEMORY_MODES = ('plain', 'share', 'recompute')
KERNELS = ('aten', 'triton', 'triton2')
_FUSED = {'triton': fused_gunn_layer, 'triton2': fused_gunn_layer2}  # -kernels: its host module


def conv_bn(in_channels, out_channels, kernel_size=1):
    return [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            BatchNorm2d(out_channels)]


class UpdateUnit(nn.Module):
    """Computes a new segment of o channels from the C-channel concatenation z.

    ``branch``: 1x1 conv to 2o, BN, ReLU, 3x3 conv, BN, ReLU, 1x1 conv to o, BN.
    ``shortcut`` (CIFAR only): 1x1 conv to o, BN, added to the branch. It is registered first so that
    ``parameters()`` follows the Lua ConcatTable order (shortcut, then branch).
    """

    def __init__(self, in_channels, out_channels, shortcut):
        super().__init__()
        self.shortcut = nn.Sequential(*conv_bn(in_channels, out_channels)) if shortcut else None
        wide = 2 * out_channels
        self.branch = nn.Sequential(*conv_bn(in_channels, wide), nn.ReLU(inplace=True),
                                    *conv_bn(wide, wide, 3), nn.ReLU(inplace=True),
                                    *conv_bn(wide, out_channels))

    def forward(self, z):
        out = self.branch(z)
        if self.shortcut is not None:
            out = self.shortcut(z) + out
        return out

    def head_convs(self):
        """The 1x1 convolutions that read z, in parameter order (shortcut first)."""
        heads = [self.shortcut[0]] if self.shortcut is not None else []
        return heads + [self.branch[0]]


class GunnLayer(nn.Module):
    def __init__(self, nChannels, nSegments, dataset='cifar10', memory='share', kernels='aten'):
        super().__init__()
        if nChannels % nSegments != 0:
            raise ValueError(f'GunnLayer: nChannels={nChannels} is not divisible by nSegments={nSegments}')
        if memory not in MEMORY_MODES:
            raise ValueError(f'GunnLayer: unknown memory mode {memory!r}, expected one of {MEMORY_MODES}')
        if kernels not in KERNELS:
            raise ValueError(f'GunnLayer: unknown kernels {kernels!r}, expected one of {KERNELS}')
        self.nChannels, self.nSegments = nChannels, nSegments
        self.oChannels = nChannels // nSegments
        self.dataset = dataset
        self.memory = memory
        self.kernels = kernels
        shortcut = dataset != 'imagenet'
        self.units = nn.ModuleList(UpdateUnit(nChannels, self.oChannels, shortcut) for _ in range(nSegments))

    def extra_repr(self):
        return (f'{self.nChannels}, {self.nSegments}, dataset={self.dataset!r}, memory={self.memory!r}, '
                f'kernels={self.kernels!r}')

    def segment(self, i):
        return slice(i * self.oChannels, (i + 1) * self.oChannels)

    def reference_forward(self, x):
        """The plain autograd definition of the layer."""
        inputs = list(x.split(self.oChannels, dim=1))
        outputs = []
        for i, unit in enumerate(self.units):
            z = torch.cat(outputs + inputs[i:], dim=1)
            outputs.append(unit(z) + inputs[i])
        return torch.cat(outputs, dim=1)

    def forward(self, x):
        if self.kernels in _FUSED and fused_gunn_layer.usable(self, x):
            return _FUSED[self.kernels].forward(self, x)
        if self.memory == 'plain':
            return self.reference_forward(x)
        params = list(self.parameters())
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
            return _GunnLayerFunction.apply(self, x, *params)
        return _segments_forward(self, x, keep=False)[0]


def _bn_forward(bn, x, training, update_stats):
    """native_batch_norm as models.BatchNorm2d computes it (per -bnSplit slice, each with its statistics
    set); in training, the running statistics are only updated on request."""
    if training and update_stats:
        bn.num_batches_tracked.add_(1)
    outs, stats = [], []
    for i, part in bn.slices(x):
        running = bn.running_stats(i) if update_stats or not training else (None, None)
        out, mean, invstd = aten.native_batch_norm(part, bn.weight, bn.bias, *running, training, bn.momentum, bn.eps)
        outs.append(out)
        stats.append((part.size(0), mean, invstd, running))
    return (torch.cat(outs) if len(outs) > 1 else outs[0]), (training, stats)


def _bn_backward(bn, grad, x, state):
    training, stats = state
    sizes = [n for n, *_ in stats]
    grads = [aten.native_batch_norm_backward(g, part, bn.weight, *running, mean, invstd, training, bn.eps,
                                             [True, True, True])
             for g, part, (_, mean, invstd, running) in zip(grad.split(sizes), x.split(sizes), stats)]
    if len(grads) == 1:
        return grads[0]
    gin, gw, gb = zip(*grads)
    return torch.cat(gin), sum(gw), sum(gb)


def _conv_backward(grad, x, weight, padding=0):
    """(d input, d weight) of a stride-1 convolution without bias, in the dtype the forward computed in."""
    gin, gw, _ = aten.convolution_backward(grad, x.to(grad.dtype), weight.to(grad.dtype), None, [1, 1],
                                           [padding, padding], [1, 1], False, [0, 0], 1, [True, True, False])
    return gin, gw.to(weight.dtype)


def _head_weight(unit):
    # the 1x1 convolutions that read z (CIFAR: shortcut and branch) run as one: z is read once
    heads = unit.head_convs()
    return torch.cat([c.weight for c in heads]) if len(heads) > 1 else heads[0].weight


def _unit_forward(unit, z, training, update_stats):
    """Forward of one update unit without autograd; returns its output and what its backward needs."""
    heads = unit.head_convs()
    h = F.conv2d(z, _head_weight(unit))
    head_outs = h.split([c.out_channels for c in heads], dim=1)
    branch = unit.branch
    b1, st1 = _bn_forward(branch[1], head_outs[-1], training, update_stats)
    r1 = b1.relu_()
    a2 = branch[3](r1)
    b2, st2 = _bn_forward(branch[4], a2, training, update_stats)
    r2 = b2.relu_()
    a3 = branch[6](r2)
    y, st3 = _bn_forward(branch[7], a3, training, update_stats)
    stats = [st1, st2, st3]
    if unit.shortcut is not None:
        ys, sts = _bn_forward(unit.shortcut[1], head_outs[0], training, update_stats)
        y = ys + y
        stats.append(sts)
    return y, (h, r1, a2, r2, a3), stats


def _unit_backward(unit, z, saved, stats, gy):
    """Gradient of one update unit: (d z, parameter gradients in unit.parameters() order)."""
    h, r1, a2, r2, a3 = saved
    gy = gy.to(a3.dtype)  # under autocast the unit computed in half precision
    branch = unit.branch
    heads = unit.head_convs()
    head_outs = h.split([c.out_channels for c in heads], dim=1)
    ga3, gbn3w, gbn3b = _bn_backward(branch[7], gy, a3, stats[2])
    gr2, gw3 = _conv_backward(ga3, r2, branch[6].weight)
    ga2, gbn2w, gbn2b = _bn_backward(branch[4], aten.threshold_backward(gr2, r2, 0), a2, stats[1])
    gr1, gw2 = _conv_backward(ga2, r1, branch[3].weight, padding=1)
    ga1, gbn1w, gbn1b = _bn_backward(branch[1], aten.threshold_backward(gr1, r1, 0), head_outs[-1], stats[0])
    head_grads, shortcut_grads = [ga1], []
    if unit.shortcut is not None:
        gas, gbnsw, gbnsb = _bn_backward(unit.shortcut[1], gy, head_outs[0], stats[3])
        head_grads.insert(0, gas)
        shortcut_grads = [gbnsw, gbnsb]
    gz, gw_head = _conv_backward(torch.cat(head_grads, dim=1), z, _head_weight(unit))
    *gws, gw1 = gw_head.split([c.out_channels for c in heads])
    return gz, gws + shortcut_grads + [gw1, gbn1w, gbn1b, gw2, gbn2w, gbn2b, gw3, gbn3w, gbn3b]


def _segments_forward(layer, x, keep):
    """Run the segments in order in one buffer that starts as x and ends as the output."""
    buf = x.clone()
    kept = []
    for i, unit in enumerate(layer.units):
        y, saved, stats = _unit_forward(unit, buf, layer.training, update_stats=layer.training)
        kept.append((saved if keep else None, stats))
        buf[:, layer.segment(i)] += y.to(buf.dtype)
    return buf, kept


class _GunnLayerFunction(torch.autograd.Function):
    """The Lua-style GunnLayer: custom backward that rebuilds each z_i from the input and the output."""

    @staticmethod
    def forward(ctx, layer, x, *params):
        keep = layer.memory == 'share'
        out, kept = _segments_forward(layer, x, keep)
        ctx.layer = layer
        device = x.device.type  # the recomputation in backward must use the forward's autocast setting
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        ctx.stats = [stats for _, stats in kept]
        saved = [t for unit_saved, _ in kept if keep for t in unit_saved]
        ctx.save_for_backward(x, out, *saved)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        layer = ctx.layer
        x, out, *saved = ctx.saved_tensors
        grad = grad_out.contiguous().clone()  # becomes d loss / d x, segment by segment
        z = out.clone()
        param_grads = []
        for i in reversed(range(layer.nSegments)):
            unit, seg = layer.units[i], layer.segment(i)
            z[:, seg] = x[:, seg]  # z now holds z_i = cat(y_1..y_{i-1}, x_i..x_S)
            if saved:
                unit_saved, stats = saved[5 * i:5 * i + 5], ctx.stats[i]
            else:
                device, dtype, enabled = ctx.autocast
                with torch.autocast(device, dtype, enabled):
                    _, unit_saved, stats = _unit_forward(unit, z, layer.training, update_stats=False)
            gz, grads = _unit_backward(unit, z, unit_saved, stats, grad[:, seg])
            grad += gz.to(grad.dtype)
            param_grads[:0] = grads
        return (None, grad, *param_grads)
