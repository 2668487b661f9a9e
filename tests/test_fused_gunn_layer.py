"""The fused Triton GunnLayer, both versions (-kernels triton, triton2): option wiring and fallbacks; its kernels
and the layer under the Triton interpreter (tests/fused_kernels_cases.py, in a subprocess); what the kernels
compile to for an H100 (benchmarks/fused_kernels_compile.py); and on a GPU (marked cuda) the same comparisons
with the plain path on CUDA tensors, CUDA-graph capture and peak memory."""
import copy
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from conftest import ROOT, requires_cuda
from helpers import FUSED_KERNELS, assert_float32_as_close_as_plain, assert_same_run, ran_fused, run
from helpers import fused_pair as pair

import models
import opts
from models import GunnLayer
from models.batchnorm import set_bn_split
from models.fused import layer as fused
from models.fused import layer2 as fused2

# ------------------------------------------------------------------------------- on the CPU, in CI

requires_triton = pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='Triton is not installed')


@requires_triton
def test_fused_kernels_under_the_triton_interpreter():
    """Every kernel against torch, and the layer against the plain path (tests/fused_kernels_cases.py)."""
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                             os.path.join('tests', 'fused_kernels_cases.py')],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert ' passed' in result.stdout and 'skipped' not in result.stdout, result.stdout[-2000:]


def compile_tool():
    from benchmarks import fused_kernels_compile
    return fused_kernels_compile


@requires_triton
@pytest.mark.parametrize('channels, dataset', [(24, 'cifar10'), (80, 'imagenet')])
def test_kernels_compile_for_an_h100(channels, dataset):
    """What the interpreter cannot check: every training-mode kernel of version 1 compiles for sm_90 with the
    CONFIGS table (gunn-15's unit widths, o = 12, and gunn-18's, o = 40) and fits in the 227 KB of shared
    memory an H100 block may have; and the compiled code shows the latency problems that version 2 removes
    (which proves the checks of the next test can fail): fenced atomics, float64 arithmetic inside loops, and
    loops with a single buffer and no copy left in flight."""
    rows = list(compile_tool().kernel_rows(GunnLayer(channels, 2, dataset), torch.zeros(2, channels, 8, 8)))
    assert {row['name'] for row in rows} == {name[:-len('_kernel')] for name in dir(fused._kernels())
                                             if name.endswith('_kernel')}
    assert all(row['shared'] <= 227 * 1024 for row in rows)
    assert any(row['fenced_atomics'] for row in rows) and any(row['fp64_in_loops'] for row in rows)
    assert any(loop['buffers'] < 2 and loop['in_flight'] == 0 for row in rows for loop in row['loops'])


# The first GunnLayer of each network (channels, segments, image size, dataset) and a batch that keeps the
# production tile sizes (Geometry.block_p halves them for small batches).
FIRST_LAYERS = {'gunn-15': (240, 20, 32, 'cifar10', 17), 'gunn-18': (400, 10, 56, 'imagenet', 6)}
KNOWN_SPILLS = {('gunn-18', 'conv3x3_backward')}  # benchmarks/NOTES.md: still open


@requires_triton
@pytest.mark.parametrize('net', FIRST_LAYERS)
def test_triton2_compiles_without_the_latency_problems_of_version_1(net):
    """Every kernel of -kernels triton2 on the network's first GunnLayer, compiled for an H100 (sm_90), read
    back from its SASS, PTX and TTGIR: no fenced atomic; no float64 instruction inside a loop; every innermost
    loop that loads tiles for a product software-pipelined, with at least two buffers and copies left in
    flight during the product; no register spills; at least one program fits on an SM. The two launches per
    layer without a head (the last segment's update, its bn3/bn_s reductions) are elementwise: Triton
    pipelines only the loads of products, so their loops are exempt from the buffers."""
    channels, segments, size, dataset, batch = FIRST_LAYERS[net]
    rows = list(compile_tool().kernel_rows(GunnLayer(channels, segments, dataset),
                                           torch.zeros(batch, channels, size, size), kernels='triton2'))
    assert {row['name'] for row in rows} == {name[:-len('_kernel')] for name in dir(fused2._kernels())
                                             if name.endswith('_kernel')}
    for row in rows:
        what = f'{row["name"]} {row["flags"]}'
        assert row['fenced_atomics'] == 0 and row['fp64_in_loops'] == 0, what
        assert row['fit'] >= 1, what
        assert row['spills'] == 0 or (net, row['name']) in KNOWN_SPILLS, what
        if row['flags'].get('HEAD', True):
            assert row['loops'] and all(loop['buffers'] >= 2 and loop['in_flight'] >= 1 for loop in row['loops']), what


