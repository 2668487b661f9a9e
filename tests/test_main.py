"""main.py end to end on the embedded digits data: learning, checkpoints, resume after a kill, errors."""
import contextlib
import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from helpers import FAST, ROOT, tiny_loaders

import main
import models
import opts
from support import distributed


def main_py(cwd, *argv, check=True, **kw):
    """main.py in a process of its own, where a deprecation warning of any library it uses is an error."""
    result = subprocess.run([sys.executable, '-W', 'error::DeprecationWarning', os.path.join(ROOT, 'main.py'), *argv],
                            cwd=cwd, capture_output=True, text=True, timeout=600, **kw)
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
    # the restart-safe command: from scratch the first time, continued after the kill
    command = [*FAST, '-nEpochs', '3', '-save', 'killed', '-resume', 'killed']
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *command], cwd=work,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = work / 'killed' / 'latest.pt'
    deadline = time.time() + 300
    while not (latest.exists() and state(latest)['epoch'] >= 1) and process.poll() is None:
        assert time.time() < deadline
        time.sleep(0.2)
    # a second start of the same command while the first one runs is refused
    second = main_py(work, *command, check=False)
    assert second.returncode == 1 and second.stderr == (
        'error: -save killed is in use by another training run, which is still going: wait for it to end, or '
        'choose another -save folder\n')
    time.sleep(2)  # now in the middle of epoch 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state(latest)['epoch'] in (1, 2)  # intact, whatever the moment of the kill
    result = main_py(work, *command)  # at once: the killed run's orphaned loader workers hold no lock
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
    before = files(work / 'full')
    # -testOnly writes nothing: a -save holding a run is no reason to refuse, nor one that does not exist
    for save in ('full', 'not-created'):
        result = main_py(work, *FAST, '-resume', 'full/latest.pt', '-testOnly', 'true', '-save', save)
    assert files(work / 'full') == before and not (work / 'not-created').exists()
    best = state(work / 'full' / 'latest.pt')
    line = [x for x in result.stdout.splitlines() if x.startswith(' * Results top1:')]
    assert line and float(line[0].split()[3]) == pytest.approx(
        [float(r['test_top1']) for r in csv.DictReader(open(work / 'full' / 'log.csv'))][-1], abs=1e-3)
    assert best['epoch'] == 3


def test_nan_loss_stops_without_a_broken_checkpoint(tmp_path):
    result = main_py(tmp_path, *FAST, '-nEpochs', '2', '-LR', '1e30', check=False)
    assert result.returncode == 1
    assert result.stderr.startswith('error: the loss is ') and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.endswith('training diverged; stopping without saving this epoch (no checkpoint had been '
                                  'saved in checkpoints yet)\n')
    assert os.listdir(tmp_path / 'checkpoints') == []


