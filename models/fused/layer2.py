"""Version 2 of the fused GunnLayer (-kernels triton2): launches, grids and the passes over the segments.

Per update unit, 3 kernels forward and 3 backward (version 1: 4 and 5), plus one launch per layer each way
(models/fused/kernels2.py says what each computes and what changed from version 1):

  forward   update_head        segment i-1 += bn3(a3) + bn_s(h_s) in place, then h = [shortcut; conv1](z_i)
            conv3x3_forward    a2 = conv3x3(relu(bn1(h_b)))
            out_conv_forward   a3 = conv1x1(relu(bn2(a2)))
            (after the last unit: update_head without a head, the last segment's update)
  backward  (first: head_backward without a head, the last segment's bn3/bn_s reductions)
            out_conv_backward  bn3', the last 1x1 conv's input and weight gradients, relu2'
            conv3x3_backward   bn2', the 3x3 conv's input gradient and relu1' (grid axis 2: blocks of input
                               channels) and its weight gradient (then per tap and block of output channels),
                               one launch
            head_backward      bn1', the head convs' gradients, layer gradient += dz in place, and segment
                               i-1's bn3/bn_s reductions in a block of its own

Everything else is version 1's (models/fused/layer.py, whose Geometry, fallbacks, autograd Function and
workspaces this reuses): no host synchronisation, CUDA-graph capturable after one eager call, -bnSplit groups on
grid axis 1. The weights are rearranged once per forward (one concatenated head weight [S, HC, C] for all
units, the 3x3 weights as [S, 9, ci, co] and [S, 9, co, ci]: 4 aten kernels per layer) and kept for backward;
the BatchNorm weight and bias gradients are read off the backward statistics once per layer (4 aten kernels).

Grid: persistent, as many programs per SM as fit (occupancy.resident_programs of the compiled kernel; its
first launch on a device assumes 1), so that no program waits for a second wave; the pixel tile halves
(down to 32) while a layer has fewer than two tiles per SM. -optnet recomputes a unit's h, a2, a3 just
before they are needed, in two alternating buffers (head_backward of unit i also reads unit i-1's).
"""
import functools

import torch

from . import layer as v1
from . import occupancy
from .layer import _stats_sets, batch_norms

# Launch settings per kernel (as version 1's CONFIGS): BLOCK_P pixels per tile, BLOCK_K / BLOCK_C channel block
# of z, num_warps, num_stages (3: two buffers in flight; benchmarks/fused_kernels_compile.py checks it).
_FLOAT32_NARROW = {
    'update_head': dict(BLOCK_P=64, BLOCK_K=32, num_warps=4, num_stages=3),
    'conv3x3_forward': dict(BLOCK_P=64, BLOCK_N=32, num_warps=4, num_stages=3),
    'out_conv_forward': dict(BLOCK_P=64, num_warps=4, num_stages=3),
    'out_conv_backward': dict(BLOCK_P=64, num_warps=4, num_stages=3),
    'conv3x3_backward': dict(BLOCK_P=32, BLOCK_N=32, num_warps=4, num_stages=3),
    'head_backward': dict(BLOCK_P=32, BLOCK_C=64, num_warps=8, num_stages=3),
}
# 'wide' (gunn-18: 2o = 80 channels, 128 padded): the 3x3 kernels split their outputs in blocks of 32;
# conv3x3_backward still spills (56 bytes, benchmarks/NOTES.md): its input gradient's loop holds two [pixels, 128]
# tiles and four 128-wide BatchNorm coefficient vectors
_FLOAT32_WIDE = {
    'update_head': dict(BLOCK_P=64, BLOCK_K=32, num_warps=8, num_stages=3),
    'conv3x3_forward': dict(BLOCK_P=32, BLOCK_N=32, num_warps=8, num_stages=3),
    'out_conv_forward': dict(BLOCK_P=64, num_warps=8, num_stages=3),
    'out_conv_backward': dict(BLOCK_P=32, num_warps=8, num_stages=3),
    'conv3x3_backward': dict(BLOCK_P=16, BLOCK_N=32, num_warps=8, num_stages=3),
    'head_backward': dict(BLOCK_P=32, BLOCK_C=64, num_warps=8, num_stages=3),
}
_FLOAT64 = {  # multiplies out in registers ('fma'), for the comparisons with the plain path
    'update_head': dict(BLOCK_P=32, BLOCK_K=16, num_warps=4),
    'conv3x3_forward': dict(BLOCK_P=32, BLOCK_N=16, num_warps=4),
    'out_conv_forward': dict(BLOCK_P=32, num_warps=4),
    'out_conv_backward': dict(BLOCK_P=32, num_warps=4),
    'conv3x3_backward': dict(BLOCK_P=32, BLOCK_N=16, num_warps=4),
    'head_backward': dict(BLOCK_P=32, BLOCK_C=16, num_warps=4),
}
CONFIGS = {(torch.float32, 'narrow'): _FLOAT32_NARROW, (torch.float32, 'wide'): _FLOAT32_WIDE,
           (torch.float64, 'narrow'): _FLOAT64, (torch.float64, 'wide'): _FLOAT64}
