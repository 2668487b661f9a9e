"""Checkpoint files: atomic writes, plain contents, loading on the CPU, clear errors for bad files."""
import errno
import os
import pickle
import re

import pytest
import torch
from helpers import mini_opt, saved_run

import checkpoints
import models
from support import epoch_log, fileio
from support.epoch_log import EpochLog
from support.errors import GunnError


def model_opt(netType='gunn-mini', dataset='digits', **kw):
    return mini_opt(netType=netType, dataset=dataset, save='.', cudnn='default', **kw)


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


def resumed(resume, **kw):
    opt = model_opt(resume=str(resume), **kw)
    return checkpoints.latest(opt, 1, checkpoints.resume_file(opt))


def test_resume_finds_latest(tmp_path):
    saved_run(tmp_path)
    checkpoint, optimState = resumed(tmp_path)
    assert checkpoint['epoch'] == 3 and optimState['state'] and checkpoint['path'] == str(tmp_path / 'latest.pt')
    assert resumed(tmp_path / 'latest.pt')[0]['epoch'] == 3
    (tmp_path / 'nothing').mkdir()
    assert resumed(tmp_path / 'nothing') == (None, None)
    assert checkpoints.latest(model_opt(), 1, checkpoints.resume_file(model_opt())) == (None, None)
    with pytest.raises(GunnError, match=r'model_best.pt is not a latest checkpoint .*-retrain .*model_best.pt starts '
                                        'from its weights'):
        resumed(tmp_path / 'model_best.pt')


def test_setup_resumes_the_same_weights(tmp_path):
    _, model, _ = saved_run(tmp_path)
    checkpoint, _ = resumed(tmp_path)
    again, _ = models.setup(model_opt(), checkpoint)
    for a, b in zip(again.state_dict().values(), model.state_dict().values()):
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


def fails_writing(error, after=b'partial'):
    """A torch.save whose write fails as on a full disk or a read-only file system (torch reports it as a
    RuntimeError raised while handling the OSError)."""
    def save(obj, f):
        f.write(after)
        try:
            raise OSError(error, os.strerror(error))
        except OSError:
            raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598')
    return save


@pytest.mark.parametrize('error,reason', [(errno.ENOSPC, 'No space left on device'),
                                          (errno.EROFS, 'Read-only file system')])
def test_a_failed_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, error, reason):
    saved_run(tmp_path, epoch=1)
    before = {name: (tmp_path / name).read_bytes() for name in ('latest.pt', 'model_best.pt')}
    monkeypatch.setattr(torch, 'save', fails_writing(error))
    with pytest.raises(GunnError) as e:
        saved_run(tmp_path, epoch=2)
    message = str(e.value)
    assert re.fullmatch(rf'cannot write {tmp_path}/latest.pt \({reason}\); the previous latest.pt is intact; '
                        rf'it needs about \d+\.\d MB of free space in {tmp_path} \(\d+\.\d MB free now\)', message), message
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert sorted(os.listdir(tmp_path)) == ['latest.pt', 'model_best.pt']

    monkeypatch.undo()  # the first run's write fails: nothing claims to be intact
    fresh = tmp_path / 'fresh'
    fresh.mkdir()
    monkeypatch.setattr(torch, 'save', fails_writing(error))
    with pytest.raises(GunnError) as e:
        saved_run(fresh, epoch=1)
    assert 'intact' not in str(e.value) and 'there was no previous latest.pt' in str(e.value)
    assert os.listdir(fresh) == []


def test_a_failed_best_write_after_the_latest_one_is_written_again_on_resume(tmp_path, monkeypatch):
    saved_run(tmp_path, epoch=1)
    before = (tmp_path / 'model_best.pt').read_bytes()
    real = torch.save
    monkeypatch.setattr(torch, 'save', lambda obj, f: (real if 'optimState' in obj else fails_writing(errno.ENOSPC))(obj, f))
    with pytest.raises(GunnError, match=r'cannot write .*model_best.pt \(No space left on device\); the previous '
                                        r'model_best.pt is intact; it needs about .*latest.pt, the last saved epoch, '
                                        r'is intact$'):
        saved_run(tmp_path, epoch=2)
    assert (tmp_path / 'model_best.pt').read_bytes() == before
    monkeypatch.undo()
    latest = checkpoints.load_file(str(tmp_path / 'latest.pt'))
    assert latest['epoch'] == 2
    checkpoints.restore_best({**latest, 'path': str(tmp_path / 'latest.pt')}, str(tmp_path))
    best = checkpoints.load_file(str(tmp_path / 'model_best.pt'))
    assert best['epoch'] == 2 and all(torch.equal(best['model'][k], v) for k, v in latest['model'].items())
    assert (best['top1'], best['top5']) == (latest['bestTop1'], latest['bestTop5'])


