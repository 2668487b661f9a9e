"""Trainer.step (the whole training step), the one-iteration-late figures, and the -cudaGraph capture layer
driven by a CPU stand-in for the CUDA graph."""
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from helpers import FAST, ROOT, assert_same_state, batches, mini, mini_opt, quiet

from support.cuda_graph import GraphedStep
from support.distributed import Process
from support.errors import GunnError
from train import Trainer, wrongCounts


@pytest.mark.parametrize('memory', ['share', 'plain', 'recompute'])
def test_step_is_the_plain_sgd_loop(memory, one_thread):
    """Trainer.train through Trainer.step updates exactly as the textbook loop of train.lua."""
    model, reference = mini(memory=memory, bnSplit=2), mini(memory=memory, bnSplit=2)
    trainer = Trainer(model, nn.CrossEntropyLoss(), mini_opt(precision='double'))
    quiet(trainer.train, 1, batches())
    sgd = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, dampening=0.0, nesterov=True,
                          weight_decay=1e-4)
    for _, sample in batches().run(1):
        loss = nn.functional.cross_entropy(reference(sample['input']), sample['target'])
        sgd.zero_grad()
        loss.backward()
        sgd.step()
    assert_same_state(model, reference, (trainer.optimizer, sgd))


def test_step_figures_are_the_batch_loss_and_error_counts():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).double()
    trainer = Trainer(model, nn.CrossEntropyLoss(), mini_opt(precision='double', LR=0.0, weightDecay=0.0))
    sample = batches((6,)).batches[0]
    with torch.no_grad():
        output = model(sample['input'])
    loss = nn.functional.cross_entropy(output, sample['target']).item()
    ranks = (output > output.gather(1, sample['target'].view(-1, 1))).sum(1)  # classes scored above the target
    figures = trainer.step(sample['input'], sample['target'])
    assert figures.dtype == torch.float64 and figures.shape == (4,)
    assert figures.tolist() == [loss * 6, (ranks >= 1).sum().item(), (ranks >= 5).sum().item(), 6]
    assert Trainer.computeScore(output, sample['target'], 1) == (100 * (ranks >= 1).sum().item() / 6,
                                                                 100 * (ranks >= 5).sum().item() / 6)


def test_wrong_counts_sum_ten_crops_per_image():
    output = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 0.0], [0.0, 1.0]])  # 2 images x 2 crops, 2 classes
    assert wrongCounts(output, torch.tensor([1, 1]), 2).tolist() == [1.0, 0.0]


def test_lines_come_one_iteration_late_in_the_lua_order():
    model = mini(torch.float32)
    trainer = Trainer(model, nn.CrossEntropyLoss(), mini_opt())
    (_, _, loss), out = quiet(trainer.train, 1, batches(dtype=torch.float32))
    lines = out.splitlines()
    assert lines[0] == '=> Training epoch # 1'
    assert len(lines) == 4 and all(line.startswith(f' | Epoch: [1][{n}/3]    Time ')
                                   for n, line in zip((1, 2, 3), lines[1:]))
    errs = [float(line.split('Err ')[1].split()[0]) for line in lines[1:]]
    assert sum(e * b for e, b in zip(errs, (8, 8, 5))) / 21 == pytest.approx(loss, abs=1e-4)  # %1.4f rounding
    (_, _), out = quiet(trainer.test, 1, batches(dtype=torch.float32))
    assert all(line.startswith(f' | Test: [1][{n}/3]    Time ') for n, line in zip((1, 2, 3), out.splitlines()))
    assert out.splitlines()[3].startswith(' * Finished epoch # 1     top1:')


def test_divergence_stops_at_the_next_iteration_without_returning(tmp_path):
    model = mini(torch.float32)
    trainer = Trainer(model, nn.CrossEntropyLoss(), mini_opt(save=str(tmp_path)))
    data = batches((8, 8, 8, 8), dtype=torch.float32)
    data.batches[1]['input'][0, 0, 0, 0] = float('nan')
    with pytest.raises(GunnError, match=r'^the loss is nan at epoch 1, iteration 2: training diverged'):
        quiet(trainer.train, 1, data)


