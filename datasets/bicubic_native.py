"""datasets/bicubic.c, built with the machine's C compiler (``$CC``, else ``cc``) and loaded with ctypes.

The library is built once per machine and source, into ``$XDG_CACHE_HOME/gunn`` (``~/.cache/gunn``), under
a name that hashes the source, the compiler, the flags and the machine type. It is written to a temporary
file and renamed into place, so that loader workers building at the same moment never load each other's
half-written files. Where there is no compiler, or the cache folder is not writable, ``library()`` says
why, and datasets/bicubic.py runs the same arithmetic as torch operations instead (same numbers, slower).
"""
import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'bicubic.c')
# -ffp-contract=off: no fused multiply-adds, which would round differently from the Lua's C
FLAGS = ('-O3', '-shared', '-fPIC', '-ffp-contract=off')

_POINTER, _INT = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    'gunn_cubic_pass': [_POINTER, _INT, _INT, _INT, _POINTER, _POINTER, _INT, _INT, _INT, _POINTER, _INT],
    'gunn_transpose': [_POINTER, _INT, _INT, _INT, _INT, _POINTER, _INT],
}


class BuildError(Exception):
    pass


def cache_folder():
    return os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'gunn')


def _compiler():
    command = shlex.split(os.environ.get('CC') or 'cc')
    if not command or shutil.which(command[0]) is None:
        raise BuildError(f'no C compiler found ({" ".join(command) or "CC is empty"})')
    return command


def _build(compiler, path):
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=folder, prefix='.building-', suffix='.so')
    except OSError as e:
        raise BuildError(f'cannot write to {folder}: {e.strerror}') from None
    os.close(fd)
    try:
        result = subprocess.run([*compiler, *FLAGS, '-o', partial, SOURCE], capture_output=True, text=True)
        if result.returncode != 0:
            first_line = (result.stderr.strip().splitlines() or ['no message'])[0]
            raise BuildError(f'{" ".join(compiler)} failed on {SOURCE}: {first_line}')
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def library_path(compiler):
    with open(SOURCE, 'rb') as f:
        source = f.read()
    key = hashlib.sha256(b'\0'.join([source, ' '.join([*compiler, *FLAGS]).encode(), platform.machine().encode()]))
    return os.path.join(cache_folder(), f'bicubic-{key.hexdigest()[:16]}.so')


@functools.cache
def library():
    """(the loaded library, None), or (None, why it could not be built or loaded)."""
    try:
        compiler = _compiler()
        path = library_path(compiler)
        if not os.path.isfile(path):
            _build(compiler, path)
        lib = ctypes.CDLL(path)
    except (BuildError, OSError) as e:
        return None, str(e)
    for name, argtypes in _SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, None
    return lib, None