def test_the_space_estimate_covers_the_file(tmp_path):
    _, model, optimizer = saved_run(tmp_path)
    latest = torch.load(tmp_path / 'latest.pt', weights_only=True)
    size = os.path.getsize(tmp_path / 'latest.pt')
    assert size <= fileio.payload_bytes(latest) <= 1.5 * size


def test_truncated_file_is_a_one_line_error(tmp_path):
    saved_run(tmp_path)
    data = (tmp_path / 'latest.pt').read_bytes()
    (tmp_path / 'latest.pt').write_bytes(data[:len(data) // 2])
    with pytest.raises(GunnError, match='truncated or not a checkpoint file') as e:
        resumed(tmp_path)
    assert '\n' not in str(e.value)


class RunsCode:
    def __reduce__(self):
        return os.system, ('touch pwned',)


class Foreign:
    pass


def test_unsafe_or_foreign_pickles_are_refused_as_such(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({'model': RunsCode()}, 'evil.pt')
    torch.save({'model': Foreign()}, 'foreign.pt')
    with open('plain.pkl', 'wb') as f:
        pickle.dump({'model': {}}, f, protocol=4)
    for name, what in (('evil.pt', r'\((posix|nt)\.system\)'), ('foreign.pt', r'\(test_checkpoints\.Foreign\)')):
        with pytest.raises(GunnError, match=rf'^checkpoint file {name} holds objects other than tensors {what}; '
                                            'refused for safety$'):
            checkpoints.load_file(name)
    with pytest.raises(GunnError, match=r'^checkpoint file plain.pkl is a pickle, not a file written by torch.save; '
                                        r'refused for safety$'):
        checkpoints.load_file('plain.pkl')
    with open('random.pt', 'wb') as f:
        f.write(bytes(range(7, 256)) * 3)
    with pytest.raises(GunnError, match=r'^random.pt is not a checkpoint file \(not a file written by torch.save\)$'):
        checkpoints.load_file('random.pt')
    assert not os.path.exists('pwned')


def test_folder_where_a_file_is_expected(tmp_path):
    with pytest.raises(GunnError, match=f'^{tmp_path} is a folder, not a checkpoint file$'):
        checkpoints.load_file(str(tmp_path))
    with pytest.raises(GunnError, match=f'^{tmp_path} is a folder, not a checkpoint file$'):
        checkpoints.load_optim_state(str(tmp_path))


def test_kept_and_describe(tmp_path):
    assert checkpoints.kept(str(tmp_path)) == f'no checkpoint had been saved in {tmp_path} yet'
    assert checkpoints.describe(str(tmp_path)) is None
    saved_run(tmp_path, epoch=4, best=(2.4725, 0.5))
    assert checkpoints.kept(str(tmp_path)) == f'{tmp_path}/latest.pt, the last saved epoch, is intact'
    assert checkpoints.describe(str(tmp_path)) == 'gunn-mini on digits, epoch 4, best top-1 error 2.473 %'


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(GunnError, match='checkpoint file not found'):
        checkpoints.load_file(str(tmp_path / 'none.pt'))
    torch.save({'weights': torch.zeros(2)}, tmp_path / 'other.pt')
    with pytest.raises(GunnError, match='is not a GUNN checkpoint'):
        checkpoints.load_file(str(tmp_path / 'other.pt'))
    (tmp_path / 'text.pt').write_text('hello')
    with pytest.raises(GunnError, match=r'text.pt is not a checkpoint file \(not a file written by torch.save\)'):
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


def test_a_failed_log_write_is_one_line_and_keeps_the_previous_log(tmp_path, monkeypatch):
    row = dict(epoch=1, lr=0.1, train_loss=2.0, train_top1=80.0, train_top5=40.0, test_top1=70.0, test_top5=30.0,
               seconds=1.0, images_per_s=100.0)
    log = EpochLog(str(tmp_path), None, 1)
    log.add(**row)
    log.write()
    before = (tmp_path / 'log.csv').read_bytes()
    real_open = open

    def full(path, *args, **kw):
        if str(path).endswith('.tmp'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(epoch_log, 'open', full, raising=False)
    with pytest.raises(GunnError, match=rf'^cannot write {tmp_path}/log.csv \(No space left on device\); the previous '
                                        r'log.csv is intact$'):
        log.add(**{**row, 'epoch': 2})
        log.write()
    assert (tmp_path / 'log.csv').read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['curves.png', 'log.csv']


def test_a_checkpoint_of_another_data_set_is_refused(tmp_path):
    saved_run(tmp_path)  # gunn-mini on digits, ten classes like cifar10
    opt = model_opt(dataset='cifar10', resume=str(tmp_path))
    with pytest.raises(GunnError, match=rf'^{tmp_path}/latest.pt is a checkpoint of gunn-mini on digits, not -dataset '
                                        r'cifar10: resume it with -dataset digits, or start from its weights with '
                                        rf'-retrain {tmp_path}/latest.pt -resetClassifier true -nClasses N$'):
        checkpoints.latest(opt, 1, checkpoints.resume_file(opt))
