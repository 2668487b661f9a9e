"""Saving and finding checkpoints (port of checkpoints.lua, with the saves GUNN commented out restored).

Files hold plain dicts of tensors and Python values (no pickled objects), load with weights_only=True on
any machine, and are written atomically: a killed run, a full disk or a read-only file system leaves the
previous file intact.

* ``latest.pt``: {'epoch', 'netType', 'dataset', 'model' (state_dict), 'optimState' (optimizer
  state_dict), 'opt' (the options as a dict), and the run's state: 'bestTop1', 'bestTop5', 'bestEpoch',
  'history' (the rows of log.csv, one per finished epoch), 'worldSize', 'scaler' (the GradScaler state of
  -precision half, else {}), 'rng' (-rng torch7: the Torch7 generators' states,
  torch7.streams.RunStreams.state_dict; else None)}; rewritten after every epoch. ``-resume DIR`` (or
  ``-resume DIR/latest.pt``) continues from it.
* ``model_best.pt``: {'epoch', 'netType', 'dataset', 'model', 'top1', 'top5', 'opt'} of the epoch with
  the lowest test top-1 error so far.

An epoch's end writes latest.pt first, then model_best.pt, then the log (support/epoch_log.py), so that the
folder is one that -resume continues at every instant: a run stopped between the writes leaves latest.pt
of its last epoch, from which resuming rewrites whatever came after it (restore_best, and the log from
'history').

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

from support import epoch_log, fileio
from support.errors import GunnError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

LATEST, BEST = 'latest.pt', 'model_best.pt'


def clean_state_dict(state):
    """Strip the wrappers' prefixes (DistributedDataParallel's module., torch.compile's _orig_mod.)."""
    cleaned = {}
    for key, value in state.items():
        for prefix in ('module.', '_orig_mod.'):
            while key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


def _cpu_state(model):
    model = getattr(model, 'module', model)  # DistributedDataParallel
    return {k: v.detach().cpu().clone() for k, v in clean_state_dict(model.state_dict()).items()}


def load_file(path):
    """A model checkpoint dict ({'model': state_dict, ...}) from one of our files."""
    obj = fileio.load(path, 'checkpoint file')
    if not isinstance(obj, dict) or 'model' not in obj:
        raise GunnError(f'{path} is not a GUNN checkpoint (no model state in it)')
    return obj


def bn_group(batchSize, worldSize, bnSplit):
    """Images over which one BatchNorm normalises: the global batch over processes and -bnSplit slices."""
    return batchSize / (worldSize * bnSplit)