def files(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.fixture
def copy_of_full(trained):
    """A copy X of the finished three-epoch run, in the folder where it ran (its gen/ holds the data)."""
    work, _ = trained
    x = work / 'X'
    shutil.rmtree(x, ignore_errors=True)
    shutil.copytree(work / 'full', x)
    return work, x


def test_a_finished_run_survives_a_mistyped_resume(copy_of_full):
    work, x = copy_of_full
    stale = [name + '.0123456789abcdef0123456789abcdef.tmp' for name in ('latest.pt', 'model_best.pt')]
    for name in stale:
        (x / name).write_bytes(b'left by a killed write')
    before = files(x)
    result = main_py(work, *FAST, '-nEpochs', '6', '-save', 'X', '-resume', 'Xx', check=False)
    assert result.returncode == 1 and result.stderr == (
        'error: -resume Xx: no such folder or file (-resume takes the folder of a run or its latest.pt; with -save '
        'naming the same folder, a first start begins from scratch)\n')
    for resume in ('none', 'X/model_best.pt'):  # a new run into X, or one from X's best model
        result = main_py(work, *FAST, '-nEpochs', '6', '-save', 'X', '-resume', resume, check=False)
        best = min(float(r['test_top1']) for r in csv.DictReader(open(x / 'log.csv')))
        assert result.returncode == 1 and result.stderr == (
            f'error: -save X already holds another run (gunn-mini on digits, epoch 3, best top-1 error {best:.3f} %), '
            'which this run would overwrite: continue it with -resume X, or choose another -save folder\n')
        assert 'Training epoch' not in result.stdout
    assert files(x) == before  # byte for byte, temporary files included: a refused run touches nothing
    # continuing it: the temporary files of the killed writes go, nothing else changes (no epoch is left to run)
    result = main_py(work, *FAST, '-nEpochs', '3', '-save', 'X', '-resume', 'X')
    assert [f'=> Removed X/{name}, left by an interrupted write' for name in sorted(stale)] == \
        [line for line in result.stdout.splitlines() if line.startswith('=> Removed')]
    assert files(x) == {k: v for k, v in before.items() if k not in stale}


def test_nan_loss_of_a_resumed_run_keeps_its_checkpoint(copy_of_full):
    work, x = copy_of_full
    before = files(x)
    result = main_py(work, *FAST, '-nEpochs', '4', '-save', 'X', '-resume', 'X', '-LR', '1e30', check=False)
    assert result.returncode == 1 and result.stderr.startswith('error: the loss is ')
    assert result.stderr.endswith('training diverged; stopping without saving this epoch (X/latest.pt, the last '
                                  'saved epoch, is intact)\n')
    assert files(x) == before


# main.py with a fault injected: the writes of files in SAVE fail with the OSError of errno name ERROR, or
# (PROBE) only the probe write of the -save check does
FAULT = textwrap.dedent('''
    import errno, os, runpy, sys
    MAIN, SAVE, ERROR, WHICH = sys.argv[1:5]
    sys.argv = [MAIN, *sys.argv[5:]]
    sys.path.insert(0, os.path.dirname(MAIN))
    import torch, checkpoints
    code = getattr(errno, ERROR)
    real_save, real_open = torch.save, open

    def failing_save(obj, f, *args, **kw):
        if os.path.dirname(os.path.abspath(f.name)) != os.path.abspath(SAVE):
            return real_save(obj, f, *args, **kw)
        f.write(b'partial')
        raise OSError(code, os.strerror(code))

    def failing_open(path, *args, **kw):
        if checkpoints.PROBE in str(path):
            raise OSError(code, os.strerror(code))
        return real_open(path, *args, **kw)

    if WHICH == 'PROBE':
        checkpoints.open = failing_open
    else:
        torch.save = failing_save
    runpy.run_path(MAIN, run_name='__main__')
''')


def main_with_fault(work, save, error, which, *argv):
    return subprocess.run([sys.executable, '-c', FAULT, os.path.join(ROOT, 'main.py'), save, error, which, *argv],
                          cwd=work, capture_output=True, text=True, timeout=600)


def test_a_full_disk_at_a_checkpoint_write_keeps_the_previous_one(copy_of_full):
    work, x = copy_of_full
    before = files(x)
    result = main_with_fault(work, 'X', 'ENOSPC', 'SAVE', *FAST, '-nEpochs', '4', '-save', 'X', '-resume', 'X')
    assert result.returncode == 1, result.stderr[-2000:]
    assert re.fullmatch(r'error: cannot write X/(model_best|latest)\.pt \(No space left on device\); the previous '
                        r'(model_best|latest)\.pt is intact; it needs about \d+\.\d MB of free space in X '
                        r'\(\d+\.\d MB free now\)(; X/latest.pt, the last saved epoch, is intact)?\n', result.stderr), result.stderr
    assert '=> Training epoch # 4' in result.stdout
    assert files(x) == before


def test_a_read_only_save_folder_fails_before_training(tmp_path):
    result = main_with_fault(tmp_path, 'ro', 'EROFS', 'PROBE', *FAST, '-save', 'ro')
    assert result.returncode == 1 and result.stderr == 'error: -save ro is not writable (Read-only file system)\n'
    assert result.stdout == '' and os.listdir(tmp_path / 'ro') == []


class RunsCode:
    def __reduce__(self):
        return os.system, ('touch pwned',)


@pytest.mark.parametrize('argv,message', [
    (['-retrain', 'missing.pt'], 'error: checkpoint file not found: missing.pt'),
    (['-retrain', 'nowhere-but-here'], 'error: nowhere-but-here is a folder, not a checkpoint file'),
    (['-retrain', 'evil.pt'], 'error: checkpoint file evil.pt holds objects other than tensors (posix.system); '
                              'refused for safety'),
    (['-dataset', 'cifar10', '-data', 'evil.pt', '-gen', 'gen-c'],
     'error: evil.pt is not a CIFAR-10 archive (-data takes cifar-10-python.tar.gz, its folder cifar-10-batches-py, '
     'or a folder holding either)'),
    (['-dataset', 'cifar10', '-data', 'nowhere-but-here', '-gen', 'gen-c'],
     'error: no CIFAR-10 copy at -data nowhere-but-here (expected cifar-10-python.tar.gz'),
])
def test_bad_input_is_one_line(tmp_path, argv, message):
    (tmp_path / 'nowhere-but-here').mkdir()
    torch.save({'model': RunsCode()}, tmp_path / 'evil.pt')
    result = main_py(tmp_path, *FAST, *argv, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert 'weights_only' not in result.stderr and not (tmp_path / 'pwned').exists()


def test_half_precision_resume_is_exact(tmp_path, monkeypatch):
    """-precision half: the loss scale and its growth tracker go into latest.pt and come back on resume, so an
    interrupted run ends where the uninterrupted one does (the scale no longer restarts at 65536)."""
    torch.manual_seed(0)
    model = models.create(opts.parse(['-netType', 'gunn-mini', '-dataset', 'digits', '-save', str(tmp_path)]))
    with torch.no_grad():
        model[-5].weight.mul_(10)  # the last BatchNorm: float16 gradients overflow at the first loss scales
    torch.save({'netType': 'gunn-mini', 'model': model.state_dict()}, tmp_path / 'start.pt')

    def run(save, *argv, stop=None):
        tiny_loaders(monkeypatch, stop)
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


@pytest.mark.parametrize('signum,status,word', [(signal.SIGTERM, 143, 'terminated'), (signal.SIGINT, 130, 'interrupted')])
def test_a_signal_to_the_run_ends_it_with_one_line(trained, tmp_path, signum, status, word):
    """A scheduler's SIGTERM ends the run as Ctrl-C does (both sent to the process group, as a terminal and
    schedulers do, loader workers included): one line naming what -save holds, no traceback from any process."""
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, 'main.py'), *FAST, '-nThreads', '2',
                                '-batchSize', '128', '-progress', 'lines', '-save', 'X', '-gen', str(trained[0] / 'gen')],
                               cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in process.stdout:
        if line.startswith(' | Epoch: [1][2/'):  # the loader workers are running
            break
    os.killpg(process.pid, signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == status and err == f'{word}; no checkpoint had been saved in X yet\n'
