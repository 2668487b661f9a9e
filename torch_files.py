"""Reading and writing torch.save files: atomic writes, and one-line errors for unreadable files."""
import os
import uuid

import torch

from errors import GunnError


def save_atomic(obj, path):
    """torch.save through a uniquely named temporary file in the same folder, fsynced, then renamed over
    path: a killed process or a concurrent reader never sees a half-written file."""
    tmp = f'{path}.{uuid.uuid4().hex}.tmp'
    try:
        with open(tmp, 'xb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


def load(path, what, hint=''):
    """torch.load(weights_only=True) on the CPU; a missing or unreadable file is a one-line GunnError."""
    if not os.path.isfile(path):
        raise GunnError(f'{what} not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # torch.load fails in many ways on foreign or damaged files: all mean the same here
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise GunnError(f'cannot read {what} {path}: truncated or not a {what} ({reason}){hint}') from None
