"""The fused Triton GunnLayer (-kernels triton) under the Triton interpreter, on the CPU.

Not collected by a plain `pytest` run: tests/test_fused_gunn_layer.py runs this file in a subprocess with
TRITON_INTERPRET=1, which must be set before Triton compiles anything (and would slow every other test).
By hand: TRITON_INTERPRET=1 python -m pytest -q tests/fused_kernels_cases.py

Each kernel against a torch computation of the same quantity, then the whole layer against the plain
autograd path (float64: outputs, input and parameter gradients, running statistics; train, eval,
-bnSplit with uneven and empty slices, every statistics set, -optnet), float32 within a stated tolerance,
and the golden Lua GunnLayers; for both versions of the kernels (-kernels triton and triton2; the second
version's on fewer -bnSplit cases, the slice arithmetic being the first version's).
"""
import copy
import itertools
import os

os.environ.setdefault('TRITON_INTERPRET', '1')  # noqa: E402 (before Triton sees a kernel)

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from helpers import FUSED_KERNELS, assert_float32_as_close_as_plain, assert_same_run, ran_fused, randomised
from helpers import fused_pair as pair

from golden import cases as golden
from golden import networks as parity
from models import GunnLayer
from models.batchnorm import BatchNorm2d, set_bn_split
from models.fused import kernels as fused_kernels
from models.fused import layer as fused
from models.fused import layer2 as fused2
from support.slices import slice_sizes

pytestmark = pytest.mark.skipif(os.environ.get('TRITON_INTERPRET') != '1', reason='needs TRITON_INTERPRET=1')


def use_small_tiles(monkeypatch):
    """Tiles of 16 pixels and channel blocks of 16: images of 25-81 pixels span several tiles, the last one
    partial, and odd widths span several channel blocks. (The other tests run the configured table.)"""
    for table in itertools.chain(fused.CONFIGS.values(), fused2.CONFIGS.values()):
        for name, config in list(table.items()):
            small = {key: 16 for key in ('BLOCK_P', 'BLOCK_K') if key in config}
            monkeypatch.setitem(table, name, dict(config, **small))


@pytest.fixture
def small_tiles(monkeypatch):
    use_small_tiles(monkeypatch)


# ------------------------------------------------------------------------- one kernel at a time

SPLITS = 2  # -bnSplit of the kernel tests


def groups(t):
    return t.split(slice_sizes(t.size(0), SPLITS))


def group_sums(t):
    """[2, groups, channels]: per-group sum and sum of squares over images and pixels."""
    return torch.stack([torch.stack([c.sum((0, 2, 3)), c.square().sum((0, 2, 3))]) for c in groups(t)], 1)


