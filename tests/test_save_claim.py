"""The -save and -resume checks made before a run trains (checkpoints.claim): no run overwrites another."""
import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from helpers import saved_run

import checkpoints
import opts
from support import fileio
from support.errors import GunnError


def claim_opt(save, resume='none', testOnly=False):
    return opts.defaults(save=str(save), resume=str(resume), testOnly=testOnly)


def snapshot(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    """latest.pt and model_best.pt of a gunn-mini run at epoch 3 (best error 12.5 %)."""
    folder = tmp_path_factory.mktemp('saved')
    saved_run(folder)
    return folder


@pytest.fixture
def run_x(saved, tmp_path):
    """A folder X holding that run."""
    return shutil.copytree(saved, tmp_path / 'X')


def test_a_new_folder_is_created_and_left_clean(tmp_path):
    assert checkpoints.claim(claim_opt(tmp_path / 'a' / 'b')) is None
    assert (tmp_path / 'a' / 'b').is_dir() and os.listdir(tmp_path / 'a' / 'b') == []


def test_a_folder_holding_a_run_is_refused_and_left_unchanged(saved, run_x, tmp_path):
    before = snapshot(run_x)
    with pytest.raises(GunnError) as e:
        checkpoints.claim(claim_opt(run_x))
    assert str(e.value) == (f'-save {run_x} already holds another run (gunn-mini on digits, epoch 3, best top-1 '
                            f'error 12.500 %), which this run would overwrite: continue it with -resume {run_x}, '
                            'or choose another -save folder')
    # resuming another run, or starting from its best model, into X is refused the same way
    other = shutil.copytree(saved, tmp_path / 'other')
    for resume in (other, other / 'latest.pt', run_x / 'model_best.pt'):
        with pytest.raises(GunnError, match='already holds another run'):
            checkpoints.claim(claim_opt(run_x, resume))
    assert snapshot(run_x) == before


def test_the_run_in_the_folder_is_continued(run_x):
    latest = str(run_x / 'latest.pt')
    assert checkpoints.claim(claim_opt(run_x, run_x)) == latest
    assert checkpoints.claim(claim_opt(run_x, latest)) == latest  # -resume FILE of a latest.pt
    assert checkpoints.claim(claim_opt(str(run_x) + '/', run_x)) == latest  # the same folder, spelt otherwise


def test_best_model_alone_or_an_unreadable_file_is_refused(tmp_path, run_x):
    os.remove(run_x / 'latest.pt')
    with pytest.raises(GunnError, match=r'already holds model_best.pt of another run \(gunn-mini on digits, epoch 3, '
                                        r'best top-1 error 12.500 %\) and no latest.pt to continue it from'):
        checkpoints.claim(claim_opt(run_x, run_x))
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'latest.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(GunnError, match=r'already holds another run \(latest.pt unreadable as a GUNN checkpoint\)'):
        checkpoints.claim(claim_opt(broken))


def test_resume_of_a_missing_folder(tmp_path, capsys):
    with pytest.raises(GunnError, match=r'^-resume .*typo: no such folder or file \(-resume takes the folder of a '
                                        r'run or its latest.pt'):
        checkpoints.claim(claim_opt(tmp_path / 'X', tmp_path / 'typo'))
    assert not (tmp_path / 'X').exists()
    # -save X -resume X: the first start of a restart-safe command begins from scratch
    assert checkpoints.claim(claim_opt(tmp_path / 'X', tmp_path / 'X')) is None
    assert checkpoints.claim(claim_opt(tmp_path / 'Y', tmp_path / 'Y' / 'latest.pt')) is None
    assert f'=> No checkpoint in {tmp_path / "X"}; starting from scratch' in capsys.readouterr().out
    # an existing folder without a checkpoint: from scratch, as fb.resnet.torch
    (tmp_path / 'empty').mkdir()
    assert checkpoints.claim(claim_opt(tmp_path / 'Z', tmp_path / 'empty')) is None


def test_test_only_neither_writes_nor_refuses(run_x, tmp_path):
    before = snapshot(run_x)
    assert checkpoints.claim(claim_opt(run_x, testOnly=True)) is None
    assert checkpoints.claim(claim_opt(tmp_path / 'new', run_x, testOnly=True)) == str(run_x / 'latest.pt')
    assert not (tmp_path / 'new').exists() and snapshot(run_x) == before


def test_unusable_folders(tmp_path, monkeypatch):
    (tmp_path / 'file').write_text('')
    with pytest.raises(GunnError, match=r'^-save .*file is a file, not a folder$'):
        checkpoints.claim(claim_opt(tmp_path / 'file'))
    with pytest.raises(GunnError, match=r'^unable to create checkpoint directory: .*file/sub \(Not a directory\)$'):
        checkpoints.claim(claim_opt(tmp_path / 'file' / 'sub'))

    real_open = open

    def read_only(path, *args, **kw):  # the probe write, on a read-only file system
        if checkpoints.PROBE in str(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(checkpoints, 'open', read_only, raising=False)
    with pytest.raises(GunnError, match=r'^-save .*ro is not writable \(Read-only file system\)$'):
        checkpoints.claim(claim_opt(tmp_path / 'ro'))


def test_stale_temporary_files_of_our_writes_are_removed(run_x, capsys):
    ours = [fileio.temporary(name) for name in ('latest.pt', 'model_best.pt', 'log.csv', 'curves.png',
                                                     '.write-test')]
    others = ['latest.pt.tmp', 'notes.tmp', 'other.pt.0123456789abcdef0123456789abcdef.tmp',
              'latest.pt.0123456789ABCDEF0123456789ABCDEF.tmp', ours[0] + '.bak', 'x' + ours[1]]
    for name in ours + others:
        (run_x / os.path.basename(name)).write_bytes(b'partial')
    checkpoints.claim(claim_opt(run_x, run_x))
    assert sorted(os.listdir(run_x)) == sorted(['latest.pt', 'model_best.pt', *others])
    assert capsys.readouterr().out.count(', left by an interrupted write') == len(ours)


HOLD = textwrap.dedent('''
    import fcntl, os, sys, time
    descriptor = os.open(sys.argv[1], os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    print('locked', flush=True)
    time.sleep(120)
''')


def test_a_folder_in_use_by_another_run_is_refused(tmp_path):
    folder = tmp_path / 'busy'
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, '-c', HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'locked\n'
        with pytest.raises(GunnError, match=r'^-save .*busy is in use by another training run, which is still going'):
            checkpoints.claim(claim_opt(folder))
    finally:
        holder.kill()
        holder.wait()
    assert checkpoints.claim(claim_opt(folder)) is None  # the lock ended with its process


CLAIM_FORK_DIE = textwrap.dedent('''
    import os, sys, time
    from types import SimpleNamespace
    import checkpoints
    checkpoints.claim(SimpleNamespace(save=sys.argv[1], resume='none', testOnly=False))
    worker = os.fork()
    if worker == 0:  # a data loader worker, orphaned when the training process dies
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        time.sleep(120)
        os._exit(0)
    print(worker, flush=True)
    os._exit(0)
''')


def test_the_lock_ends_with_the_training_process_not_its_forked_workers(tmp_path):
    folder = tmp_path / 'run'
    result = subprocess.run([sys.executable, '-c', CLAIM_FORK_DIE, str(folder)], capture_output=True, text=True,
                            timeout=120, cwd=os.path.dirname(os.path.abspath(checkpoints.__file__)))
    worker = int(result.stdout)
    try:
        os.kill(worker, 0)  # the orphaned worker still lives ...
        assert checkpoints.claim(claim_opt(folder)) is None  # ... and does not hold the lock
    finally:
        os.kill(worker, signal.SIGKILL)
