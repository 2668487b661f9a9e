"""main.py end to end on the embedded digits data: learning, checkpoints, resume after a kill, errors."""
import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import distributed
import main
import models
import opts
from dataloader import FixedBatches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ['-netType', 'gunn-mini', '-dataset', 'digits', '-batchSize', '32', '-nThreads', '1']


def main_py(cwd, *argv, check=True, **kw):
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *argv], cwd=cwd, capture_output=True,
                            text=True, timeout=600, **kw)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def state(path):
    return torch.load(path, weights_only=True)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Three epochs from scratch: the reference run for several tests."""
    work = tmp_path_factory.mktemp('run')
    result = main_py(work, *FAST, '-nEpochs', '3', '-save', 'full')
    return work, result


def test_training_on_digits_learns(trained):
    work, result = trained
    lines = result.stdout.splitlines()
    finished = [line for line in lines if line.startswith(' * Finished top1:')]
    assert len(finished) == 1
    top1 = float(finished[0].split()[3])
    assert top1 < 20.0, result.stdout[-2000:]  # ten classes: chance is 90 % error
    assert any(line.startswith(' | Epoch: [1][1/45]    Time ') for line in lines)  # the Lua log line
    assert '| number of parameters: 108202' in lines


def test_csv_plot_and_checkpoints_are_written(trained):
    work, _ = trained
    save = work / 'full'
    assert sorted(os.listdir(save)) == ['curves.png', 'latest.pt', 'log.csv', 'model_best.pt']
    with open(save / 'log.csv') as f:
        rows = list(csv.DictReader(f))
    assert [int(r['epoch']) for r in rows] == [1, 2, 3]
    assert float(rows[0]['lr']) == 0.1 and float(rows[2]['lr']) == pytest.approx(0.001)
    assert all(float(r['images_per_s']) > 0 for r in rows)
    assert float(rows[-1]['train_loss']) < float(rows[0]['train_loss'])
    latest = state(save / 'latest.pt')
    assert latest['epoch'] == 3 and latest['bestTop1'] == min(float(r['test_top1']) for r in rows)


def test_resume_after_a_kill_ends_with_the_same_parameters(trained):
    work, _ = trained
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *FAST, '-nEpochs', '3',
                                '-save', 'killed'], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = work / 'killed' / 'latest.pt'
    deadline = time.time() + 300
    while not (latest.exists() and state(latest)['epoch'] >= 1) and process.poll() is None:
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(2)  # now in the middle of epoch 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state(latest)['epoch'] in (1, 2)  # intact, whatever the moment of the kill
    result = main_py(work, *FAST, '-nEpochs', '3', '-save', 'killed', '-resume', 'killed')
    assert '=> Loading checkpoint killed/latest.pt' in result.stdout
    resumed, full = state(latest), state(work / 'full' / 'latest.pt')
    assert resumed['epoch'] == 3 and resumed['bestTop1'] == full['bestTop1']
    for name, value in full['model'].items():
        assert torch.equal(resumed['model'][name], value), name
    for key, buf in full['optimState']['state'].items():
        assert torch.equal(resumed['optimState']['state'][key]['momentum_buffer'], buf['momentum_buffer'])
    with open(work / 'killed' / 'log.csv') as f:
        assert [int(r['epoch']) for r in csv.DictReader(f)] == [1, 2, 3]


def test_test_only_evaluates_a_checkpoint(trained):
    work, _ = trained
    result = main_py(work, *FAST, '-resume', 'full', '-testOnly', 'true', '-save', 'evaluated')
    best = state(work / 'full' / 'latest.pt')
    line = [x for x in result.stdout.splitlines() if x.startswith(' * Results top1:')]
    assert line and float(line[0].split()[3]) == pytest.approx(
        [float(r['test_top1']) for r in csv.DictReader(open(work / 'full' / 'log.csv'))][-1], abs=1e-3)
    assert best['epoch'] == 3


def test_nan_loss_stops_without_a_broken_checkpoint(tmp_path):
    result = main_py(tmp_path, *FAST, '-nEpochs', '2', '-LR', '1e30', check=False)
    assert result.returncode == 1
    assert result.stderr.startswith('error: the loss is ') and len(result.stderr.strip().splitlines()) == 1
    assert 'training diverged' in result.stderr
    assert not (tmp_path / 'checkpoints' / 'model_best.pt').exists()


@pytest.mark.parametrize('argv,message', [
    (['-retrain', 'missing.pt'], 'error: checkpoint file not found: missing.pt'),
    (['-netType', 'resnet'], "error: unknown -netType 'resnet'; available: gunn-15, gunn-18"),
    (['-dataset', 'cifar10', '-data', 'nowhere-but-here', '-gen', 'gen-c'],
     'error: no CIFAR-10 copy at -data nowhere-but-here (expected cifar-10-python.tar.gz'),
])
def test_bad_input_is_one_line(tmp_path, argv, message):
    (tmp_path / 'nowhere-but-here').mkdir()
    result = main_py(tmp_path, *FAST, *argv, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


class TinyLoader(FixedBatches):
    """A few random digit-sized batches behind the DataLoader interface main.run uses; Ctrl-C in epoch `stop`."""
    classList = [str(c) for c in range(10)]

    def __init__(self, batches, stop=None):
        super().__init__(batches)
        self.stop = stop

    def numImages(self):
        return sum(len(b['target']) for b in self.batches)

    def run(self, epoch):
        if epoch == self.stop:
            raise KeyboardInterrupt
        yield from super().run(epoch)


def tiny_batches(seed, n):
    generator = torch.Generator().manual_seed(seed)
    return [{'input': torch.randn(8, 3, 32, 32, generator=generator), 'batchTotal': 8,
             'target': torch.randint(0, 10, (8,), generator=generator)} for _ in range(n)]


def test_half_precision_resume_is_exact(tmp_path, monkeypatch):
    """-precision half: the loss scale and its growth tracker go into latest.pt and come back on resume, so an
    interrupted run ends where the uninterrupted one does (the scale no longer restarts at 65536)."""
    torch.manual_seed(0)
    model = models.create(opts.parse(['-netType', 'gunn-mini', '-dataset', 'digits', '-save', str(tmp_path)]))
    with torch.no_grad():
        model[-5].weight.mul_(10)  # the last BatchNorm: float16 gradients overflow at the first loss scales
    torch.save({'netType': 'gunn-mini', 'model': model.state_dict()}, tmp_path / 'start.pt')

    def run(save, *argv, stop=None):
        monkeypatch.setattr(main.DataLoader, 'create', lambda opt, rank, world_size: (
            TinyLoader(tiny_batches(1, 3), stop), TinyLoader(tiny_batches(2, 1))))
        opt = opts.parse([*FAST, '-precision', 'half', '-device', 'cpu', '-nEpochs', '2', '-progress', 'lines',
                          '-retrain', str(tmp_path / 'start.pt'), '-save', str(tmp_path / save), *argv])
        with contextlib.redirect_stdout(io.StringIO()):
            main.run(opt, distributed.Process())
        return state(tmp_path / save / 'latest.pt')

    full = run('full')
    with pytest.raises(KeyboardInterrupt):
        run('part', stop=2)
    assert state(tmp_path / 'part' / 'latest.pt')['epoch'] == 1
    resumed = run('part', '-resume', str(tmp_path / 'part'))
    assert full['scaler']['scale'] < 65536.0  # overflows happened: the state matters
    assert resumed['scaler'] == full['scaler']
    for name, value in full['model'].items():
        assert torch.equal(resumed['model'][name], value), name
    for key, buf in full['optimState']['state'].items():
        assert torch.equal(resumed['optimState']['state'][key]['momentum_buffer'], buf['momentum_buffer'])
