"""Saving and finding checkpoints (port of checkpoints.lua, with the saves GUNN commented out restored).

Files hold plain dicts of tensors and Python values (no pickled objects), load with weights_only=True on
any machine, and are written atomically: a killed run leaves the previous file intact.

* ``latest.pt``: {'epoch', 'netType', 'dataset', 'model' (state_dict), 'optimState' (optimizer
  state_dict), 'bestTop1', 'bestTop5', 'opt' (the options as a dict), 'worldSize'}; rewritten after
  every epoch. ``-resume DIR`` continues from it.
* ``model_best.pt``: {'epoch', 'netType', 'dataset', 'model', 'top1', 'top5', 'opt'} of the epoch with
  the lowest test top-1 error so far.
"""
import os
import pickle
import zipfile

import torch

from errors import GunnError
from models.setup import clean_state_dict

LATEST, BEST = 'latest.pt', 'model_best.pt'


def _cpu_state(model):
    model = getattr(model, 'module', model)  # DistributedDataParallel
    return {k: v.detach().cpu().clone() for k, v in clean_state_dict(model.state_dict()).items()}


def atomic_save(obj, path):
    """torch.save through a temporary file in the same folder, fsynced, then renamed over path."""
    tmp = f'{path}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read(path):
    """torch.load of one of our files, with any failure turned into a one-line GunnError."""
    if not os.path.isfile(path):
        raise GunnError(f'checkpoint file not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GunnError(f'cannot read checkpoint {path}: truncated or not a checkpoint file ({reason})') from None


def load_file(path):
    """A model checkpoint dict ({'model': state_dict, ...}) from one of our files."""
    obj = read(path)
    if not isinstance(obj, dict) or 'model' not in obj:
        raise GunnError(f'{path} is not a GUNN checkpoint (no model state in it)')
    return obj


def latest(opt):
    """(checkpoint, optimState) from -resume DIR, or (None, None) when there is nothing to resume."""
    if opt.resume == 'none':
        return None, None
    path = os.path.join(opt.resume, LATEST)
    if not os.path.isfile(path):
        print(f'=> No checkpoint in {opt.resume}; starting from scratch')
        return None, None
    print(f'=> Loading checkpoint {path}')
    checkpoint = load_file(path)
    if 'optimState' not in checkpoint or 'epoch' not in checkpoint:
        raise GunnError(f'{path} is not a latest checkpoint (no optimizer state or epoch)')
    checkpoint['path'] = path
    return checkpoint, checkpoint['optimState']


def load_optim_state(path):
    """-optimState FILE: an optimizer state_dict, or the one inside a latest checkpoint."""
    obj = read(path)
    state = obj.get('optimState', obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or 'param_groups' not in state:
        raise GunnError(f'{path} holds no optimizer state')
    return state


def save(epoch, model, optimState, isBestModel, opt, best, worldSize=1):
    """After an epoch: latest.pt always, model_best.pt when this epoch's test top-1 is the best so far."""
    state = _cpu_state(model)
    options = dict(vars(opt))
    common = {'epoch': epoch, 'netType': opt.netType, 'dataset': opt.dataset, 'model': state, 'opt': options}
    if isBestModel:
        atomic_save({**common, 'top1': best[0], 'top5': best[1]}, os.path.join(opt.save, BEST))
    atomic_save({**common, 'optimState': optimState, 'bestTop1': best[0], 'bestTop5': best[1],
                 'worldSize': worldSize}, os.path.join(opt.save, LATEST))