def test_the_compile_tool_counts_the_programs_that_fit_on_an_sm():
    """The CUDA occupancy rules, by hand: registers go per warp in units of 256 (225 a thread: 7,424 a warp),
    each block reserves 1 KB of shared memory."""
    fits = compile_tool().resident_programs
    assert fits(90, 254, 4, 40 * 1024) == (2, 'registers')  # 8,192 a warp, 32,768 a program, of 65,536
    assert fits(90, 225, 4, 16 * 1024) == (2, 'registers')  # 29,696 a program
    assert fits(90, 100, 4, 0) == (4, 'registers')  # 3,328 a warp
    assert fits(90, 32, 4, 100 * 1024) == (2, 'shared memory')  # 228 KB // 101 KB
    assert fits(80, 32, 4, 100 * 1024) == (1, 'shared memory')  # 164 KB on an A100
    assert fits(90, 8, 32, 0) == (2, 'warps')  # 64 warps an SM
    assert fits(90, 32, 1, 0) == (32, 'blocks')


@pytest.mark.parametrize('kernels', FUSED_KERNELS)
def test_cpu_tensors_fall_back_to_the_aten_path_with_one_note(kernels, monkeypatch, capsys):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.setattr(fused, '_noted', set())
    reference, fast = pair(0, 8, 2, memory='share', kernels=kernels)
    reference.memory = 'share'
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    for _ in range(2):
        out_r, gx_r, gp_r = run(reference, x, torch.ones_like(x))
        out_f, gx_f, gp_f = run(fast, x, torch.ones_like(x))
        assert torch.equal(out_f, out_r) and torch.equal(gx_f, gx_r)
        assert all(torch.equal(a, b) for a, b in zip(gp_f, gp_r))
    note = capsys.readouterr().err.strip().splitlines()
    assert note == [f'note: -kernels {kernels}: the input is not on a CUDA device; using the aten GunnLayer path']


