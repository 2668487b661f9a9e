"""The -save folder of a training run, checked before anything is trained, so that a run never destroys
another run's work and never fails at its first checkpoint for a reason known at the start.

claim(opt), called once (in rank 0 of a distributed run), returns the latest checkpoint to resume from and:
* refuses a -save folder holding checkpoints of a run that this one does not resume (it would overwrite
  them), naming that run and the two ways out;
* creates the folder when missing and proves it writable with a probe write;
* refuses a folder that another training run is using right now (an advisory lock, held until this
  process ends; file systems without locks go unprotected);
* removes the temporary files that interrupted writes of this code left there (only those names).
-testOnly writes nothing: then -save is not looked at.
"""
import os
import sys

import checkpoints
from support import epoch_log
from support import fileio
from support.errors import GunnError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

PROBE = '.write-test'
# the files a run writes into -save, whose temporary files an interrupted write leaves behind
WRITTEN = (checkpoints.LATEST, checkpoints.BEST, epoch_log.CSV, epoch_log.PNG, PROBE)

_locks = {}  # real path of a claimed folder -> the descriptor holding its lock


def claim(opt):
    """The latest.pt to resume from (or None), after the checks above; a GunnError when one fails."""
    resume = checkpoints.resume_file(opt)
    if opt.testOnly:
        return resume
    folder = opt.save
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise GunnError(f'-save {folder} is a file, not a folder')
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise GunnError(f'unable to create checkpoint directory: {folder} ({e.strerror or e})') from None
    _refuse_another_run(folder, resume)
    _lock(folder)
    _probe(folder)
    _remove_stale_temporaries(folder)
    return resume


def _refuse_another_run(folder, resume):
    own = os.path.join(folder, checkpoints.LATEST)
    if resume is not None and checkpoints.same_path(resume, own):
        return  # continuing the run that is there
    run = checkpoints.describe(folder)
    if run is None:
        return
    if not os.path.isfile(own):
        raise GunnError(f'-save {folder} already holds {checkpoints.BEST} of another run ({run}) and no '
                        f'{checkpoints.LATEST} to continue it from: choose another -save folder')
    raise GunnError(f'-save {folder} already holds another run ({run}), which this run would overwrite: '
                    f'continue it with -resume {folder}, or choose another -save folder')


def _lock(folder):
    key = os.path.realpath(folder)
    if fcntl is None or key in _locks:
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise GunnError(f'-save {folder} is in use by another training run, which is still going: wait for it '
                        'to end, or choose another -save folder') from None
    except OSError:  # a file system without flock (some network file systems)
        os.close(descriptor)
        return
    _locks[key] = descriptor


def _close_locks_in_child():
    # A forked child (a data loader worker) shares the lock; closing its copy leaves the lock with this
    # process alone, so that it ends when this process does, even while orphaned workers linger.
    for descriptor in _locks.values():
        os.close(descriptor)
    _locks.clear()


if fcntl is not None:
    os.register_at_fork(after_in_child=_close_locks_in_child)


def _probe(folder):
    path = fileio.temporary(os.path.join(folder, PROBE))
    try:
        with open(path, 'xb') as f:
            f.write(bytes(4096))
            f.flush()
            os.fsync(f.fileno())
        os.unlink(path)
    except OSError as e:
        raise GunnError(f'-save {folder} is not writable ({e.strerror or e})') from None


def _remove_stale_temporaries(folder):
    for name in sorted(os.listdir(folder)):
        if any(fileio.is_temporary(name, target) for target in WRITTEN):
            path = os.path.join(folder, name)
            try:
                os.unlink(path)
            except OSError as e:
                print(f'warning: cannot remove {path}, left by an interrupted write ({e.strerror})', file=sys.stderr)
            else:
                print(f'=> Removed {path}, left by an interrupted write')
