"""Writing files atomically, and reading torch.save files: one-line errors for missing, unreadable, unsafe
files and for writes that fail (a full disk, a read-only file system)."""
import contextlib
import os
import pickle
import re
import shutil
import uuid
import warnings

import torch

from support.errors import GunnError


def temporary(path):
    """A fresh name for the temporary file that becomes path."""
    return f'{path}.{uuid.uuid4().hex}.tmp'


def is_temporary(name, target):
    """Whether the file name is one that temporary() gives for a file named target."""
    return re.fullmatch(re.escape(target) + r'\.[0-9a-f]{32}\.tmp', name) is not None


@contextlib.contextmanager
def replacing(path, size=None):
    """Yields a temporary path next to path; once the block has written it, it is renamed over path, so that
    a killed process or a concurrent reader never sees a half-written file. When writing fails with an
    OSError, path is left as it was and a one-line GunnError says so, with the free space the file needs
    (size: its approximate bytes, when known)."""
    tmp = temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        cause = _os_error(e)
        if cause is None:
            raise
        raise GunnError(_write_failure(path, cause, size)) from None
    finally:
        with contextlib.suppress(OSError):  # gone after the rename; what cannot be removed is at the next start
            os.unlink(tmp)
    _sync_folder(path)


def save_atomic(obj, path):
    """torch.save through a temporary file, fsynced, then renamed over path (see replacing)."""
    with replacing(path, payload_bytes(obj)) as tmp:
        with open(tmp, 'xb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())


def payload_bytes(obj):
    """About the size torch.save gives obj: its tensors' storages, each counted once, and room for the rest."""
    storages = {}

    def visit(x):
        if isinstance(x, torch.Tensor):
            storage = x.untyped_storage()
            storages[(storage.device, storage.data_ptr())] = storage.nbytes()
        elif isinstance(x, dict):
            for v in x.values():
                visit(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                visit(v)

    visit(obj)
    return sum(storages.values()) + 1024 * len(storages) + 65536


def _os_error(e):
    """The OSError behind e (itself, or what it was raised from or during), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _megabytes(n):
    return f'{n / 1e6:.1f} MB'


def _write_failure(path, error, size):
    name, folder = os.path.basename(path), os.path.dirname(path) or '.'
    kept = f'the previous {name} is intact' if os.path.isfile(path) else f'there was no previous {name}'
    message = f'cannot write {path} ({error.strerror or error}); {kept}'
    if size is not None:
        try:
            free = f' ({_megabytes(shutil.disk_usage(folder).free)} free now)'
        except OSError:
            free = ''
        message += f'; it needs about {_megabytes(size)} of free space in {folder}{free}'
    return message


def _sync_folder(path):
    """fsync the folder, so that the rename itself survives a power cut (where the file system allows)."""
    with contextlib.suppress(OSError):
        folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def require_file(path, what):
    """A one-line GunnError unless path is an existing file (a folder in its place is named as such)."""
    if os.path.isdir(path):
        raise GunnError(f'{path} is a folder, not a {what}')
    if not os.path.isfile(path):
        raise GunnError(f'{what} not found: {path}')


# how torch.save files begin: a zip archive, or (before torch 1.6) a pickled magic number
TORCH_SAVE_STARTS = (b'PK\x03\x04', b'\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19')


def load(path, what, hint=''):
    """torch.load(weights_only=True) on the CPU; a missing, unreadable, unsafe or inconsistent file is a
    one-line GunnError."""
    require_file(path, what)
    try:
        with open(path, 'rb') as f:
            start = f.read(max(map(len, TORCH_SAVE_STARTS)))
    except OSError as e:
        raise GunnError(f'cannot read {what} {path}: {e.strerror}') from None
    if not start.startswith(TORCH_SAVE_STARTS):
        if start.startswith(b'\x80'):  # the PROTO opcode: a pickle, which is never unpickled here
            raise GunnError(f'{what} {path} is a pickle, not a file written by torch.save; refused for safety{hint}')
        raise GunnError(f'{path} is not a {what} (not a file written by torch.save){hint}')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch's notes on pickle protocols are no news for the user
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _refused_by_safe_loader(str(e))
        if refused is None:
            raise GunnError(_unreadable(path, what, e, hint)) from None
        raise GunnError(f'{what} {path} {refused}; refused for safety{hint}') from None
    except MemoryError:
        raise  # torch.load allocates what the file holds: not a refusal, a bug
    except Exception as e:  # torch.load fails in many ways on foreign or damaged files: all mean the same here
        raise GunnError(_unreadable(path, what, e, hint)) from None
    _check_views(obj, f'{what} {path}')
    return obj


def _check_views(obj, source, name='file'):
    """torch.load refuses a view outside its storage, but takes one with more elements than the storage
    (stride 0, overlapping rows): a crafted file could then make any later copy as large as it likes. No file
    of this project holds such a view."""
    if isinstance(obj, torch.Tensor):
        if obj.numel() * obj.element_size() > obj.untyped_storage().nbytes():
            raise GunnError(f'{source} is damaged: tensor {name} has more elements ({obj.numel()}) than its storage')
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _check_views(value, source, f'{name}[{key!r}]')
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_views(value, source, f'{name}[{i}]')


def _refused_by_safe_loader(message):
    """What the weights_only unpickler refused, from its message (which also suggests weights_only=False,
    advice a user must not follow for a file of unknown origin), or None for another pickle error."""
    if not message.startswith('Weights only load failed'):
        return None
    found = re.search(r'GLOBAL ([\w.]+)', message)
    if found:
        return f'holds objects other than tensors ({found.group(1)})'
    found = re.search(r'Unsupported operand (\d+)', message)
    return 'is a pickle that the safe loader does not read' + (f' (opcode {found.group(1)})' if found else '')


def _unreadable(path, what, e, hint):
    reason = (str(e).splitlines() or [type(e).__name__])[0]
    return f'cannot read {what} {path}: truncated or not a {what} ({reason}){hint}'
