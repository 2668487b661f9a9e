"""The optional packages: each one's absence is one line where it is needed, and nowhere else; the
-tensorboard event file."""
import contextlib
import csv
import io
import sys

import numpy as np
import pytest
import torch
from helpers import FAST, mini, mini_opt, tiny_loaders
from PIL import Image

import checkpoints
import main
import opts
from datasets import decode, digits
from pretrained import export_onnx
from support import distributed
from support.epoch_log import EpochLog, Events
from support.errors import GunnError
from torch7 import t7
from train import Trainer


def without(monkeypatch, *modules):
    """Imports of these modules fail from here on, as when their packages are not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def run(tmp_path, monkeypatch, save, *argv):
    tiny_loaders(monkeypatch)
    opt = opts.parse([*FAST, '-device', 'cpu', '-nEpochs', '2', '-progress', 'lines', '-save', str(tmp_path / save),
                      *argv])
    with contextlib.redirect_stdout(io.StringIO()):
        main.run(opt, distributed.Process())
    return torch.load(tmp_path / save / checkpoints.LATEST, weights_only=True)


def test_training_and_resuming_need_no_torchfile(tmp_path, monkeypatch):
    without(monkeypatch, 'torchfile')
    run(tmp_path, monkeypatch, 'x', '-nEpochs', '1')
    assert run(tmp_path, monkeypatch, 'x', '-resume', str(tmp_path / 'x'))['epoch'] == 2
    (tmp_path / 'model.t7').write_bytes(b'\x04\x00\x00\x00')
    with pytest.raises(GunnError, match=r'^reading Torch7 \(.t7\) files needs the torchfile package: '
                                        r'pip install torchfile$'):
        t7.load_t7(str(tmp_path / 'model.t7'))


@pytest.mark.parametrize('module,package,needed_by', [
    ('sklearn.datasets', 'scikit-learn', 'the digits data set'),
    ('tqdm', 'tqdm', '-progress bar'),
    ('onnx', 'onnx', 'exporting to ONNX'),
    ('tensorboard', 'tensorboard', '-tensorboard true'),
    ('torchcodec.decoders', 'torchcodec', 'decoding JPEG and PNG images'),
])
def test_a_missing_package_is_one_line_where_it_is_needed(tmp_path, monkeypatch, module, package, needed_by):
    without(monkeypatch, module)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'a.jpg')
    uses = {
        'sklearn.datasets': lambda: digits.gen(mini_opt()),
        'tqdm': lambda: Trainer(mini(), torch.nn.CrossEntropyLoss(), mini_opt(progress='bar')),
        'onnx': lambda: export_onnx.main([str(tmp_path / 'model.pt'), str(tmp_path / 'out.onnx')]),
        'tensorboard': lambda: Events(str(tmp_path), 3, 1),
        'torchcodec.decoders': lambda: decode.load_image(tmp_path / 'a.jpg'),
    }
    with pytest.raises(GunnError) as error:
        uses[module]()
    assert str(error.value) == f'{needed_by} needs the {package} package: pip install {package}'


def test_without_matplotlib_the_log_says_once_that_it_draws_no_curves(tmp_path, monkeypatch, capsys):
    without(monkeypatch, 'matplotlib')
    log = EpochLog(str(tmp_path), None, 1)
    for epoch in (1, 2):
        log.add(epoch=epoch, lr=0.1, train_loss=2.0, train_top1=80.0, train_top5=40.0, test_top1=70.0, test_top5=30.0,
                seconds=1.0, images_per_s=100.0)
        log.write()
    assert capsys.readouterr().err == (f'warning: {tmp_path}/curves.png is not drawn: it needs the matplotlib '
                                       'package: pip install matplotlib\n')
    assert (tmp_path / 'log.csv').exists() and not (tmp_path / 'curves.png').exists()


def test_without_onnxruntime_the_export_says_it_was_not_run(tmp_path, monkeypatch, capsys):
    without(monkeypatch, 'onnxruntime')
    torch.save({'netType': 'gunn-mini', 'dataset': 'digits', 'model': mini(torch.float32).state_dict()},
               tmp_path / 'model.pt')
    monkeypatch.setattr(export_onnx, 'export', lambda model, size, output: open(output, 'wb').close())
    export_onnx.main([str(tmp_path / 'model.pt'), str(tmp_path / 'out.onnx')])
    assert capsys.readouterr().out.splitlines()[-1] == 'onnxruntime is not installed: the exported file was not run'


def test_tensorboard_events_hold_the_log_and_change_nothing(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    with_events = run(tmp_path, monkeypatch, 'tb', '-tensorboard', 'true')
    without_events = run(tmp_path, monkeypatch, 'plain')
    for name, value in without_events['model'].items():
        assert torch.equal(with_events['model'][name], value), name
    events = EventAccumulator(str(tmp_path / 'tb'))
    events.Reload()
    with open(tmp_path / 'tb' / 'log.csv') as f:
        rows = list(csv.DictReader(f))
    for column in ('lr', 'train_loss', 'train_top1', 'test_top1', 'test_top5'):
        logged = [(e.step, e.value) for e in events.Scalars(f'epoch/{column}')]
        assert logged == [(int(r['epoch']) * 3, pytest.approx(float(r[column]), rel=1e-6)) for r in rows], column
    assert [e.step for e in events.Scalars('train/loss')] == list(range(1, 7))  # 3 iterations per epoch
