"""Saving and finding checkpoints (port of checkpoints.lua, with the saves GUNN commented out restored).

Files hold plain dicts of tensors and Python values (no pickled objects), load with weights_only=True on
any machine, and are written atomically: a killed run leaves the previous file intact.

* ``latest.pt``: {'epoch', 'netType', 'dataset', 'model' (state_dict), 'optimState' (optimizer
  state_dict), 'bestTop1', 'bestTop5', 'opt' (the options as a dict), 'worldSize', 'rng' (-rng torch7: the
  Torch7 generators' states, torch7_streams.RunStreams.state_dict; else None)}; rewritten after every
  epoch. ``-resume DIR`` continues from it.
* ``model_best.pt``: {'epoch', 'netType', 'dataset', 'model', 'top1', 'top5', 'opt'} of the epoch with
  the lowest test top-1 error so far.
"""
import os
import sys

import torch_files
from errors import GunnError
from models.setup import clean_state_dict

LATEST, BEST = 'latest.pt', 'model_best.pt'


def _cpu_state(model):
    model = getattr(model, 'module', model)  # DistributedDataParallel
    return {k: v.detach().cpu().clone() for k, v in clean_state_dict(model.state_dict()).items()}


def load_file(path):
    """A model checkpoint dict ({'model': state_dict, ...}) from one of our files."""
    obj = torch_files.load(path, 'checkpoint file')
    if not isinstance(obj, dict) or 'model' not in obj:
        raise GunnError(f'{path} is not a GUNN checkpoint (no model state in it)')
    return obj


def bn_group(batchSize, worldSize, bnSplit):
    """Images over which one BatchNorm normalises: the global batch over processes and -bnSplit slices."""
    return batchSize / (worldSize * bnSplit)


def latest(opt, worldSize=1):
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
    saved = checkpoint['opt']
    before = bn_group(saved['batchSize'], checkpoint['worldSize'], saved.get('bnSplit', 1))
    now = bn_group(opt.batchSize, worldSize, opt.bnSplit)
    if before != now:
        print(f'warning: this run was trained with BatchNorm over {before:g} images per group '
              f'({checkpoint["worldSize"]} process(es)) and continues with {now:g}: the BatchNorm statistics, '
              'and so the experiment, change', file=sys.stderr)
    return checkpoint, checkpoint['optimState']


def load_optim_state(path):
    """-optimState FILE: an optimizer state_dict, or the one inside a latest checkpoint."""
    obj = torch_files.load(path, 'checkpoint file')
    state = obj.get('optimState', obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or 'param_groups' not in state:
        raise GunnError(f'{path} holds no optimizer state')
    return state


def save(epoch, model, optimState, isBestModel, opt, best, worldSize=1, rng=None):
    """After an epoch: latest.pt always, model_best.pt when this epoch's test top-1 is the best so far."""
    state = _cpu_state(model)
    options = dict(vars(opt))
    common = {'epoch': epoch, 'netType': opt.netType, 'dataset': opt.dataset, 'model': state, 'opt': options}
    if isBestModel:
        torch_files.save_atomic({**common, 'top1': best[0], 'top5': best[1]}, os.path.join(opt.save, BEST))
    torch_files.save_atomic({**common, 'optimState': optimState, 'bestTop1': best[0], 'bestTop5': best[1],
                             'worldSize': worldSize, 'rng': rng}, os.path.join(opt.save, LATEST))