class ReplayingGraph:
    """A CPU stand-in for cuda_graph.CudaGraph with the semantics that matter: capture records the step
    without running it, and each replay runs it on whatever the static buffers hold, with the learning rate
    of capture time (a real graph holds it as a constant)."""

    captures = []

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def capture(self, fn):
        self.fn, self.lr = fn, [group['lr'] for group in self.optimizer.param_groups]
        ReplayingGraph.captures.append(self.lr[0])

    def replay(self):
        now = [group['lr'] for group in self.optimizer.param_groups]
        for group, lr in zip(self.optimizer.param_groups, self.lr):
            group['lr'] = lr
        outputs = self.fn()
        for group, lr in zip(self.optimizer.param_groups, now):
            group['lr'] = lr
        return outputs


@pytest.mark.parametrize('bnSplit', [1, 2])
def test_graphed_step_trains_as_the_eager_step(bnSplit, one_thread):
    """Warm-up, capture, replay with fresh batches copied in, the partial batch outside the graph, and
    a recapture when the learning rate changes: the same parameters as the eager loop, bit for bit."""
    eager, graphed = mini(bnSplit=bnSplit), mini(bnSplit=bnSplit)
    opt = mini_opt(precision='double', nEpochs=4)
    reference = Trainer(eager, nn.CrossEntropyLoss(), opt)
    trainer = Trainer(graphed, nn.CrossEntropyLoss(), opt)
    trainer.runStep = GraphedStep(trainer.step, trainer.optimizer, trainer.device, warmup=2,
                                  graph=lambda stream: ReplayingGraph(trainer.optimizer))
    ReplayingGraph.captures = []
    data = batches((8, 8, 8, 8, 3))
    for epoch in (1, 2, 3):  # learning rates 0.1, 0.01, 0.001
        (expected, _), (got, _) = quiet(reference.train, epoch, data), quiet(trainer.train, epoch, data)
        assert got == expected
    assert ReplayingGraph.captures == [0.1, pytest.approx(0.01), pytest.approx(0.001)]
    assert trainer.runStep.staticInput.shape == (8, 3, 32, 32)
    assert_same_state(graphed, eager, (trainer.optimizer, reference.optimizer))


def test_cuda_graph_falls_back_on_the_cpu_with_a_note():
    trainer, out = quiet(Trainer, mini(), nn.CrossEntropyLoss(), mini_opt(cudaGraph=True))
    assert out == 'note: -cudaGraph true needs a CUDA device; training on the cpu without it\n'
    assert trainer.runStep == trainer.step


def test_cuda_graph_wraps_the_step_on_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'Stream', lambda device: f'side stream of {device}')  # no GPU needed to build it
    trainer, out = quiet(Trainer, mini(), nn.CrossEntropyLoss(), mini_opt(cudaGraph=True), None,
                         Process(device='cuda'))
    assert out == '' and isinstance(trainer.runStep, GraphedStep)
    assert trainer.runStep.step == trainer.step and trainer.runStep.optimizer is trainer.optimizer
    assert trainer.runStep.stream == 'side stream of cuda'


def test_cuda_graph_refuses_several_processes(tmp_path):
    result = subprocess.run([sys.executable, f'{ROOT}/main.py', *FAST, '-cudaGraph', 'true', '-nGPU', '2',
                             '-device', 'cpu'], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith('main.py: error: -cudaGraph true trains in one process, not 2 ')
    assert len(result.stderr.splitlines()) == 1


def test_bf16_autocast_trains():
    model = mini(torch.float32)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, nn.CrossEntropyLoss(), mini_opt(precision='bf16'))
    (top1, _, loss), _ = quiet(trainer.train, 1, batches(dtype=torch.float32))
    assert 1.0 < loss < 4.0 and all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_cuda_graph_with_half_precision_is_an_option_error(tmp_path):
    result = subprocess.run([sys.executable, f'{ROOT}/main.py', *FAST, '-cudaGraph', 'true', '-precision', 'half'],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert 'error: -cudaGraph true does not work with -precision half' in result.stderr
