"""The fused Triton path of the GunnLayer (-kernels triton): launches, workspaces and the autograd Function.

Per update unit, 4 kernels forward and 5 backward (models/fused/kernels.py says what each computes):

  forward   head_forward            h = [shortcut; conv1](z), one GEMM over pixels, + batch statistics
            conv3x3_forward         a2 = conv3x3(relu(bn1(h_b))), bn1 on load, + statistics
            out_conv_forward        a3 = conv1x1(relu(bn2(a2))), bn2 on load, + statistics
            segment_update          layer buffer segment += bn3(a3) + bn_s(h_s), in place
  backward  out_bn_backward_sums    bn3's and bn_s's reductions of the segment's gradient
            out_conv_backward       bn3', the last 1x1 conv's input and weight gradients, relu2'
            conv3x3_backward_input  bn2', the 3x3 conv's input gradient, relu1'
            conv3x3_backward_weight the 3x3 conv's weight gradient (grid over the 9 taps)
            head_backward           bn1', the head convs' weight gradients, layer gradient += dz in place

Like the share path, the segments are updated in place in one buffer that starts as the input, and z_i is
never copied: in backward the kernels read its channels below i*o from the layer output and the others from
the layer input. Kept for backward: input, output and per segment h, a2, a3 (6o channels; the share path
keeps 10o), or with -optnet only the input, the output and the batch statistics (h, a2, a3 recomputed).

Everything is on the device and of fixed shape: no host synchronisation, CUDA-graph capturable once one
call has run eagerly on the device (that call builds the small float64 eps/momentum tensor). -bnSplit K:
the K slices of models/batchnorm.BatchNorm2d (slices.slice_sizes, uneven and empty slices too) are
the grid's second axis; slice g is normalised with its own batch statistics and updates statistics set g
in training, and is normalised with set g in evaluation. The slice boundaries are two integer kernel
arguments (Geometry.late), so no tensor has to be built for a new batch size.

Not handled, falling back to the aten path that -shareGradInput / -optnet select (one note on stderr): CPU
tensors (unless TRITON_INTERPRET=1, under which the kernels run on the CPU: the tests), a missing Triton,
autocast (half / bfloat16), dtypes other than float32 and float64, -bnSplit above 63.
"""
import functools
import itertools
import os
import sys

import torch

from support.slices import slice_sizes