def group_grad_sums(g, x):
    """[2, groups, channels]: per-group sum g and sum g * xhat, xhat normalised with the group's statistics."""
    rows = []
    for gc, xc in zip(groups(g), groups(x)):
        mean = xc.mean((0, 2, 3), keepdim=True)
        xhat = (xc - mean) / torch.sqrt(xc.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
        rows.append(torch.stack([gc.sum((0, 2, 3)), (gc * xhat).sum((0, 2, 3))]))
    return torch.stack(rows, 1)


class KernelRun:
    """Segment 1 of a GunnLayer(16, 2) (-bnSplit 2, 3 images: groups of 2 and 1, 5x5 pixels): the fused
    kernels one after another, and the same unit through aten with autograd, keeping every intermediate."""

    def __init__(self, dataset):
        torch.manual_seed(11)
        layer = randomised(GunnLayer(16, 2, dataset)).double()
        set_bn_split(layer, SPLITS)
        self.layer, self.unit = layer, layer.units[1]
        self.ref_unit = copy.deepcopy(self.unit)
        self.z = torch.randn(3, 16, 5, 5, dtype=torch.float64)
        self.gy = torch.randn(3, 8, 5, 5, dtype=torch.float64)
        self.geo = geo = fused.Geometry(layer, self.z)
        self.seg0 = 8
        self._reference()
        self.fstats, self.rstats = geo.stats_workspace(2, self.z.device, zeroed=True)  # one segment each
        new = self.z.new_empty
        self.h, self.a2, self.a3 = (new(3, c, 25) for c in (geo.HC, geo.M, geo.O))
        self.g_mid, self.g_head = new(3, geo.M, 25), new(3, geo.HC, 25)
        self.buf = torch.randn(3, 16, 5, 5, dtype=torch.float64)
        self.buf_before = self.buf.clone()
        self.grad = torch.randn(3, 16, 5, 5, dtype=torch.float64)
        self.grad[:, 8:] = self.gy
        self.grad_before = self.grad.clone()
        params = list(self.unit.parameters())
        flat = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
        names = fused.UNIT_PARAMETERS if geo.shortcut else fused.UNIT_PARAMETERS[3:]
        self.grads = dict(zip(names, (g.view_as(p) for g, p in zip(flat.split([p.numel() for p in params]), params))))
        self._fused()

    def _reference(self):
        u = self.ref_unit
        z = self.z.clone().requires_grad_()
        r = {}
        r['hs'] = u.shortcut[0](z) if u.shortcut is not None else None
        r['hb'] = u.branch[0](z)
        r['u1'] = u.branch[1](r['hb'])
        r['a2'] = u.branch[3](F.relu(r['u1']))
        r['u2'] = u.branch[4](r['a2'])
        r['a3'] = u.branch[6](F.relu(r['u2']))
        y = u.branch[7](r['a3'])
        if u.shortcut is not None:
            y = u.shortcut[1](r['hs']) + y
        for t in r.values():
            if t is not None:
                t.retain_grad()
        (y * self.gy).sum().backward()
        r['y'], r['gz'] = y.detach(), z.grad
        self.ref = r

    def _fused(self):
        geo, unit, z, seg0 = self.geo, self.unit, self.z, self.seg0
        fused.head_forward(geo, unit, z, z, 0, self.h, self.fstats, stats=True)
        fused.conv3x3_forward(geo, unit, self.h, self.a2, self.fstats, stats=True, update=True)
        fused.out_conv_forward(geo, unit, self.a2, self.a3, self.fstats, stats=True, update=True)
        fused.segment_update(geo, unit, self.buf, seg0, self.a3, self.h, self.fstats, update=True)
        fused.out_bn_backward_sums(geo, unit, self.grad, seg0, self.a3, self.h, self.fstats, self.rstats)
        fused.out_conv_backward(geo, unit, self.grad, seg0, self.a3, self.a2, self.h, self.g_mid, self.g_head,
                                self.fstats, self.rstats, self.grads)
        fused.conv3x3_backward_input(geo, unit, self.g_mid, self.a2, self.h, self.g_head, self.fstats, self.rstats,
                                     self.grads)
        fused.conv3x3_backward_weight(geo, unit, self.g_mid, self.a2, self.h, self.fstats, self.rstats, self.grads)
        fused.head_backward(geo, unit, z, z, 0, self.g_head, self.h, self.grad, self.fstats, self.rstats, self.grads)

    def v(self, bn):
        """Workspace channel range of one of the unit's BatchNorms."""
        geo = self.geo
        start = {'s': 0, 'bn1': geo.HS, 'bn2': geo.HS + geo.M, 'bn3': geo.HS + 2 * geo.M}[bn]
        return slice(start, start + (geo.M if bn in ('bn1', 'bn2') else geo.O))


class KernelRun2(KernelRun):
    """The same unit through version 2's kernels (-kernels triton2), as segment 1 of 2: its head (no update
    before it), the 3x3 and last 1x1 convolutions, the update of its segment (no head after it), its
    bn3/bn_s reductions (no head), the out-conv and 3x3 backward, its head backward; then the BatchNorm weight
    and bias gradients read off the backward statistics."""

    def _fused(self):
        geo = self.geo = fused2.Geometry(self.layer, self.z)
        layer, unit, z, seg0 = self.layer, self.unit, self.z, self.seg0
        fstats, rstats = (torch.zeros(2, *t.shape, dtype=t.dtype) for t in (self.fstats, self.rstats))
        w_head, w2f, w2b = fused2._weights(layer)
        fused2.update_head(geo, layer, 1, z, self.h, fstats, w_head, None, stats=True)
        fused2.conv3x3_forward(geo, unit, self.h, self.a2, fstats[1], w2f[1], stats=True, update=True)
        fused2.out_conv_forward(geo, unit, self.a2, self.a3, fstats[1], stats=True, update=True)
        fused2.update_head(geo, layer, 2, self.buf, self.buf, fstats, w_head, (self.a3, self.h))
        grads = [{}, self.grads]
        fused2.head_backward(geo, layer, None, z, z, self.g_head, self.h, self.grad, w_head, fstats, rstats, grads,
                             sums=(self.a3, self.h))
        fused2.out_conv_backward(geo, unit, self.grad, seg0, self.a3, self.a2, self.h, self.g_mid, self.g_head,
                                 fstats[1], rstats[1], self.grads)
        fused2.conv3x3_backward(geo, unit, self.g_mid, self.a2, self.h, self.g_head, w2b[1], fstats[1], rstats[1],
                                self.grads)
        fused2.head_backward(geo, layer, 1, z, z, self.g_head, self.h, self.grad, w_head, fstats, rstats, grads,
                             sums=None)
        flat, _, layer_grads = fused.parameter_gradients(layer, geo, z.device)
        fused2._bn_gradients(layer, geo, rstats, flat)
        for name, grad in layer_grads[1].items():
            if name.startswith(('gamma', 'beta')):
                self.grads[name].copy_(grad)
        self.fstats.copy_(fstats[1])
        self.rstats.copy_(rstats[1])


@pytest.fixture(scope='module', params=[(d, k) for k in ('triton', 'triton2') for d in ('cifar10', 'imagenet')],
                ids=lambda p: '-'.join(p))
def kr(request):
    dataset, kernels = request.param
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_small_tiles(monkeypatch)
        return (KernelRun if kernels == 'triton' else KernelRun2)(dataset)


def close(a, b):
    torch.testing.assert_close(a, b.reshape(a.shape), rtol=1e-12, atol=1e-12)


def heads(kr):
    r = kr.ref
    return torch.cat([r['hs'], r['hb']], 1) if r['hs'] is not None else r['hb']


def test_head_forward(kr):
    close(kr.h, heads(kr).detach())
    sums = group_sums(heads(kr).detach())
    close(kr.fstats[:, :, :kr.geo.HC], sums)


def test_head_forward_reads_z_from_two_tensors():
    """Backward's recomputation reads z_i's channels below i*o from the layer output, the others from the
    input."""
    torch.manual_seed(12)
    layer = GunnLayer(16, 2).double()
    lo, hi = torch.randn(2, 2, 16, 3, 3, dtype=torch.float64)
    geo = fused.Geometry(layer, lo)
    h = lo.new_empty(2, geo.HC, 9)
    fused.head_forward(geo, layer.units[1], lo, hi, 5, h, geo.stats_workspace(1, lo.device, True)[0], stats=False)
    z = torch.cat([lo[:, :5], hi[:, 5:]], 1)
    unit = layer.units[1]
    close(h, torch.cat([unit.shortcut[0](z), unit.branch[0](z)], 1).detach())


def test_conv3x3_forward(kr):
    close(kr.a2, kr.ref['a2'].detach())
    close(kr.fstats[:, :, kr.v('bn2')], group_sums(kr.ref['a2'].detach()))


def test_out_conv_forward(kr):
    close(kr.a3, kr.ref['a3'].detach())
    close(kr.fstats[:, :, kr.v('bn3')], group_sums(kr.ref['a3'].detach()))


def test_segment_update(kr):
    expected = kr.buf_before.clone()
    expected[:, 8:] += kr.ref['y']
    close(kr.buf, expected)


def test_each_group_updates_its_statistics_set(kr):
    """bn1 by conv3x3_forward, bn2 by out_conv_forward, bn3 and the shortcut's by segment_update."""
    assert_same_statistics_sets(kr.ref_unit, kr.unit)


def assert_same_statistics_sets(reference, fast):
    """Every statistics set of every BatchNorm, and num_batches_tracked. Sets 0 and 1 must have moved
    apart (their slices differ), or a set updated from the wrong slice could go unseen."""
    pairs = [(a, b) for a, b in zip(fast.modules(), reference.modules()) if isinstance(b, BatchNorm2d)]
    assert pairs and all(a.splits == b.splits for a, b in pairs)
    for ours, ref in pairs:
        for i in range(ref.splits):
            for a, b in zip(ours.running_stats(i), ref.running_stats(i)):
                torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-16)
        assert ours.num_batches_tracked == ref.num_batches_tracked
        if ref.splits > 1:
            assert not torch.equal(ref.running_stats(0)[0], ref.running_stats(1)[0])


