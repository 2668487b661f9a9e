"""The memory-saving GunnLayer paths against the plain autograd reference, and what they save."""

import pytest
import torch
from helpers import assert_same_run, pair

import models
from benchmarks import memory_report


@pytest.mark.parametrize('dataset', ['cifar10', 'imagenet'])
@pytest.mark.parametrize('mode', ['share', 'recompute'])
def test_training_mode_matches_reference_float64(dataset, mode):
    reference, fast = pair(0, 24, 6, dataset, mode)
    x = torch.randn(3, 24, 7, 5, dtype=torch.float64)
    assert_same_run(reference, fast, x, torch.randn_like(x))


@pytest.mark.parametrize('mode', ['share', 'recompute'])
def test_eval_mode_with_and_without_gradients(mode):
    reference, fast = pair(1, 16, 4, 'cifar10', mode)
    reference.eval()
    fast.eval()
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    out = assert_same_run(reference, fast, x, torch.randn_like(x))  # backward through the running statistics
    with torch.no_grad():
        torch.testing.assert_close(fast(x), out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('splits', [2, 4])
@pytest.mark.parametrize('mode', ['share', 'recompute'])
def test_bn_split_matches_reference(mode, splits):
    reference, fast = pair(5, 16, 4, 'cifar10', mode)
    for layer in (reference, fast):
        models.batchnorm.set_bn_split(layer, splits)
    x = torch.randn(10, 16, 4, 4, dtype=torch.float64)  # 10 images over 4: slices of 3, 2, 3, 2
    assert_same_run(reference, fast, x, torch.randn_like(x))  # training: every statistics set moves
    reference.eval()
    fast.eval()
    assert_same_run(reference, fast, x, torch.randn_like(x))  # evaluation: each slice with its own set


def test_bn_split_keeps_one_statistics_set_per_slice():
    """-bnSplit 4 as 4 GPUs of DataParallelTable: slices of 3, 2, 3, 2 images, each normalised alone and
    updating its own running statistics; in evaluation each slice is normalised with its own set."""
    torch.manual_seed(6)
    bn = models.batchnorm.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    models.batchnorm.set_bn_split(bn, 4)
    x = torch.randn(10, 3, 4, 4, dtype=torch.float64) * torch.arange(1, 11, dtype=torch.float64).view(10, 1, 1, 1)
    out = bn(x)
    parts = x.split([3, 2, 3, 2])
    for i, (part, normalised) in enumerate(zip(parts, out.split([3, 2, 3, 2]))):
        mean, var = part.mean((0, 2, 3)), part.var((0, 2, 3), unbiased=False)
        expected = (part - mean.view(1, 3, 1, 1)) / (var.view(1, 3, 1, 1) + bn.eps).sqrt()
        torch.testing.assert_close(normalised, expected * bn.weight.view(1, 3, 1, 1) + bn.bias.view(1, 3, 1, 1))
        running_mean, running_var = bn.running_stats(i)
        torch.testing.assert_close(running_mean, 0.1 * mean)
        torch.testing.assert_close(running_var, 0.9 + 0.1 * part.var((0, 2, 3), unbiased=True))
    bn.eval()
    y = torch.randn(10, 3, 4, 4, dtype=torch.float64)
    expected = [(part - bn.running_stats(i)[0].view(1, 3, 1, 1)) / (bn.running_stats(i)[1].view(1, 3, 1, 1)
                                                                      + bn.eps).sqrt()
                * bn.weight.view(1, 3, 1, 1) + bn.bias.view(1, 3, 1, 1) for i, part in enumerate(y.split([3, 2, 3, 2]))]
    torch.testing.assert_close(bn(y), torch.cat(expected))
    # the state_dict (and so every checkpoint) holds the first set only, under nn.BatchNorm2d's names
    assert list(bn.state_dict()) == ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    assert torch.equal(bn.state_dict()['running_mean'], bn.running_stats(0)[0])


def test_bn_split_starts_every_set_from_the_first():
    bn = models.batchnorm.BatchNorm2d(2)
    with torch.no_grad():
        bn.running_mean.fill_(0.5)
        bn.running_var.fill_(2.0)
    models.batchnorm.set_bn_split(bn, 3)
    assert bn.splits == 3
    for i in range(3):
        assert bn.running_stats(i)[0].tolist() == [0.5, 0.5] and bn.running_stats(i)[1].tolist() == [2.0, 2.0]
    models.batchnorm.set_bn_split(bn, 1)
    assert bn.splits == 1 and len(list(bn.buffers())) == 3


def test_no_grad_forward_updates_running_stats_like_the_reference():
    reference, fast = pair(2, 16, 4, 'cifar10', 'share')
    x = torch.randn(4, 16, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), reference(x), rtol=1e-12, atol=1e-12)
    for a, b in zip(fast.buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-16)


def test_input_without_grad_still_gives_parameter_gradients():
    reference, fast = pair(3, 8, 2, 'cifar10', 'share')
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    for layer in (reference, fast):
        layer(x).square().sum().backward()
    for a, b in zip(fast.parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('mode', ['share', 'recompute'])
def test_mixed_precision_autocast_matches_reference(dtype, mode):
    reference, fast = pair(4, 16, 4, 'cifar10', mode, torch.float32)
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
    # half precision keeps 3 (bfloat16) or 4 (float16) digits: the two paths round differently
    torch.testing.assert_close(out_f, out_r, rtol=0.05, atol=0.05)
    assert (gx_f - gx_r).norm() <= 0.02 * gx_r.norm()
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