# Launch settings per kernel, by dtype and unit width: BLOCK_P pixels per tile; BLOCK_K / BLOCK_C channel
# block of the reduction / of z; num_warps, num_stages. The unit's own widths (o, 2o, 3o) are padded to
# the next power of two (>= 16). How they were chosen, and what the compiler and the GPU said of them, is in
# benchmarks/NOTES.md; benchmarks/fused_kernels_compile.py and benchmarks/fused_grid_sweep.py try others.
# 'narrow': o <= 16 (gunn-15: o = 12); 'wide': gunn-18 (o = 40).
_FLOAT32_NARROW = {
    'head_forward': dict(BLOCK_P=64, BLOCK_K=32, num_warps=4, num_stages=2),
    'conv3x3_forward': dict(BLOCK_P=64, BLOCK_K=16, num_warps=4, num_stages=2),
    'out_conv_forward': dict(BLOCK_P=64, BLOCK_K=32, num_warps=4, num_stages=2),
    'segment_update': dict(BLOCK_P=128, num_warps=4),
    'out_bn_backward_sums': dict(BLOCK_P=128, num_warps=4),
    'out_conv_backward': dict(BLOCK_P=64, num_warps=4, num_stages=2),
    'conv3x3_backward_input': dict(BLOCK_P=64, BLOCK_K=16, num_warps=4, num_stages=2),
    'conv3x3_backward_weight': dict(BLOCK_P=64, num_warps=4, num_stages=2),
    'head_backward': dict(BLOCK_P=64, BLOCK_C=64, num_warps=8, num_stages=2),
}
_FLOAT32_WIDE = {
    'head_forward': dict(BLOCK_P=64, BLOCK_K=32, num_warps=8, num_stages=2),
    'conv3x3_forward': dict(BLOCK_P=32, BLOCK_K=16, num_warps=4, num_stages=1),
    'out_conv_forward': dict(BLOCK_P=64, BLOCK_K=32, num_warps=8, num_stages=2),
    'segment_update': dict(BLOCK_P=64, num_warps=4),
    'out_bn_backward_sums': dict(BLOCK_P=64, num_warps=4),
    'out_conv_backward': dict(BLOCK_P=32, num_warps=8, num_stages=2),
    'conv3x3_backward_input': dict(BLOCK_P=32, BLOCK_K=16, num_warps=8, num_stages=1),
    'conv3x3_backward_weight': dict(BLOCK_P=32, num_warps=8, num_stages=2),
    'head_backward': dict(BLOCK_P=32, BLOCK_C=64, num_warps=4, num_stages=2),
}
# float64 multiplies out in registers ('fma'), for the comparisons with the plain path (not for speed)
_FLOAT64 = {
    'head_forward': dict(BLOCK_P=64, BLOCK_K=16, num_warps=4),
    'conv3x3_forward': dict(BLOCK_P=64, BLOCK_K=16, num_warps=4),
    'out_conv_forward': dict(BLOCK_P=64, BLOCK_K=16, num_warps=4),
    'segment_update': dict(BLOCK_P=64, num_warps=4),
    'out_bn_backward_sums': dict(BLOCK_P=64, num_warps=4),
    'out_conv_backward': dict(BLOCK_P=64, num_warps=4),
    'conv3x3_backward_input': dict(BLOCK_P=64, BLOCK_K=16, num_warps=4),
    'conv3x3_backward_weight': dict(BLOCK_P=64, num_warps=4),
    'head_backward': dict(BLOCK_P=64, BLOCK_C=16, num_warps=4),
}
CONFIGS = {(torch.float32, 'narrow'): _FLOAT32_NARROW, (torch.float32, 'wide'): _FLOAT32_WIDE,
           (torch.float64, 'narrow'): _FLOAT64, (torch.float64, 'wide'): _FLOAT64}
DTYPES = (torch.float32, torch.float64)
MAX_SPLITS = 63  # Geometry.late's bits are an int64 kernel argument
PROGRAMS_PER_SM = 4  # persistent grid: programs per streaming multiprocessor, shared among the BN groups
INTERPRETER_PROGRAMS = 3  # under TRITON_INTERPRET: few programs, so that each walks several tiles

_noted = set()


def interpreting():
    return os.environ.get('TRITON_INTERPRET') == '1'


@functools.lru_cache(maxsize=None)
def _kernels():
    try:
        from . import kernels
    except ImportError:
        return None
    return kernels


def unusable_reason(layer, x):
    """Why the fused kernels cannot run this call (None when they can)."""
    if x.dtype not in DTYPES:
        return f'{x.dtype} inputs (the kernels compute in float32 or float64)'
    if not (x.is_cuda or interpreting()):
        return 'the input is not on a CUDA device'
    if torch.is_autocast_enabled(x.device.type):
        return 'autocast is on (the kernels compute in float32 or float64)'
    if _kernels() is None:
        return 'Triton is not installed'
    if _bn_consts(layer, x.device) is None:
        return "the layer's BatchNorms differ in eps or momentum"
    if layer.units[0].branch[1].splits > MAX_SPLITS:
        return f'-bnSplit above {MAX_SPLITS}'
    return None


def usable(layer, x):
    """True when the fused kernels run this call; otherwise notes once why not (stderr)."""
    reason = unusable_reason(layer, x)
    if reason is None:
        return True
    note = f'note: -kernels {layer.kernels}: {reason}; using the aten GunnLayer path'
    if note not in _noted:
        _noted.add(note)
        print(note, file=sys.stderr)
    return False


def forward(layer, x):
    return run(layer, x, _run_forward, _run_backward)


