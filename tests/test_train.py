"""The Trainer: ten-crop testing, precisions, and the epoch figures it returns."""
import contextlib
import io

import pytest
import torch
import torch.nn as nn
from helpers import image_tree, mini_opt, quiet

import models
import opts
from dataloader import DataLoader, FixedBatches
from train import Trainer


def digit_batches(n=2, size=8):
    torch.manual_seed(0)
    return FixedBatches([{'input': torch.randn(size, 3, 32, 32), 'target': torch.randint(0, 10, (size,)),
                     'batchTotal': size} for _ in range(n)])


def test_ten_crop_test_sums_the_crops(tmp_path):
    """The original crashes in ten-crop testing (its loss sees ten outputs per target); ours scores them."""
    image_tree(tmp_path / 'data')
    opt = opts.defaults(dataset='imagenet', data=str(tmp_path / 'data'), gen=str(tmp_path / 'gen'), nThreads=0,
                        batchSize=20, tenCrop=True, device='cpu')
    _, val = DataLoader.create(opt)
    assert val.nCrops == 10 and val.batchSize == 2
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    trainer = Trainer(model, nn.CrossEntropyLoss(), mini_opt(dataset='imagenet'))
    (top1, top5), out = quiet(trainer.test, 1, val)
    with torch.no_grad():
        sample = next(val.run(1))[1]
        summed = model(sample['input']).view(2, 10, 2).sum(1)
    expected = 100 * (summed.argmax(1) != sample['target']).float().mean().item()
    assert top1 == pytest.approx(expected) and top5 == 0.0
    assert ' * Finished epoch # 1     top1:' in out


@pytest.mark.parametrize('precision,dtype', [('single', torch.float32), ('double', torch.float64),
                                             ('half', torch.float32)])
def test_precisions_train(precision, dtype):
    torch.manual_seed(0)
    model = models.create(mini_opt()).to(dtype)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, nn.CrossEntropyLoss(), mini_opt(precision=precision))
    (top1, top5, loss), out = quiet(trainer.train, 1, digit_batches())
    assert 0 <= top5 <= top1 <= 100 and 1.0 < loss < 4.0
    assert all(p.dtype == dtype for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert trainer.scaler.is_enabled() == (precision == 'half')
    assert out.count(' | Epoch: [1][') == 2


def test_epoch_figures_average_over_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    batches = digit_batches()
    batches.batches[1] = {k: (v[:3] if torch.is_tensor(v) else 3) for k, v in batches.batches[1].items()}
    criterion = nn.CrossEntropyLoss()
    losses = []
    with torch.no_grad():
        weights = [p.clone() for p in model.parameters()]
    trainer = Trainer(model, criterion, mini_opt(LR=0.0, weightDecay=0.0))  # no update: fixed losses
    (_, _, loss), _ = quiet(trainer.train, 1, batches)
    with torch.no_grad():
        for b in batches.batches:
            losses.append(criterion(model(b['input']), b['target']).item() * len(b['target']))
    assert loss == pytest.approx(sum(losses) / 11)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))


def test_progress_bar_mode_trains_and_tests():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    trainer = Trainer(model, nn.CrossEntropyLoss(), mini_opt(progress='bar'))
    with contextlib.redirect_stderr(io.StringIO()) as bar:
        (top1, _, loss), out = quiet(trainer.train, 1, digit_batches())
        (test_top1, _), _ = quiet(trainer.test, 1, digit_batches())
    assert ' | Epoch: [' not in out and '=> Training epoch # 1' in out  # no per-iteration lines
    assert 'Epoch 1' in bar.getvalue() and 'Err ' in bar.getvalue()  # tqdm writes to stderr
    assert 0 <= top1 <= 100 and 0 <= test_top1 <= 100 and loss > 0


def test_loss_scale_comes_back_only_into_half_precision():
    model = nn.Linear(2, 2)
    saved = {'scale': 512.0, 'growth_factor': 2.0, 'backoff_factor': 0.5, 'growth_interval': 2000,
             '_growth_tracker': 7}
    half = mini_opt(precision='half')
    assert Trainer(model, nn.CrossEntropyLoss(), half, scalerState=saved).scalerState == saved
    # a checkpoint of another precision holds {}: half precision starts from the initial scale
    assert Trainer(model, nn.CrossEntropyLoss(), half, scalerState={}).scalerState['scale'] == 65536.0
    assert Trainer(model, nn.CrossEntropyLoss(), mini_opt(), scalerState=saved).scalerState == {}