def test_what_the_kernels_do_not_handle(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '1')  # as if the kernels could run on these CPU tensors
    layer = GunnLayer(8, 2, kernels='triton')
    x = torch.randn(1, 8, 2, 2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert fused.unusable_reason(layer, x).startswith('autocast is on')
    assert fused.unusable_reason(layer.half(), x.half()).startswith('torch.float16 inputs')
    set_bn_split(layer, fused.MAX_SPLITS + 1)
    assert fused.unusable_reason(layer.float(), x) == '-bnSplit above 63'


def test_kernels_option_reaches_every_gunn_layer(tmp_path, capsys):
    opt = opts.parse(['-netType', 'gunn-mini', '-dataset', 'digits', '-save', str(tmp_path)])
    assert opt.kernels == 'aten'
    assert {layer.kernels for layer in models.gunn_layers(models.create(opt))} == {'aten'}
    for kernels in FUSED_KERNELS:
        opt = opts.parse(['-netType', 'gunn-mini', '-dataset', 'digits', '-kernels', kernels, '-save', str(tmp_path)])
        assert {layer.kernels for layer in models.gunn_layers(models.create(opt))} == {kernels}
    with pytest.raises(SystemExit) as exit_info:
        opts.parse(['-kernels', 'cuda', '-save', str(tmp_path)])
    assert exit_info.value.code == 2
    assert "argument -kernels: invalid choice: 'cuda'" in capsys.readouterr().err
    with pytest.raises(ValueError, match='unknown kernels'):
        GunnLayer(8, 2, kernels='cuda')


# ------------------------------------------------------------------------------------ on a GPU

def assert_train_then_eval(reference, fast, x):
    """A training step, then evaluation with and without gradients: the fused layer as the reference."""
    assert_same_run(reference, fast, x, torch.randn_like(x))
    reference.eval()
    fast.eval()
    out = assert_same_run(reference, fast, x, torch.randn_like(x))
    with torch.no_grad():
        torch.testing.assert_close(ran_fused(fast, x), out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('kernels', FUSED_KERNELS)
@pytest.mark.parametrize('splits, images', [(1, 2), (3, 7), (4, 10), (14, 58)])
@pytest.mark.cuda
@requires_cuda
def test_cuda_training_and_eval_float64_match_plain(splits, images, kernels):
    """-bnSplit: slices of 3, 2, 2 and 3, 2, 3, 2 images; 58 over 14 where slice_sizes' floating-point
    ceil moves a slice start. Every statistics set is compared (assert_same_run compares all buffers)."""
    reference, fast = pair(0, 16, 4, device='cuda', kernels=kernels)
    for layer in (reference, fast):
        set_bn_split(layer, splits)
    x = torch.randn(images, 16, 6, 6, dtype=torch.float64, device='cuda')
    ran_fused(fast, x)
    reference(x)
    assert_train_then_eval(reference, fast, x)


@pytest.mark.parametrize('kernels', FUSED_KERNELS)
@pytest.mark.cuda
@requires_cuda
def test_cuda_eval_and_optnet_float64_match_plain(kernels):
    reference, fast = pair(1, 16, 4, 'imagenet', memory='recompute', device='cuda', kernels=kernels)
    assert_train_then_eval(reference, fast, torch.randn(3, 16, 7, 7, dtype=torch.float64, device='cuda'))


@pytest.mark.parametrize('kernels', FUSED_KERNELS)
@pytest.mark.parametrize('tf32', [False, True])
@pytest.mark.cuda
@requires_cuda
def test_cuda_float32_as_close_as_plain(tf32, kernels, monkeypatch):
    """Without TF32 the rule of the CPU test. With it (PyTorch's default for convolutions, which the fused
    kernels follow) either path may use it, so the fused run only has to be within 2e-2 of the truth:
    TF32 keeps 10 mantissa bits (5e-4) per product, amplified by the layer's 12 BatchNorms; a wrong
    kernel is off by O(1)."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', tf32)
    reference, fast = pair(2, 48, 4, device='cuda', kernels=kernels)
    x = torch.randn(8, 48, 16, 16, dtype=torch.float64, device='cuda')
    assert_float32_as_close_as_plain(reference, fast, x, torch.randn_like(x), floor=2e-2 if tf32 else 1e-6)


@pytest.mark.parametrize('fused_kernels', FUSED_KERNELS)
@pytest.mark.cuda
@requires_cuda
def test_cuda_gunn_mini_training_step_matches_plain(fused_kernels):
    """The whole network: three GunnLayers of different widths and sizes, in float64."""
    results = []
    for kernels, shareGradInput in (('aten', False), (fused_kernels, True)):
        opt = opts.defaults(netType='gunn-mini', shareGradInput=shareGradInput, kernels=kernels)
        torch.manual_seed(3)
        model = models.create(opt).to('cuda', torch.float64)
        torch.manual_seed(4)
        x = torch.randn(6, 3, 32, 32, dtype=torch.float64, device='cuda', requires_grad=True)
        loss = nn.functional.cross_entropy(model(x), torch.arange(6, device='cuda') % 10)
        loss.backward()
        results.append((loss, x.grad, [p.grad for p in model.parameters()], list(model.buffers())))
    (loss_r, gx_r, gp_r, b_r), (loss_f, gx_f, gp_f, b_f) = results
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-12, atol=0)
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-10, atol=1e-12)
    for a, b in zip(gp_f + b_f, gp_r + b_r):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize('kernels', FUSED_KERNELS)
@pytest.mark.cuda
@requires_cuda
def test_cuda_graph_capture_of_forward_and_backward(kernels):
    """No host synchronisation (sync debug mode 'error' in an eager step) and a captured forward + backward
    replays what an eager run of the same layer computes (-bnSplit 4: slices of 2, 1, 2, 1 images)."""
    _, layer = pair(5, 32, 4, device='cuda', kernels=kernels)
    set_bn_split(layer, 4)
    x = torch.randn(6, 32, 8, 8, dtype=torch.float64, device='cuda', requires_grad=True)
    g = torch.randn_like(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # compiles the kernels, builds the eps/momentum tensor
            ran_fused(layer, x).backward(g)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.set_sync_debug_mode('error')
    try:
        layer(x).backward(g)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    x.grad = None
    layer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = layer(x)
        out.backward(g)
    eager = copy.deepcopy(layer)  # the state the replay starts from (capturing runs nothing)
    eager.zero_grad(set_to_none=True)
    graph.replay()
    torch.cuda.synchronize()
    out_e, gx_e, gp_e = run(eager, x.detach(), g)
    torch.testing.assert_close(out, out_e, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, gx_e, rtol=1e-11, atol=1e-11)
    for a, b in zip([p.grad for p in layer.parameters()] + list(layer.buffers()), gp_e + list(eager.buffers())):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize('fused_kernels', FUSED_KERNELS)
@pytest.mark.cuda
@requires_cuda
def test_cuda_peak_memory_not_above_plain(fused_kernels):
    """gunn-15's first GunnLayer (240 channels, 20 segments, 32x32), batch 16, float32 forward + backward."""
    peaks = {}
    for kernels in ('aten', fused_kernels):
        torch.manual_seed(6)
        layer = GunnLayer(240, 20, memory='plain' if kernels == 'aten' else 'share', kernels=kernels).cuda()
        x = torch.randn(16, 240, 32, 32, device='cuda', requires_grad=True)
        g = torch.randn_like(x)
        layer(x).backward(g)  # compiles; the measured step is the second
        x.grad = None
        layer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        layer(x).backward(g)
        torch.cuda.synchronize()
        peaks[kernels] = torch.cuda.max_memory_allocated() - base
        del layer, x, g
        torch.cuda.empty_cache()
    assert peaks[fused_kernels] <= peaks['aten'], peaks
