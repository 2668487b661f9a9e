"""On a CUDA GPU (skipped elsewhere, with the reason; tools/gpu_check.sh runs them): every GunnLayer path against
the plain path and the CPU, autocast, -bnSplit, the golden gunn-mini step, main.py end to end with -resume and
-testOnly, -cudaGraph against eager, and DistributedDataParallel with CUDA tensors on one GPU.

Float64 comparisons are as tight as on the CPU. Convolutions of float32 data on the GPU run in TF32 by
default (10-bit mantissa); the tests that compare float32 results switch it off.

GUNN_TEST_DEVICE=cpu runs them on the CPU instead: a rehearsal of their plumbing on a machine without a GPU
(the parts that only exist on a GPU skip), not a result."""
import copy
import csv
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from ddp_one_gpu import ONE_GPU, train_two_steps
from helpers import FUSED_KERNELS, ROOT, assert_same_run, assert_same_state, batches, mini, mini_opt, pair, quiet, run

import models
from golden import cases as golden
from golden import networks as parity
from models.fused import layer as fused_gunn_layer
from models.fused import layer2 as fused_gunn_layer2
from models.gunn_layer import MEMORY_MODES
from support import distributed
from tools import make_cifar
from train import Trainer

DEVICE = torch.device(os.environ.get('GUNN_TEST_DEVICE', 'cuda'))
# cuBLAS is deterministic across streams only with a fixed workspace (the CUDA-graph warm-up runs on a side
# stream); set before the first matrix product of this process and inherited by the main.py runs
os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(DEVICE.type == 'cuda' and not torch.cuda.is_available(),
                                                   reason='no CUDA GPU visible: run tools/gpu_check.sh on a GPU machine')]
on_gpu_only = pytest.mark.skipif(DEVICE.type != 'cuda', reason='needs a GPU (GUNN_TEST_DEVICE=cpu rehearsal)')