@triton.jit
def _slice_starts_kernel(starts, N, late):
    g = tl.program_id(1)
    tl.store(starts + g, fused_kernels._slice_start(g, N, late))


def test_slice_starts_are_those_of_slice_sizes():
    """Every (batch, -bnSplit) below 200 images where the floating-point ceil of slice_sizes differs from
    the exact one (58 over 14 the first; at bits above 31 from 63 over 49), and some where it does not."""
    cases = [(n, k) for k in range(2, fused.MAX_SPLITS + 1) for n in range(1, 200) if fused.late_slices(n, k)]
    assert (58, 14) in cases and any(fused.late_slices(n, k) >= 1 << 31 for n, k in cases)
    for n, k in cases + [(10, 4), (7, 3), (3, 4), (2, 4), (5, 1), (1000, 63)]:
        starts = torch.empty(k, dtype=torch.int64)
        _slice_starts_kernel[(1, k)](starts, n, fused.late_slices(n, k))
        assert starts.tolist() == list(itertools.accumulate(slice_sizes(n, k)[:-1], initial=0)), (n, k)


def test_out_bn_backward_sums(kr):
    close(kr.rstats[:, :, kr.v('bn3')], group_grad_sums(kr.gy, kr.ref['a3'].detach()))
    if kr.geo.shortcut:
        close(kr.rstats[:, :, kr.v('s')], group_grad_sums(kr.gy, kr.ref['hs'].detach()))


