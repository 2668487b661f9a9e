"""Checkpoint files: atomic writes, plain contents, loading on the CPU, clear errors for bad files."""
import os
from types import SimpleNamespace

import pytest
import torch

import checkpoints
import models
from errors import GunnError


def model_opt(netType='gunn-mini', dataset='digits', **kw):
    base = dict(netType=netType, dataset=dataset, optnet=False, optMemory=0, shareGradInput=True, save='.',
                resume='none', retrain='none', resetClassifier=False, nClasses=0, precision='single',
                cudnn='default', bnSplit=1, batchSize=32)
    return SimpleNamespace(**{**base, **kw})


def saved_run(tmp_path, epoch=3, best=(12.5, 1.0)):
    opt = model_opt(save=str(tmp_path))
    model = models.create(opt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    checkpoints.save(epoch, model, optimizer.state_dict(), True, opt, best)
    return opt, model, optimizer


def test_latest_and_best_hold_plain_data_and_load_weights_only(tmp_path):
    opt, model, optimizer = saved_run(tmp_path)
    latest = torch.load(tmp_path / 'latest.pt', weights_only=True)
    assert latest['epoch'] == 3 and (latest['bestTop1'], latest['bestTop5']) == (12.5, 1.0)
    assert latest['netType'] == 'gunn-mini' and latest['opt']['dataset'] == 'digits'
    assert latest['optimState']['param_groups'][0]['nesterov'] is True
    for name, value in model.state_dict().items():
        assert torch.equal(latest['model'][name], value)
    best = torch.load(tmp_path / 'model_best.pt', weights_only=True)
    assert best['top1'] == 12.5 and 'optimState' not in best
    assert sorted(os.listdir(tmp_path)) == ['latest.pt', 'model_best.pt']  # no temporary files left


def test_resume_finds_latest(tmp_path):
    saved_run(tmp_path)
    checkpoint, optimState = checkpoints.latest(model_opt(resume=str(tmp_path)))
    assert checkpoint['epoch'] == 3 and optimState['state']
    assert checkpoints.latest(model_opt(resume=str(tmp_path / 'nothing'))) == (None, None)
    assert checkpoints.latest(model_opt()) == (None, None)


def test_setup_resumes_the_same_weights(tmp_path):
    _, model, _ = saved_run(tmp_path)
    checkpoint, _ = checkpoints.latest(model_opt(resume=str(tmp_path)))
    resumed, _ = models.setup(model_opt(), checkpoint)
    for a, b in zip(resumed.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_wrapper_prefixes_are_stripped(tmp_path):
    _, model, _ = saved_run(tmp_path)
    state = {'module._orig_mod.' + k: v for k, v in model.state_dict().items()}
    fresh = models.create(model_opt())
    models.load_model_state(fresh, {'model': state}, 'x.pt', 'gunn-mini')
    assert torch.equal(fresh[0].weight, model[0].weight)


def test_a_killed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    saved_run(tmp_path, epoch=1)
    before = (tmp_path / 'latest.pt').read_bytes()

    def dies(obj, f):
        f.write(b'partial')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', dies)
    with pytest.raises(KeyboardInterrupt):
        saved_run(tmp_path, epoch=2)
    assert (tmp_path / 'latest.pt').read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['latest.pt', 'model_best.pt']


def test_truncated_file_is_a_one_line_error(tmp_path):
    saved_run(tmp_path)
    data = (tmp_path / 'latest.pt').read_bytes()
    (tmp_path / 'latest.pt').write_bytes(data[:len(data) // 2])
    with pytest.raises(GunnError, match='truncated or not a checkpoint file') as e:
        checkpoints.latest(model_opt(resume=str(tmp_path)))
    assert '\n' not in str(e.value)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(GunnError, match='checkpoint file not found'):
        checkpoints.load_file(str(tmp_path / 'none.pt'))
    torch.save({'weights': torch.zeros(2)}, tmp_path / 'other.pt')
    with pytest.raises(GunnError, match='is not a GUNN checkpoint'):
        checkpoints.load_file(str(tmp_path / 'other.pt'))
    (tmp_path / 'text.pt').write_text('hello')
    with pytest.raises(GunnError, match='truncated or not a checkpoint file'):
        checkpoints.load_file(str(tmp_path / 'text.pt'))


def test_checkpoint_of_another_model_names_the_problem(tmp_path):
    saved_run(tmp_path)
    retrain = str(tmp_path / 'model_best.pt')
    with pytest.raises(GunnError, match='holds a gunn-mini model, not -netType gunn-15'):
        models.setup(model_opt('gunn-15', 'cifar10', retrain=retrain))
    state = torch.load(retrain, weights_only=True)
    state['netType'] = 'gunn-15'
    torch.save(state, tmp_path / 'renamed.pt')
    with pytest.raises(GunnError, match=r'does not match the gunn-15 model: 3.weight has shape \(32, 64, 1, 1\) in '
                                        r'the file, \(240, 64, 1, 1\) in the model'):
        models.setup(model_opt('gunn-15', 'cifar10', retrain=str(tmp_path / 'renamed.pt')))


def test_retrain_with_reset_classifier(tmp_path, capsys):
    saved_run(tmp_path)
    model, _ = models.setup(model_opt(retrain=str(tmp_path / 'model_best.pt'), resetClassifier=True, nClasses=7))
    assert model[-1].out_features == 7 and torch.all(model[-1].bias == 0)
    assert ' => Replacing classifier with 7-way classifier' in capsys.readouterr().out


def test_optim_state_file(tmp_path):
    saved_run(tmp_path)
    state = checkpoints.load_optim_state(str(tmp_path / 'latest.pt'))
    assert state['param_groups'][0]['momentum'] == 0.9
    with pytest.raises(GunnError, match='holds no optimizer state'):
        checkpoints.load_optim_state(str(tmp_path / 'model_best.pt'))
