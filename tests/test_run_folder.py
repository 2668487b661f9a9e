"""The -save folder at every instant of an epoch's end: a run stopped between any two of its writes (killed,
or a write failing on a full disk) is continued by -save D -resume D, and ends with the files of a run
that was never stopped, log rows included."""
import contextlib
import errno
import io
import os

import pytest
import torch
from helpers import FAST, tiny_loaders

import checkpoints
import main
import opts
from support import distributed
from support.errors import GunnError
from train import Trainer

# the test errors of epochs 1, 2, 3: new bests at epochs 1 and 2, none at 3
SCORES = {1: (80.0, 50.0), 2: (70.0, 40.0), 3: (75.0, 45.0)}
TIMINGS = ('seconds', 'images_per_s')


class Killed(BaseException):
    """Stands for SIGKILL: nothing of the run catches it."""


def run(tmp_path, monkeypatch, *argv):
    tiny_loaders(monkeypatch)
    monkeypatch.setattr(Trainer, 'test', lambda trainer, epoch, loader: SCORES[epoch])
    save = str(tmp_path / 'D')
    opt = opts.parse([*FAST, '-device', 'cpu', '-nEpochs', '3', '-progress', 'lines', '-save', save, '-resume', save,
                      *argv])
    with contextlib.redirect_stdout(io.StringIO()):
        main.run(opt, distributed.Process())


def renames_into(folder, monkeypatch, stop_at=None, failure=None):
    """Records the files renamed into folder (each write's last step), in order; raises failure instead of
    the rename number stop_at (0-based)."""
    done, real = [], os.replace

    def replace(src, dst):
        if os.path.dirname(os.path.abspath(dst)) == os.path.abspath(folder):
            if len(done) == stop_at:
                raise failure
            done.append(os.path.basename(dst))
        return real(src, dst)

    monkeypatch.setattr(os, 'replace', replace)
    return done


def outcome(folder):
    """What a finished run leaves: the log rows without their timings, and the two checkpoints."""
    latest = torch.load(os.path.join(folder, checkpoints.LATEST), weights_only=True)
    best = torch.load(os.path.join(folder, checkpoints.BEST), weights_only=True)
    with open(os.path.join(folder, 'log.csv')) as f:
        rows = [line.split(',')[:-len(TIMINGS)] for line in f.read().splitlines()]
    return rows, latest, best


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    tmp_path = tmp_path_factory.mktemp('whole')
    renamed = renames_into(tmp_path / 'D', monkeypatch)
    run(tmp_path, monkeypatch)
    monkeypatch.undo()
    return renamed, outcome(tmp_path / 'D')


def test_the_writes_of_an_epoch_end_come_in_their_order(uninterrupted):
    renamed, _ = uninterrupted
    assert renamed == ['latest.pt', 'model_best.pt', 'log.csv', 'curves.png'] * 2 + ['latest.pt', 'log.csv', 'curves.png']


@pytest.mark.parametrize('point', range(11))
def test_a_run_stopped_between_any_two_writes_resumes_to_the_same_files(tmp_path, monkeypatch, uninterrupted, point):
    renamed, (rows, latest, best) = uninterrupted
    failure = Killed() if point % 2 == 0 else OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    renames_into(tmp_path / 'D', monkeypatch, stop_at=point, failure=failure)
    with pytest.raises((Killed, GunnError)):
        run(tmp_path, monkeypatch)
    monkeypatch.undo()
    run(tmp_path, monkeypatch)  # -save D -resume D: never refused as another run
    ours_rows, ours_latest, ours_best = outcome(tmp_path / 'D')
    assert ours_rows == rows
    assert [{k: v for k, v in r.items() if k not in TIMINGS} for r in ours_latest['history']] == \
        [{k: v for k, v in r.items() if k not in TIMINGS} for r in latest['history']]
    for name, value in latest['model'].items():
        assert torch.equal(ours_latest['model'][name], value), name
    assert (ours_best['epoch'], ours_best['top1']) == (best['epoch'], best['top1']) == (2, 70.0)
    for name, value in best['model'].items():
        assert torch.equal(ours_best['model'][name], value), name
    assert sorted(os.listdir(tmp_path / 'D')) == ['curves.png', 'latest.pt', 'log.csv', 'model_best.pt']