def test_out_conv_backward(kr):
    r, u, g = kr.ref, kr.ref_unit, kr.grads
    close(kr.g_mid, r['u2'].grad)
    close(kr.rstats[:, :, kr.v('bn2')], group_grad_sums(r['u2'].grad, r['a2'].detach()))
    close(g['w3'], u.branch[6].weight.grad)
    close(g['gamma3'], u.branch[7].weight.grad)
    close(g['beta3'], u.branch[7].bias.grad)
    if kr.geo.shortcut:
        close(kr.g_head[:, :kr.geo.HS], r['hs'].grad)
        close(g['gamma_s'], u.shortcut[1].weight.grad)
        close(g['beta_s'], u.shortcut[1].bias.grad)


def test_conv3x3_backward_input(kr):
    r, u, g = kr.ref, kr.ref_unit, kr.grads
    close(kr.g_head[:, kr.geo.HS:], r['u1'].grad)
    close(kr.rstats[:, :, kr.v('bn1')], group_grad_sums(r['u1'].grad, r['hb'].detach()))
    close(g['gamma2'], u.branch[4].weight.grad)
    close(g['beta2'], u.branch[4].bias.grad)


def test_conv3x3_backward_weight(kr):
    close(kr.grads['w2'], kr.ref_unit.branch[3].weight.grad)


def test_head_backward(kr):
    u, g = kr.ref_unit, kr.grads
    close(kr.grad, kr.grad_before + kr.ref['gz'])
    close(g['w_b'], u.branch[0].weight.grad)
    close(g['gamma1'], u.branch[1].weight.grad)
    close(g['beta1'], u.branch[1].bias.grad)
    if kr.geo.shortcut:
        close(g['w_s'], u.shortcut[0].weight.grad)


# ------------------------------------------------------------------- the layer against the plain path

@pytest.mark.parametrize('kernels', FUSED_KERNELS)
def test_training_mode_matches_plain_float64(kernels):
    """(Without a shortcut: the golden gunnlayer_imagenet case below.)"""
    reference, fast = pair(0, 16, 4, kernels=kernels)
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    ran_fused(fast, x)  # one forward more on each: running statistics updated twice
    reference(x)
    assert_same_run(reference, fast, x, torch.randn_like(x))


@pytest.mark.parametrize('kernels', FUSED_KERNELS)
def test_gunn15_unit_widths_and_optnet_recompute(small_tiles, kernels):
    """o = 12 as in gunn-15 (widths 12, 24, 36 in blocks of 16; triton2's 3x3 kernels in two blocks of output
    channels), 7x7 images (tiles of 16 pixels, the last one of a single pixel), and -optnet: h, a2, a3
    recomputed in backward (triton2: z read from the layer output and input, a unit recomputed before the
    head backward of the next one needs it)."""
    reference, fast = pair(1, 24, 2, memory='recompute', kernels=kernels)
    x = torch.randn(2, 24, 7, 7, dtype=torch.float64)
    assert_same_run(reference, fast, x, torch.randn_like(x))


