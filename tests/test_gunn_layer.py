"""The memory-saving GunnLayer paths against the plain autograd reference, and what they save."""
import copy

import pytest
import torch

import memory_report
from models import GunnLayer


def run(layer, x, grad_out):
    x = x.clone().requires_grad_()
    out = layer(x)
    out.backward(grad_out)
    return out, x.grad, [p.grad.clone() for p in layer.parameters()]


def randomised(layer):
    """Non-trivial BN parameters and running statistics, so every term of the backward matters."""
    with torch.no_grad():
        for m in layer.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return layer


@pytest.mark.parametrize('dataset', ['cifar10', 'imagenet'])
@pytest.mark.parametrize('mode', ['share', 'recompute'])
def test_training_mode_matches_reference_float64(dataset, mode):
    torch.manual_seed(0)
    reference = randomised(GunnLayer(24, 6, dataset, 'plain')).double()
    fast = copy.deepcopy(reference)
    fast.memory = mode
    x = torch.randn(3, 24, 7, 5, dtype=torch.float64)
    g = torch.randn(3, 24, 7, 5, dtype=torch.float64)
    out_r, gx_r, gp_r = run(reference, x, g)
    out_f, gx_f, gp_f = run(fast, x, g)
    torch.testing.assert_close(out_f, out_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-11, atol=1e-11)
    for a, b in zip(gp_f, gp_r):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)
    for a, b in zip(fast.buffers(), reference.buffers()):  # running stats and num_batches_tracked
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


@pytest.mark.parametrize('mode', ['share', 'recompute'])
def test_eval_mode_with_and_without_gradients(mode):
    torch.manual_seed(1)
    reference = randomised(GunnLayer(16, 4, 'cifar10', 'plain')).double().eval()
    fast = copy.deepcopy(reference)
    fast.memory = mode
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    g = torch.randn_like(x)
    out_r, gx_r, gp_r = run(reference, x, g)
    out_f, gx_f, gp_f = run(fast, x, g)  # eval mode with autograd: backward through running statistics
    torch.testing.assert_close(out_f, out_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-11, atol=1e-11)
    for a, b in zip(gp_f, gp_r):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), out_r, rtol=1e-12, atol=1e-12)
    for a, b in zip(fast.buffers(), reference.buffers()):
        assert torch.equal(a, b)


def test_no_grad_forward_updates_running_stats_like_the_reference():
    torch.manual_seed(2)
    reference = GunnLayer(16, 4, 'cifar10', 'plain').double()
    fast = copy.deepcopy(reference)
    fast.memory = 'share'
    x = torch.randn(4, 16, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), reference(x), rtol=1e-12, atol=1e-12)
    for a, b in zip(fast.buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


def test_input_without_grad_still_gives_parameter_gradients():
    torch.manual_seed(3)
    reference = GunnLayer(8, 2, 'cifar10', 'plain').double()
    fast = copy.deepcopy(reference)
    fast.memory = 'share'
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    for layer in (reference, fast):
        layer(x).square().sum().backward()
    for a, b in zip(fast.parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('mode', ['share', 'recompute'])
def test_mixed_precision_autocast_matches_reference(dtype, mode):
    torch.manual_seed(4)
    reference = GunnLayer(16, 4, 'cifar10', 'plain')
    fast = copy.deepcopy(reference)
    fast.memory = mode
    x = torch.randn(4, 16, 8, 8)
    g = torch.randn(4, 16, 8, 8)
    results = []
    for layer in (reference, fast):
        xi = x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=dtype):
            out = layer(xi)
        out.float().backward(g)
        results.append((out.float(), xi.grad, [p.grad for p in layer.parameters()]))
    (out_r, gx_r, gp_r), (out_f, gx_f, gp_f) = results
    assert out_f.dtype == out_r.dtype
    tol = dict(rtol=0.05, atol=0.05)
    torch.testing.assert_close(out_f, out_r, **tol)
    torch.testing.assert_close(gx_f, gx_r, **tol)
    for a, b in zip(gp_f, gp_r):
        assert a.dtype == torch.float32
        assert (a - b).norm() <= 0.05 * b.norm() + 1e-3


def test_saved_memory_of_gunn15_first_layer():
    """Issue #2's bounds: -shareGradInput at most 1/2 of the plain path, -optnet at most 1/5."""
    results = memory_report.measure(batch=2)
    plain = results['plain'][0]
    assert 7000 <= results['plain'][1] <= 7400  # about 7,200 channel-planes per image
    assert results['share'][0] <= plain / 2
    assert results['share'][1] == pytest.approx(2880)  # input + output + 10 o per segment, as the Lua keeps
    assert results['recompute'][0] <= plain / 5
    assert results['recompute'][1] == pytest.approx(480)  # input + output