def run(layer, x, run_forward, run_backward):
    """The layer's output through one version of the fused kernels: run_forward(layer, x, keep) returns
    (output, geometry, forward statistics, what backward keeps); run_backward(layer, geometry, x, output,
    statistics, kept, grad_out) returns (d loss / d x, parameter gradients)."""
    x = x.contiguous()
    params = list(layer.parameters())
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return _FusedGunnLayerFunction.apply((run_forward, run_backward), layer, x, *params)
    return run_forward(layer, x, keep=False)[0]


def batch_norms(unit):
    """(bn_s or None, bn1, bn2, bn3) of an update unit."""
    return (unit.shortcut[1] if unit.shortcut is not None else None), unit.branch[1], unit.branch[4], unit.branch[7]


def _bn_consts(layer, device):
    """float64 [eps, momentum] on the device, shared by all the layer's BatchNorms (None if they differ).
    A tensor, because Triton passes Python floats as float32."""
    bn = layer.units[0].branch[1]
    key = (device, bn.eps, bn.momentum)
    cached = getattr(layer, '_fused_consts', None)
    if cached is not None and cached[0] == key:
        return cached[1]
    values = {(m.eps, m.momentum) for unit in layer.units for m in batch_norms(unit) if m is not None}
    if len(values) != 1 or bn.momentum is None:
        return None
    consts = torch.tensor([bn.eps, bn.momentum], dtype=torch.float64, device=device)
    layer._fused_consts = (key, consts)
    return consts


@functools.lru_cache(maxsize=None)
def _sm_count(device):
    return torch.cuda.get_device_properties(device).multi_processor_count


def _pow2(n):
    return max(16, 1 << (n - 1).bit_length())