@pytest.mark.parametrize('kernels', FUSED_KERNELS)
def test_eval_mode_with_and_without_gradients(kernels):
    reference, fast = pair(2, 16, 4, kernels=kernels)
    reference.eval()
    fast.eval()
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    out = assert_same_run(reference, fast, x, torch.randn_like(x))  # backward through the running statistics
    with torch.no_grad():
        torch.testing.assert_close(ran_fused(fast, x), out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('kernels', FUSED_KERNELS)
def test_no_grad_training_forward_updates_running_stats(kernels):
    reference, fast = pair(3, 16, 4, kernels=kernels)
    x = torch.randn(3, 16, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ran_fused(fast, x), reference(x), rtol=1e-12, atol=1e-12)
    for a, b in zip(fast.buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


@pytest.mark.parametrize('kernels, splits, images, sizes', [
    ('triton', 3, 7, [3, 2, 2]), ('triton', 4, 10, [3, 2, 3, 2]), ('triton', 4, 3, [1, 1, 1, 0]),
    ('triton', 4, 2, [1, 0, 1, 0]), ('triton2', 4, 10, [3, 2, 3, 2]), ('triton2', 4, 2, [1, 0, 1, 0])])
def test_bn_split_slices_and_statistics_sets(kernels, splits, images, sizes):
    """-bnSplit as DataParallelTable cut the batch (slices.slice_sizes: 10 over 4 is 3, 2, 3, 2, not
    tensor_split's 3, 3, 2, 2; empty slices skipped, also between two others), each slice with its own
    statistics set: trained, then evaluated with and without gradients."""
    assert slice_sizes(images, splits) == sizes
    reference, fast = pair(5, 16, 2, kernels=kernels)
    for layer in (reference, fast):
        set_bn_split(layer, splits)
    x = torch.randn(images, 16, 3, 3, dtype=torch.float64)
    assert_same_run(reference, fast, x, torch.randn_like(x))
    assert_same_statistics_sets(reference, fast)
    reference.eval()
    fast.eval()
    out = assert_same_run(reference, fast, x, torch.randn_like(x))
    with torch.no_grad():
        torch.testing.assert_close(ran_fused(fast, x), out, rtol=1e-12, atol=1e-12)
    assert_same_statistics_sets(reference, fast)


def test_bn_split_where_the_floating_point_ceil_moves_a_slice():
    """58 images over 14: slice_sizes' floating-point ceil starts slice 7 at 30, not at 29 (the smallest
    batch where it matters). One segment of 2x2 images and training only, to stay quick."""
    assert slice_sizes(58, 14) == [5, 4, 4, 4, 4, 4, 5] + [4] * 7
    reference, fast = pair(8, 8, 1)
    for layer in (reference, fast):
        set_bn_split(layer, 14)
    x = torch.randn(58, 8, 2, 2, dtype=torch.float64)
    assert_same_run(reference, fast, x, torch.randn_like(x))
    assert_same_statistics_sets(reference, fast)


@pytest.mark.parametrize('kernels', FUSED_KERNELS)
def test_input_without_grad_still_gives_parameter_gradients(kernels):
    reference, fast = pair(6, 8, 2, kernels=kernels)
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    for layer in (reference, fast):
        layer(x).square().sum().backward()
    for a, b in zip(fast.parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('kernels', FUSED_KERNELS)
def test_float32_as_close_as_plain(kernels):
    """triton2 sums the batch statistics per thread in float32 before one float64 reduction per program."""
    reference, fast = pair(7, 16, 4, kernels=kernels)
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    assert_float32_as_close_as_plain(reference, fast, x, torch.randn_like(x))


# launches of a GunnLayer of 4 segments: train forward, backward, eval forward
GOLDEN_LAUNCHES = {'triton': 4 * 4 + 5 * 4 + 4 * 4, 'triton2': (3 * 4 + 1) * 3}


@pytest.mark.parametrize('kernels', FUSED_KERNELS)
@pytest.mark.parametrize('case', ['gunnlayer_cifar', 'gunnlayer_imagenet'])
def test_golden_lua_gunnlayer(case, kernels, monkeypatch):
    launched = []
    geometry = (fused if kernels == 'triton' else fused2).Geometry
    launch = geometry.launch
    monkeypatch.setattr(geometry, 'launch', lambda geo, name, *args, **kw: launched.append(name) or
                        launch(geo, name, *args, **kw))
    report = golden.Report()
    parity.check_gunnlayer(report, case, modes=('share',), kernels=kernels)
    assert report.passed, report.table()
    assert len(report.rows) == 5 and all(kernels in row[0] for row in report.rows)
    assert len(launched) == GOLDEN_LAUNCHES[kernels]