def same_path(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def resume_file(opt):
    """The latest checkpoint that -resume names (a run's folder, or its latest.pt itself), or None to start
    from scratch. A -resume that does not exist is an error (a mistyped name must not start a new run),
    except where it is this run's -save folder: `-save X -resume X` starts X and continues it after a restart."""
    if opt.resume == 'none':
        return None
    if os.path.isfile(opt.resume):
        return opt.resume
    if os.path.isdir(opt.resume):
        path = os.path.join(opt.resume, LATEST)
        if os.path.isfile(path):
            return path
    elif not (same_path(opt.resume, opt.save) or same_path(opt.resume, os.path.join(opt.save, LATEST))):
        raise GunnError(f'-resume {opt.resume}: no such folder or file (-resume takes the folder of a run or its '
                        f'{LATEST}; with -save naming the same folder, a first start begins from scratch)')
    print(f'=> No checkpoint in {opt.resume}; starting from scratch')
    return None


def latest(opt, worldSize, path):
    """(checkpoint, optimState) of the latest checkpoint file path (from resume_file), or (None, None)."""
    if path is None:
        return None, None
    print(f'=> Loading checkpoint {path}')
    checkpoint = load_file(path)
    if 'optimState' not in checkpoint or 'epoch' not in checkpoint:
        raise GunnError(f'{path} is not a latest checkpoint (no optimizer state or epoch): -resume takes the '
                        f'folder of a run or its {LATEST}; -retrain {path} starts from its weights')
    checkpoint['path'] = path
    if checkpoint.get('dataset', opt.dataset) != opt.dataset:
        raise GunnError(f'{path} is a checkpoint of {checkpoint.get("netType")} on {checkpoint["dataset"]}, not '
                        f'-dataset {opt.dataset}: resume it with -dataset {checkpoint["dataset"]}, or start from its '
                        f'weights with -retrain {path} -resetClassifier true -nClasses N')
    saved = checkpoint['opt']
    before = bn_group(saved['batchSize'], checkpoint['worldSize'], saved.get('bnSplit', 1))
    now = bn_group(opt.batchSize, worldSize, opt.bnSplit)
    if before != now:
        print(f'warning: this run was trained with BatchNorm over {before:g} images per group '
              f'({checkpoint["worldSize"]} process(es)) and continues with {now:g}: the BatchNorm statistics, '
              'and so the experiment, change', file=sys.stderr)
    return checkpoint, checkpoint['optimState']


def describe(folder):
    """The run whose checkpoints are in folder, in words ('gunn-mini on digits, epoch 6, best top-1 error
    2.473 %'), or None when it holds none. Reads latest.pt, or model_best.pt where latest.pt is missing."""
    for name, best in ((LATEST, 'bestTop1'), (BEST, 'top1')):
        path = os.path.join(folder, name)
        if os.path.lexists(path):
            try:
                run = load_file(path)
                return (f'{run["netType"]} on {run["dataset"]}, epoch {run["epoch"]}, '
                        f'best top-1 error {run[best]:.3f} %')
            except (GunnError, KeyError, TypeError, ValueError):
                return f'{name} unreadable as a GUNN checkpoint'
    return None


def kept(folder):
    """What a run stopped before the end leaves in its -save folder, for its last message."""
    path = os.path.join(folder, LATEST)
    if os.path.isfile(path):
        return f'{path}, the last saved epoch, is intact'
    return f'no checkpoint had been saved in {folder} yet'


def load_optim_state(path):
    """-optimState FILE: an optimizer state_dict, or the one inside a latest checkpoint."""
    obj = fileio.load(path, 'checkpoint file')
    state = obj.get('optimState', obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or 'param_groups' not in state:
        raise GunnError(f'{path} holds no optimizer state')
    return state


def save(epoch, model, optimState, isBestModel, opt, run):
    """After an epoch: latest.pt always, then model_best.pt when this epoch's test top-1 is the best so far.
    ``run``: the run's state that latest.pt keeps besides the model and the optimizer ('bestTop1',
    'bestTop5', 'bestEpoch', 'history', 'worldSize', 'scaler', 'rng'; see above)."""
    common = {'epoch': epoch, 'netType': opt.netType, 'dataset': opt.dataset, 'model': _cpu_state(model),
              'opt': dict(vars(opt))}
    latest = {**common, 'optimState': optimState, **run}
    fileio.save_atomic(latest, os.path.join(opt.save, LATEST))
    if isBestModel:
        try:
            _save_best(latest, opt.save)
        except GunnError as e:  # a full disk: the next -resume writes it from latest.pt
            raise GunnError(f'{e}; {kept(opt.save)}') from None


def _save_best(latest, folder):
    best = {k: latest[k] for k in ('epoch', 'netType', 'dataset', 'model', 'opt')}
    fileio.save_atomic({**best, 'top1': latest['bestTop1'], 'top5': latest['bestTop5']}, os.path.join(folder, BEST))


def restore_best(checkpoint, folder):
    """When the latest epoch was the best and its model_best.pt was not written (the run stopped between the
    two files), write it from latest.pt, which holds the same model."""
    if checkpoint is None or checkpoint.get('bestEpoch') != checkpoint['epoch']:
        return
    if not same_path(os.path.dirname(checkpoint['path']), folder):
        return  # a run continued elsewhere writes its own model_best.pt
    path = os.path.join(folder, BEST)
    if os.path.isfile(path):
        try:
            if fileio.load(path, 'checkpoint file').get('epoch') == checkpoint['epoch']:
                return
        except GunnError:
            pass  # unreadable: written again below
    print(f'=> Writing {path} of epoch {checkpoint["epoch"]} from {checkpoint["path"]} (the run stopped before it)')
    _save_best(checkpoint, folder)


# --- the -save folder of a training run -------------------------------------------------------------------
# Checked before anything is trained, so that a run never destroys another run's work and never fails at its
# first checkpoint for a reason known at the start.
PROBE = '.write-test'
# the files a run writes into -save, whose temporary files an interrupted write leaves behind
WRITTEN = (LATEST, BEST, epoch_log.CSV, epoch_log.PNG, PROBE)

_locks = {}  # real path of a claimed folder -> the descriptor holding its lock


def claim(opt):
    """The latest.pt to resume from (or None), after the checks above; a GunnError when one fails."""
    resume = resume_file(opt)
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
    own = os.path.join(folder, LATEST)
    if resume is not None and same_path(resume, own):
        return  # continuing the run that is there
    run = describe(folder)
    if run is None:
        return
    if not os.path.isfile(own):
        raise GunnError(f'-save {folder} already holds {BEST} of another run ({run}) and no '
                        f'{LATEST} to continue it from: choose another -save folder')
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