@pytest.fixture
def exact_cuda():
    """Deterministic cuDNN algorithms and no TF32, restored afterwards."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = saved


# ---- the GunnLayer paths ----

def assert_same_results(ours, reference):
    """(output, input gradient, parameter gradients) of two runs, at the tolerances of test_gunn_layer."""
    torch.testing.assert_close(ours[0].cpu(), reference[0].cpu(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[1].cpu(), reference[1].cpu(), rtol=1e-11, atol=1e-11)
    for a, b in zip(ours[2], reference[2]):
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize('dataset', ['cifar10', 'imagenet'])
@pytest.mark.parametrize('mode', MEMORY_MODES)
def test_gunn_layer_path_on_cuda_matches_plain_on_cuda_and_cpu(dataset, mode, exact_cuda):
    reference, layer = pair(0, 24, 6, dataset, mode)
    x = torch.randn(3, 24, 7, 5, dtype=torch.float64)
    g = torch.randn_like(x)
    on_cpu = copy.deepcopy(reference)
    cpu = run(on_cpu, x, g)
    plain = run(reference.to(DEVICE), x.to(DEVICE), g.to(DEVICE))
    ours = run(layer.to(DEVICE), x.to(DEVICE), g.to(DEVICE))
    assert_same_results(ours, plain)
    assert_same_results(ours, cpu)
    for a, b, c in zip(layer.buffers(), reference.buffers(), on_cpu.buffers()):  # running statistics
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)
        torch.testing.assert_close(a.cpu(), c, rtol=1e-13, atol=0)


@pytest.mark.parametrize('mode', ['share', 'recompute'])
def test_eval_mode_on_cuda(mode, exact_cuda):
    reference, layer = pair(1, 16, 4, 'cifar10', mode)
    reference.to(DEVICE).eval()
    layer.to(DEVICE).eval()
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64, device=DEVICE)
    out = assert_same_run(reference, layer, x, torch.randn_like(x))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('splits', [2, 3])
@pytest.mark.parametrize('mode', ['share', 'recompute'])
def test_bn_split_on_cuda(mode, splits, exact_cuda):
    reference, layer = pair(5, 16, 4, 'cifar10', mode)
    for m in (reference, layer):
        models.batchnorm.set_bn_split(m.to(DEVICE), splits)
    x = torch.randn(7, 16, 4, 4, dtype=torch.float64, device=DEVICE)  # slices of unequal size
    assert_same_run(reference, layer, x, torch.randn_like(x))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('mode', ['share', 'recompute'])
def test_autocast_on_cuda_matches_plain(dtype, mode, exact_cuda):
    reference, layer = pair(4, 16, 4, 'cifar10', mode, torch.float32)
    x = torch.randn(4, 16, 8, 8, device=DEVICE)
    g = torch.randn(4, 16, 8, 8, device=DEVICE)
    results = []
    for m in (reference.to(DEVICE), layer.to(DEVICE)):
        xi = x.clone().requires_grad_()
        with torch.autocast(DEVICE.type, dtype=dtype):
            out = m(xi)
        out.float().backward(g)
        results.append((out.float(), xi.grad, [p.grad for p in m.parameters()]))
    (out_r, gx_r, gp_r), (out_f, gx_f, gp_f) = results
    # as on the CPU: 3 (bfloat16) or 4 (float16) digits, rounded differently by the two paths
    torch.testing.assert_close(out_f, out_r, rtol=0.05, atol=0.05)
    assert (gx_f - gx_r).norm() <= 0.02 * gx_r.norm()
    for a, b in zip(gp_f, gp_r):
        assert a.dtype == torch.float32 and (a - b).norm() <= 0.05 * b.norm() + 1e-3


# ---- golden data of the Lua code ----

def assert_all_within(report):
    failed = [row for row in report.rows if not row[-1]]
    assert report.rows and not failed, '\n' + report.table()


# (the fused Triton path on a GPU only: elsewhere it falls back to the aten path, tested above)
PATHS = [(memory, 'aten') for memory in MEMORY_MODES] + [
    pytest.param(memory, kernels, marks=on_gpu_only) for kernels in FUSED_KERNELS for memory in ('share', 'recompute')]


@pytest.fixture
def fused_calls(monkeypatch):
    """How many GunnLayer forwards each version of the fused Triton path ran (so that a silent fallback
    cannot pass)."""
    calls = []
    for kernels, module in (('triton', fused_gunn_layer), ('triton2', fused_gunn_layer2)):
        monkeypatch.setattr(module, 'forward', lambda layer, x, fused=module.forward, kernels=kernels:
                            calls.append(kernels) or fused(layer, x))
    return calls


def assert_fused_ran(kernels, fused_calls):
    assert set(fused_calls) == ({kernels} if kernels in FUSED_KERNELS else set()), fused_calls


@pytest.mark.parametrize('memory,kernels', PATHS)
def test_golden_gunn_layers_on_cuda(memory, kernels, exact_cuda, fused_calls):
    report = golden.Report()
    for case in ('gunnlayer_cifar', 'gunnlayer_imagenet'):
        parity.check_gunnlayer(report, case, modes=(memory,), device=DEVICE.type, kernels=kernels)
    assert len(report.rows) == 10
    assert_all_within(report)
    assert_fused_ran(kernels, fused_calls)


@pytest.mark.parametrize('memory,kernels', PATHS)
def test_golden_gunn_train_step_on_cuda(memory, kernels, exact_cuda, fused_calls):
    report = golden.Report()
    parity.check_gunn_train(report, memory=memory, device=DEVICE.type, kernels=kernels)
    assert len(report.rows) == 14
    assert_all_within(report)
    assert_fused_ran(kernels, fused_calls)


# ---- -cudaGraph: the captured step against the eager one ----

@on_gpu_only
@pytest.mark.parametrize('memory,dtype,precision,bnSplit', [
    ('share', torch.float64, 'double', 1), ('plain', torch.float64, 'double', 2),
    ('recompute', torch.float64, 'double', 1), ('share', torch.float32, 'single', 2),
    ('share', torch.float32, 'bf16', 1)])
def test_cuda_graph_trains_as_eager(memory, dtype, precision, bnSplit, exact_cuda):
    """A replayed graph runs the same kernels on the same data as the eager step: with deterministic
    algorithms the parameters are equal bit for bit, in every precision, across a partial batch and two
    learning-rate changes (each a recapture)."""
    trainers = []
    for graph in (False, True):
        model = mini(dtype, bnSplit, memory).to(DEVICE)
        trainers.append(Trainer(model, nn.CrossEntropyLoss(), mini_opt(precision=precision, nEpochs=4,
                                                                          cudaGraph=graph),
                                process=distributed.Process(device=DEVICE.type)))
    eager, graphed = trainers
    assert type(graphed.runStep).__name__ == 'GraphedStep'
    data = batches((8, 8, 8, 8, 8, 3), dtype)
    for epoch in (1, 2, 3):
        (expected, _), (got, _) = quiet(eager.train, epoch, data), quiet(graphed.train, epoch, data)
        assert got == expected
    assert_same_state(graphed.model, eager.model, (graphed.optimizer, eager.optimizer))


@pytest.mark.parametrize('precision', ['half', 'bf16'])
def test_trainer_mixed_precision_on_cuda(precision):
    model = mini(torch.float32).to(DEVICE)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, nn.CrossEntropyLoss(), mini_opt(precision=precision),
                      process=distributed.Process(device=DEVICE.type))
    (top1, _, loss), _ = quiet(trainer.train, 1, batches(dtype=torch.float32))
    assert 1.0 < loss < 4.0 and 0 <= top1 <= 100
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert trainer.scaler.is_enabled() == (precision == 'half')


# ---- main.py end to end ----

def main_py(cwd, *argv, launcher=(), timeout=600):
    result = subprocess.run([sys.executable, *launcher, os.path.join(ROOT, 'main.py'), *argv], cwd=cwd,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
    """CIFAR-10 files of 150 training images (4 batches of 32 and a partial one of 22) and 70 test images."""
    root = tmp_path_factory.mktemp('cifar')
    make_cifar.write(str(root), 150, 70)
    return root


def cifar_args(cifar, save, *extra, device=DEVICE.type):
    return ['-netType', 'gunn-mini', '-dataset', 'cifar10', '-data', str(cifar), '-gen', str(cifar / 'gen'),
            '-batchSize', '32', '-nThreads', '2', '-save', str(save), '-device', device, *extra]


def test_main_trains_resumes_and_tests_on_cuda_and_the_checkpoint_loads_on_the_cpu(cifar, tmp_path):
    result = main_py(tmp_path, *cifar_args(cifar, 'run'), '-nEpochs', '1', '-nGPU', '1')
    assert ' | Epoch: [1][5/5]    Time ' in result.stdout  # the partial last batch was trained
    result = main_py(tmp_path, *cifar_args(cifar, 'run'), '-nEpochs', '2', '-resume', 'run')
    assert '=> Loading checkpoint run/latest.pt' in result.stdout
    with open(tmp_path / 'run' / 'log.csv') as f:
        rows = list(csv.DictReader(f))
    assert [int(r['epoch']) for r in rows] == [1, 2]
    latest = torch.load(tmp_path / 'run' / 'latest.pt', weights_only=True)  # no map_location: CPU tensors
    assert all(v.device.type == 'cpu' for v in latest['model'].values())
    assert latest['epoch'] == 2
    for device in (DEVICE.type, 'cpu'):
        result = main_py(tmp_path, *cifar_args(cifar, f'eval-{device}', '-resume', 'run', '-testOnly', 'true',
                                               device=device))
        top1 = [line for line in result.stdout.splitlines() if line.startswith(' * Results top1:')]
        # TF32 convolutions and other cuDNN algorithms may flip a near-tie: one of the 70 images (1.43 %)
        assert top1 and float(top1[0].split()[3]) == pytest.approx(float(rows[-1]['test_top1']), abs=1.5), device


def test_main_cuda_graph_equals_eager(cifar, tmp_path):
    """-cudaGraph true through main.py (loader workers pinning memory during capture, recapture at the
    learning-rate change of epoch 2): the same checkpoint as -cudaGraph false, in float64."""
    states = []
    for graph in ('false', 'true'):
        main_py(tmp_path, *cifar_args(cifar, f'graph-{graph}', '-nEpochs', '2', '-precision', 'double',
                                      '-cudnn', 'deterministic', '-cudaGraph', graph))
        states.append(torch.load(tmp_path / f'graph-{graph}' / 'latest.pt', weights_only=True))
    eager, graphed = states
    for name, value in eager['model'].items():
        assert torch.equal(graphed['model'][name], value), name
    for key, buf in eager['optimState']['state'].items():
        assert torch.equal(graphed['optimState']['state'][key]['momentum_buffer'], buf['momentum_buffer'])


# ---- DistributedDataParallel on one GPU ----

def torchrun(tmp_path, nproc, backend):
    path = tmp_path / f'{backend}.pt'
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}',
                             f'--master_port={distributed._free_port()}', os.path.join(ROOT, 'tests', 'ddp_one_gpu.py'),
                             backend, str(path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize('backend,nproc', [pytest.param('nccl', 1, marks=on_gpu_only), ('gloo', 2)])
def test_distributed_data_parallel_with_cuda_tensors(tmp_path, backend, nproc, exact_cuda):
    """nccl: a one-process group under torchrun; gloo: two processes sharing the GPU (NCCL refuses two ranks
    on one device). Both against one process without a group, with -bnSplit as many as processes."""
    trained = torchrun(tmp_path, nproc, backend)
    reference = train_two_steps(distributed.Process(device=ONE_GPU), bnSplit=nproc)
    torch.manual_seed(0)
    initial = models.create(mini_opt()).state_dict()
    moved = 0
    for name, value in reference.items():
        torch.testing.assert_close(trained[name], value, rtol=1e-11, atol=1e-13, msg=name)
        moved += not torch.equal(value.float(), initial[name].float())
    assert moved > len(reference) // 2