MIN_TILES_PER_SM = 2  # BLOCK_P halves (not below 32) until a layer has this many tiles per SM
ASSUMED_SMS = 132  # an H100's, for the tile size where no GPU is asked (the interpreter, the compile tool)
_fits = {}  # programs per SM of each compiled kernel, by launch key


@functools.lru_cache(maxsize=None)
def _kernels():
    from . import kernels2
    return kernels2


class Geometry(v1.Geometry):
    """Version 1's shapes and groups, with this version's launch settings and grid."""

    def __init__(self, layer, x):
        super().__init__(layer, x)
        self.config = CONFIGS[x.dtype, 'wide' if self.O > 16 else 'narrow']
        self.dtype, self.cuda = x.dtype, x.is_cuda
        self.sms = v1._sm_count(x.device) if x.is_cuda else ASSUMED_SMS
        self.limits = occupancy.device_limits(x.device) if x.is_cuda else None

    def block_p(self, configured):
        """The configured pixel tile, halved (not below 32) while the layer has too few tiles to fill the SMs."""
        block = configured
        while block > 32 and self.largest * -(-self.HW // block) < MIN_TILES_PER_SM * self.sms:
            block //= 2
        return block

    def channel_blocks(self, name):
        """Blocks of BLOCK_N of the 2o channels that kernel `name` computes (grid axis 2)."""
        return -(-self.M // self.config[name]['BLOCK_N'])

    def launch(self, name, kernel_args, axis2=1, **constexprs):
        """Run kernel `name` on a (programs, groups, axis2) grid: its CONFIGS entry, with constexprs overriding."""
        settings = dict(self.config[name], **constexprs)
        settings['BLOCK_P'] = self.block_p(settings['BLOCK_P'])
        key = (name, self.dtype, tuple(sorted(settings.items())))
        tiles = self.largest * -(-self.HW // settings['BLOCK_P'])
        per_sm = _fits.get(key, 1) * self.sms if self.cuda else v1.INTERPRETER_PROGRAMS  # one wave, no second
        programs = max(1, min(tiles, per_sm // (self.G * axis2)))
        kernel = getattr(_kernels(), name + '_kernel')[(programs, self.G, axis2)](*kernel_args, **settings)
        if self.cuda and key not in _fits:
            _fits[key] = occupancy.resident_programs(self.limits, kernel.n_regs, settings['num_warps'],
                                                     kernel.metadata.shared)[0]


# --------------------------------------------------------------------------- one launcher per kernel

def update_head(geo, layer, i, z, h, fstats, w_head, prev, z_hi=None, split=0, stats=False):
    """Segment i-1 of z += unit i-1's output (prev: its (a3, h); None: no update), then unit i's head into h
    (i = nSegments: none). z_hi, split: backward's recomputation, z's channels from `split` on in z_hi."""
    head = i < layer.nSegments
    bn_s, _, _, bn3 = batch_norms(layer.units[i - 1] if prev else layer.units[0])
    bn_s = bn_s or bn3  # without a shortcut: a placeholder the kernel never reads
    a3p, hp = prev or (z, z)
    geo.launch('update_head', (z, z if z_hi is None else z_hi, split, w_head[min(i, layer.nSegments - 1)],
                               h, fstats[min(i, layer.nSegments - 1)],
                               (i - 1) * geo.O if prev else 0, a3p, hp, fstats[i - 1], geo.consts,
                               bn3.weight, bn3.bias, *_stats_sets(bn3), bn3.num_batches_tracked,
                               bn_s.weight, bn_s.bias, *_stats_sets(bn_s), bn_s.num_batches_tracked,
                               geo.C, geo.HW, geo.HS, geo.HC, geo.M, geo.O, geo.VW, geo.N, geo.late),
               HEAD=head, SEGMENT=prev is not None, SPLIT=z_hi is not None, STATS=stats, TRAIN=geo.train,
               UPDATE=geo.train, SHORTCUT=geo.shortcut, PREC=geo.prec, BLOCK_HC=v1._pow2(geo.HC),
               BLOCK_O=v1._pow2(geo.O))


def conv3x3_forward(geo, unit, h, a2, fstats, w2, stats, update):
    bn1 = unit.branch[1]
    geo.launch('conv3x3_forward', (h, w2, a2, fstats, geo.consts, bn1.weight, bn1.bias, *_stats_sets(bn1),
                                   bn1.num_batches_tracked, geo.HS, geo.HC, geo.M, geo.VW, geo.N, geo.late),
               axis2=geo.channel_blocks('conv3x3_forward'), H=geo.H, W=geo.W, TRAIN=geo.train, STATS=stats,
               UPDATE=update, PREC=geo.prec, BLOCK_M=v1._pow2(geo.M))


def out_conv_forward(geo, unit, a2, a3, fstats, stats, update):
    bn2 = unit.branch[4]
    geo.launch('out_conv_forward', (a2, unit.branch[6].weight.contiguous(), a3, fstats, geo.consts,
                                    bn2.weight, bn2.bias, *_stats_sets(bn2), bn2.num_batches_tracked,
                                    geo.HW, geo.HS, geo.M, geo.O, geo.VW, geo.N, geo.late),
               TRAIN=geo.train, STATS=stats, UPDATE=update, PREC=geo.prec, BLOCK_M=v1._pow2(geo.M),
               BLOCK_O=v1._pow2(geo.O))


def out_conv_backward(geo, unit, grad, seg0, a3, a2, h, g_mid, g_head, fstats, rstats, grads):
    bn_s, _, bn2, bn3 = batch_norms(unit)
    bn_s = bn_s or bn3
    geo.launch('out_conv_backward', (grad, seg0, a3, a2, h, unit.branch[6].weight.contiguous(), g_mid, g_head,
                                     fstats, rstats, geo.consts, bn3.weight, *_stats_sets(bn3),
                                     bn2.weight, bn2.bias, *_stats_sets(bn2), bn_s.weight, *_stats_sets(bn_s),
                                     grads['w3'], geo.C, geo.HW, geo.HS, geo.HC, geo.M, geo.O, geo.VW, geo.N,
                                     geo.late),
               TRAIN=geo.train, SHORTCUT=geo.shortcut, PREC=geo.prec, BLOCK_O=v1._pow2(geo.O),
               BLOCK_M=v1._pow2(geo.M))


def conv3x3_backward(geo, unit, g_mid, a2, h, g_head, w2, fstats, rstats, grads):
    _, bn1, bn2, _ = batch_norms(unit)
    geo.launch('conv3x3_backward', (g_mid, a2, h, w2, g_head, grads['w2'], fstats, rstats, geo.consts,
                                    bn2.weight, *_stats_sets(bn2), bn1.weight, bn1.bias, *_stats_sets(bn1),
                                    geo.HS, geo.HC, geo.M, geo.VW, geo.N, geo.late),
               axis2=geo.channel_blocks('conv3x3_backward') * 10, H=geo.H, W=geo.W, TRAIN=geo.train, PREC=geo.prec,
               BLOCK_M=v1._pow2(geo.M))


def head_backward(geo, layer, i, z_lo, z_hi, g_head, h, grad, w_head, fstats, rstats, grads, sums):
    """Unit i's head backward (i None: none) and, with sums = (a3, h) of unit i - 1 (unit nSegments - 1
    without a head), that segment's bn3/bn_s reductions."""
    j = layer.nSegments - 1 if i is None else i - 1  # the segment whose reductions `sums` asks for
    bn1 = layer.units[i if i is not None else 0].branch[1]
    bn_s, _, _, bn3 = batch_norms(layer.units[j])
    bn_s = bn_s or bn3
    block_c = max(geo.config['head_backward']['BLOCK_C'], v1._pow2(geo.O))
    split = i * geo.O if i is not None else 0
    lo = j * geo.O if sums else split  # z's channels below lo, and from split on, in blocks of block_c
    blocks = 0 if i is None else -(-lo // block_c) + -(-(geo.C - split) // block_c)
    dw = grads[i] if i is not None else {'w_b': grad}  # placeholders the kernel never reads without a head
    a3p, hp = sums or (grad, grad)
    geo.launch('head_backward', (z_lo, z_hi, split, w_head[i or 0], g_head, h, grad,
                                 dw.get('w_s', dw['w_b']), dw['w_b'], fstats[i or 0], rstats[i or 0], geo.consts,
                                 bn1.weight, *_stats_sets(bn1), j * geo.O, a3p, hp, fstats[j], rstats[j],
                                 *_stats_sets(bn3), *_stats_sets(bn_s),
                                 geo.C, geo.HW, geo.HS, geo.HC, geo.M, geo.O, geo.VW, geo.N, geo.late),
               axis2=blocks + (sums is not None), HEAD=i is not None, SUMS=sums is not None, TRAIN=geo.train,
               SHORTCUT=geo.shortcut, PREC=geo.prec, BLOCK_C=block_c, BLOCK_HC=v1._pow2(geo.HC))


# ------------------------------------------------------------------------------------- the layer

def _weights(layer):
    """(head weights [S, HC, C], 3x3 weights [S, 9, ci, co] for forward and [S, 9, co, ci] for backward)."""
    S, C = layer.nSegments, layer.nChannels
    w_head = torch.cat([conv.weight for unit in layer.units for conv in unit.head_convs()]).view(S, -1, C)
    w2 = torch.stack([unit.branch[3].weight for unit in layer.units])  # [S, co, ci, 3, 3]
    return w_head, w2.permute(0, 3, 4, 2, 1).contiguous(), w2.permute(0, 3, 4, 1, 2).contiguous()


def _run_forward(layer, x, keep):
    """(output, geometry, forward statistics, what backward keeps: the weights, and h, a2, a3 unless -optnet)."""
    geo = Geometry(layer, x)
    S = layer.nSegments
    buf = x.clone(memory_format=torch.contiguous_format)
    fstats = geo.stats_workspace(S, x.device, zeroed=geo.train)
    weights = _weights(layer)
    w_head, w2f, _ = weights
    kept = S if keep else 2
    h, a2, a3 = _activations(geo, x, kept)
    for i, unit in enumerate(layer.units):
        k, kp = (i, i - 1) if keep else (i % 2, (i - 1) % 2)
        update_head(geo, layer, i, buf, h[k], fstats, w_head, (a3[kp], h[kp]) if i else None, stats=geo.train)
        conv3x3_forward(geo, unit, h[k], a2[k], fstats[i], w2f[i], stats=geo.train, update=geo.train)
        out_conv_forward(geo, unit, a2[k], a3[k], fstats[i], stats=geo.train, update=geo.train)
    k = S - 1 if keep else (S - 1) % 2
    update_head(geo, layer, S, buf, buf, fstats, w_head, (a3[k], h[k]))
    return buf, geo, fstats, (*weights, h, a2, a3) if keep else weights


def _activations(geo, x, count):
    """h, a2, a3 for `count` units."""
    return (x.new_empty(count, geo.N, c, geo.HW) for c in (geo.HC, geo.M, geo.O))


def _run_backward(layer, geo, x, out, fstats, kept, grad_out):
    """(d loss / d x, parameter gradients in layer.parameters() order)."""
    S, O = layer.nSegments, geo.O
    grad = grad_out.clone(memory_format=torch.contiguous_format)  # becomes d loss / d x, segment by segment
    rstats = geo.stats_workspace(S, x.device, zeroed=True)
    flat, grads, unit_grads = v1.parameter_gradients(layer, geo, x.device)
    w_head, w2f, w2b, *acts = kept
    g_mid = x.new_empty(geo.N, geo.M, geo.HW)
    g_head = x.new_empty(geo.N, geo.HC, geo.HW)
    if acts:
        def unit_activations(i):
            return tuple(t[i] for t in acts)
    else:  # -optnet: recompute a unit's activations with the forward's statistics, in two alternating buffers
        buffers = list(_activations(geo, x, 2))

        def unit_activations(i):
            h, a2, a3 = (t[i % 2] for t in buffers)
            update_head(geo, layer, i, out, h, fstats, w_head, None, z_hi=x, split=i * O)
            conv3x3_forward(geo, layer.units[i], h, a2, fstats[i], w2f[i], stats=False, update=False)
            out_conv_forward(geo, layer.units[i], a2, a3, fstats[i], stats=False, update=False)
            return h, a2, a3
    h, a2, a3 = unit_activations(S - 1)
    head_backward(geo, layer, None, out, x, g_head, h, grad, w_head, fstats, rstats, unit_grads, sums=(a3, h))
    for i in reversed(range(S)):
        unit, seg0 = layer.units[i], i * O
        out_conv_backward(geo, unit, grad, seg0, a3, a2, h, g_mid, g_head, fstats[i], rstats[i], unit_grads[i])
        conv3x3_backward(geo, unit, g_mid, a2, h, g_head, w2b[i], fstats[i], rstats[i], unit_grads[i])
        h_i = h
        if i:
            h, a2, a3 = unit_activations(i - 1)
        head_backward(geo, layer, i, out, x, g_head, h_i, grad, w_head, fstats, rstats, unit_grads,
                      sums=(a3, h) if i else None)
    _bn_gradients(layer, geo, rstats, flat)
    return grad, grads


def _bn_gradients(layer, geo, rstats, flat):
    """Every BatchNorm's weight and bias gradients (sum g * xhat and sum g over the groups) from the backward
    statistics into the gradient buffer `flat`."""
    dst, src = _bn_gradient_index(layer, geo, flat.device)
    flat[dst] = rstats.sum(2).view(-1)[src].to(flat.dtype)


# UNIT_PARAMETERS name of each BatchNorm gradient: (its backward moment, the BatchNorm's place in the workspace)
_BN_GRADIENTS = {'gamma_s': (1, 's'), 'beta_s': (0, 's'), 'gamma1': (1, 'bn1'), 'beta1': (0, 'bn1'),
                 'gamma2': (1, 'bn2'), 'beta2': (0, 'bn2'), 'gamma3': (1, 'bn3'), 'beta3': (0, 'bn3')}


def _bn_gradient_index(layer, geo, device):
    """(positions in the gradient buffer, positions in the backward statistics summed over the groups,
    [S, 2, VW]) of every BatchNorm weight and bias gradient; built once per layer and device."""
    key = (device, geo.shortcut)
    cached = getattr(layer, '_fused2_bn_index', None)
    if cached is not None and cached[0] == key:
        return cached[1]
    starts = {'s': 0, 'bn1': geo.HS, 'bn2': geo.HS + geo.M, 'bn3': geo.HS + 2 * geo.M}
    names = v1.UNIT_PARAMETERS if geo.shortcut else v1.UNIT_PARAMETERS[3:]
    dst, src, offset = [], [], 0
    for i, unit in enumerate(layer.units):
        for name, param in zip(names, unit.parameters()):
            if name in _BN_GRADIENTS:
                moment, bn = _BN_GRADIENTS[name]
                start = (2 * i + moment) * geo.VW + starts[bn]
                dst += range(offset, offset + param.numel())
                src += range(start, start + param.numel())
            offset += param.numel()
    index = (torch.tensor(dst, device=device), torch.tensor(src, device=device))
    layer._fused2_bn_index = (key, index)
    return index


def forward(layer, x):
    return v1.run(layer, x, _run_forward, _run_backward)