def late_slices(n, parts):
    """Bits g where slice g of slices.slice_sizes(n, parts) starts one image after the exact
    ceil(g * n / parts), its floating-point ceil having rounded up (e.g. 58 over 14, slice 7: 29 + 1): what the
    kernels' _slice_start adds to the exact one."""
    late = 0
    for g, start in enumerate(itertools.accumulate(slice_sizes(n, parts)[:-1], initial=0)):
        lift = start + (-g * n // parts)  # start - ceil(g * n / parts)
        assert lift in (0, 1), (n, parts, g)
        late |= lift << g
    return late


def _stats_sets(bn):
    """bn's statistics sets as the kernels take them: set 0 (running mean, variance) and sets 1..K-1
    ([K - 1, channels] each; set 0 again when K = 1, never read then)."""
    if bn.splits == 1:
        return bn.running_mean, bn.running_var, bn.running_mean, bn.running_var
    return bn.running_mean, bn.running_var, bn.split_running_mean, bn.split_running_var


class Geometry:
    """Shapes, BatchNorm groups and launch settings of one GunnLayer call."""

    def __init__(self, layer, x):
        self.N, self.C, self.H, self.W = x.shape
        self.HW = self.H * self.W
        self.O = layer.oChannels
        self.M = 2 * self.O
        self.shortcut = layer.units[0].shortcut is not None
        self.HS = self.O if self.shortcut else 0
        self.HC = self.HS + self.M
        self.VW = self.HS + 2 * self.M + self.O
        self.train = layer.training
        self.G = layer.units[0].branch[1].splits  # -bnSplit slices, in training and in evaluation
        self.largest = max(slice_sizes(self.N, self.G))
        self.late = late_slices(self.N, self.G)
        self.config = CONFIGS[x.dtype, 'wide' if self.O > 16 else 'narrow']
        self.prec = 'fma' if x.dtype == torch.float64 else 'tf32' if torch.backends.cudnn.allow_tf32 else 'ieee'
        self.programs = PROGRAMS_PER_SM * _sm_count(x.device) if x.is_cuda else INTERPRETER_PROGRAMS
        self.consts = _bn_consts(layer, x.device)

    def launch(self, name, kernel_args, axis2=1, **constexprs):
        """Run kernel `name` on a (programs, groups, axis2) grid with its CONFIGS entry."""
        config = self.config[name]
        tiles = self.largest * -(-self.HW // config['BLOCK_P'])  # of the largest group
        programs = max(1, min(tiles, self.programs // (self.G * axis2)))
        kernel = getattr(_kernels(), name + '_kernel')
        kernel[(programs, self.G, axis2)](*kernel_args, **constexprs, **config)

    def stats_workspace(self, segments, device, zeroed):
        return (torch.zeros if zeroed else torch.empty)(segments, 2, self.G, self.VW, dtype=torch.float64,
                                                        device=device)


# --------------------------------------------------------------------------- one launcher per kernel

def head_forward(geo, unit, z_lo, z_hi, split, h, fstats, stats):
    w_b = unit.branch[0].weight.contiguous()
    w_s = unit.shortcut[0].weight.contiguous() if geo.shortcut else w_b
    geo.launch('head_forward', (z_lo, z_hi, split, w_s, w_b, h, fstats,
                                geo.C, geo.HW, geo.HS, geo.HC, geo.VW, geo.N, geo.late),
               STATS=stats, PREC=geo.prec, BLOCK_HC=_pow2(geo.HC))


def conv3x3_forward(geo, unit, h, a2, fstats, stats, update):
    bn1 = unit.branch[1]
    geo.launch('conv3x3_forward', (h, unit.branch[3].weight.contiguous(), a2, fstats, geo.consts,
                                   bn1.weight, bn1.bias, *_stats_sets(bn1), bn1.num_batches_tracked,
                                   geo.H, geo.W, geo.HS, geo.HC, geo.M, geo.VW, geo.N, geo.late),
               TRAIN=geo.train, STATS=stats, UPDATE=update, PREC=geo.prec, BLOCK_M=_pow2(geo.M))


def out_conv_forward(geo, unit, a2, a3, fstats, stats, update):
    bn2 = unit.branch[4]
    geo.launch('out_conv_forward', (a2, unit.branch[6].weight.contiguous(), a3, fstats, geo.consts,
                                    bn2.weight, bn2.bias, *_stats_sets(bn2), bn2.num_batches_tracked,
                                    geo.HW, geo.HS, geo.M, geo.O, geo.VW, geo.N, geo.late),
               TRAIN=geo.train, STATS=stats, UPDATE=update, PREC=geo.prec, BLOCK_O=_pow2(geo.O))


def segment_update(geo, unit, buf, seg0, a3, h, fstats, update):
    bn_s, _, _, bn3 = batch_norms(unit)
    bn_s = bn_s or bn3  # without a shortcut: a placeholder the kernel never reads
    geo.launch('segment_update', (buf, seg0, a3, h, fstats, geo.consts,
                                  bn3.weight, bn3.bias, *_stats_sets(bn3), bn3.num_batches_tracked,
                                  bn_s.weight, bn_s.bias, *_stats_sets(bn_s), bn_s.num_batches_tracked,
                                  geo.C, geo.HW, geo.HS, geo.HC, geo.M, geo.O, geo.VW, geo.N, geo.late),
               TRAIN=geo.train, UPDATE=update, SHORTCUT=geo.shortcut, BLOCK_O=_pow2(geo.O))


def out_bn_backward_sums(geo, unit, grad, seg0, a3, h, fstats, rstats):
    bn_s, _, _, bn3 = batch_norms(unit)
    bn_s = bn_s or bn3
    geo.launch('out_bn_backward_sums', (grad, seg0, a3, h, fstats, rstats, geo.consts,
                                        *_stats_sets(bn3), *_stats_sets(bn_s),
                                        geo.C, geo.HW, geo.HS, geo.HC, geo.M, geo.O, geo.VW, geo.N, geo.late),
               TRAIN=geo.train, SHORTCUT=geo.shortcut, BLOCK_O=_pow2(geo.O))


def out_conv_backward(geo, unit, grad, seg0, a3, a2, h, g_mid, g_head, fstats, rstats, grads):
    bn_s, _, bn2, bn3 = batch_norms(unit)
    bn_s = bn_s or bn3
    geo.launch('out_conv_backward', (grad, seg0, a3, a2, h, unit.branch[6].weight.contiguous(), g_mid, g_head,
                                     fstats, rstats, geo.consts,
                                     bn3.weight, *_stats_sets(bn3),
                                     bn2.weight, bn2.bias, *_stats_sets(bn2),
                                     bn_s.weight, *_stats_sets(bn_s),
                                     grads['w3'], grads['gamma3'], grads['beta3'],
                                     grads.get('gamma_s', grads['gamma3']), grads.get('beta_s', grads['beta3']),
                                     geo.C, geo.HW, geo.HS, geo.HC, geo.M, geo.O, geo.VW, geo.N, geo.late),
               TRAIN=geo.train, SHORTCUT=geo.shortcut, PREC=geo.prec, BLOCK_O=_pow2(geo.O), BLOCK_M=_pow2(geo.M))


def conv3x3_backward_input(geo, unit, g_mid, a2, h, g_head, fstats, rstats, grads):
    _, bn1, bn2, _ = batch_norms(unit)
    geo.launch('conv3x3_backward_input', (g_mid, a2, h, unit.branch[3].weight.contiguous(), g_head, fstats, rstats,
                                          geo.consts, bn2.weight, *_stats_sets(bn2),
                                          bn1.weight, bn1.bias, *_stats_sets(bn1),
                                          grads['gamma2'], grads['beta2'],
                                          geo.H, geo.W, geo.HS, geo.HC, geo.M, geo.VW, geo.N, geo.late),
               TRAIN=geo.train, PREC=geo.prec, BLOCK_M=_pow2(geo.M))


def conv3x3_backward_weight(geo, unit, g_mid, a2, h, fstats, rstats, grads):
    _, bn1, bn2, _ = batch_norms(unit)
    geo.launch('conv3x3_backward_weight', (g_mid, a2, h, grads['w2'], fstats, rstats, geo.consts,
                                           bn2.weight, *_stats_sets(bn2),
                                           bn1.weight, bn1.bias, *_stats_sets(bn1),
                                           geo.H, geo.W, geo.HS, geo.HC, geo.M, geo.VW, geo.N, geo.late),
               axis2=9, TRAIN=geo.train, PREC=geo.prec, BLOCK_M=_pow2(geo.M))


def head_backward(geo, unit, z_lo, z_hi, split, g_head, h, grad, fstats, rstats, grads):
    bn1 = unit.branch[1]
    w_b = unit.branch[0].weight.contiguous()
    w_s = unit.shortcut[0].weight.contiguous() if geo.shortcut else w_b
    blocks = -(-geo.C // geo.config['head_backward']['BLOCK_C'])
    geo.launch('head_backward', (z_lo, z_hi, split, w_s, w_b, g_head, h, grad,
                                 grads.get('w_s', grads['w_b']), grads['w_b'], fstats, rstats, geo.consts,
                                 bn1.weight, *_stats_sets(bn1), grads['gamma1'], grads['beta1'],
                                 geo.C, geo.HW, geo.HS, geo.HC, geo.M, geo.VW, geo.N, geo.late),
               axis2=blocks, TRAIN=geo.train, PREC=geo.prec, BLOCK_HC=_pow2(geo.HC))


# ------------------------------------------------------------------------------------- the layer

UNIT_PARAMETERS = ('w_s', 'gamma_s', 'beta_s', 'w_b', 'gamma1', 'beta1', 'w2', 'gamma2', 'beta2',
                   'w3', 'gamma3', 'beta3')  # UpdateUnit.parameters() order (no shortcut: the last 9)


def parameter_gradients(layer, geo, device):
    """(one zeroed buffer, the gradients of layer.parameters() as views of it, and per unit a dict of its own
    by UNIT_PARAMETERS name)."""
    params = list(layer.parameters())
    flat = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=device)
    grads = [g.view_as(p) for g, p in zip(flat.split([p.numel() for p in params]), params)]
    names = UNIT_PARAMETERS if geo.shortcut else UNIT_PARAMETERS[3:]
    return flat, grads, [dict(zip(names, grads[i:i + len(names)])) for i in range(0, len(grads), len(names))]


def _run_forward(layer, x, keep):
    """(output, geometry, forward statistics, kept activations) of the fused forward."""
    geo = Geometry(layer, x)
    S = layer.nSegments
    buf = x.clone(memory_format=torch.contiguous_format)
    fstats = geo.stats_workspace(S, x.device, zeroed=geo.train)
    kept = S if keep else 1
    h = x.new_empty(kept, geo.N, geo.HC, geo.HW)
    a2 = x.new_empty(kept, geo.N, geo.M, geo.HW)
    a3 = x.new_empty(kept, geo.N, geo.O, geo.HW)
    for i, unit in enumerate(layer.units):
        k = i if keep else 0
        head_forward(geo, unit, buf, buf, 0, h[k], fstats[i], stats=geo.train)
        conv3x3_forward(geo, unit, h[k], a2[k], fstats[i], stats=geo.train, update=geo.train)
        out_conv_forward(geo, unit, a2[k], a3[k], fstats[i], stats=geo.train, update=geo.train)
        segment_update(geo, unit, buf, i * geo.O, a3[k], h[k], fstats[i], update=geo.train)
    return buf, geo, fstats, ((h, a2, a3) if keep else ())


def _run_backward(layer, geo, x, out, fstats, kept, grad_out):
    """(d loss / d x, parameter gradients in layer.parameters() order)."""
    S, O = layer.nSegments, geo.O
    grad = grad_out.clone(memory_format=torch.contiguous_format)  # becomes d loss / d x, segment by segment
    rstats = geo.stats_workspace(S, x.device, zeroed=True)
    _, grads, unit_grads = parameter_gradients(layer, geo, x.device)
    g_mid = x.new_empty(geo.N, geo.M, geo.HW)
    g_head = x.new_empty(geo.N, geo.HC, geo.HW)
    if not kept:
        h, a2, a3 = (x.new_empty(geo.N, c, geo.HW) for c in (geo.HC, geo.M, geo.O))
    for i in reversed(range(S)):
        unit, seg0 = layer.units[i], i * O
        if kept:
            h, a2, a3 = (t[i] for t in kept)
        else:  # -optnet: recompute the unit's activations with the forward's statistics
            head_forward(geo, unit, out, x, seg0, h, fstats[i], stats=False)
            conv3x3_forward(geo, unit, h, a2, fstats[i], stats=False, update=False)
            out_conv_forward(geo, unit, a2, a3, fstats[i], stats=False, update=False)
        out_bn_backward_sums(geo, unit, grad, seg0, a3, h, fstats[i], rstats[i])
        out_conv_backward(geo, unit, grad, seg0, a3, a2, h, g_mid, g_head, fstats[i], rstats[i], unit_grads[i])
        conv3x3_backward_input(geo, unit, g_mid, a2, h, g_head, fstats[i], rstats[i], unit_grads[i])
        conv3x3_backward_weight(geo, unit, g_mid, a2, h, fstats[i], rstats[i], unit_grads[i])
        head_backward(geo, unit, out, x, seg0, g_head, h, grad, fstats[i], rstats[i], unit_grads[i])
    return grad, grads


class _FusedGunnLayerFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, runs, layer, x, *params):
        out, geo, fstats, kept = runs[0](layer, x, keep=layer.memory != 'recompute')
        ctx.run_backward, ctx.layer, ctx.geo = runs[1], layer, geo
        ctx.save_for_backward(x, out, fstats, *kept)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, out, fstats, *kept = ctx.saved_tensors
        grad, grads = ctx.run_backward(ctx.layer, ctx.geo, x, out, fstats, kept, grad_out)
        return (None, None, grad, *grads)
