"""Reading Torch7's binary serialisation (what torch.save of the Lua code writes) without trusting the file.

torchfile does the parsing; it is imported on first use, so that only reading a .t7 file needs it. Its
own storage reader trusts the element count a file states (np.fromfile allocates it first) and its tensor
reader views any size, stride and offset over the storage (np.lib.stride_tricks.as_strided), so a crafted
file reads the process's memory or crashes it. Here, through torchfile's extension point (its table of
type handlers), a storage is read only if the file holds all of its bytes, and a tensor is kept as a
``TensorView`` (storage, sizes, strides, offset), made into an array only by ``TensorView.array``, which first
checks that the view stays inside its storage and names the tensor when it does not.
"""
import math
import os

import numpy as np

from support import optional
from support.errors import GunnError

# Torch7's tensor types and the numpy types of their elements (CUDA types are saved with the same layout)
ELEMENTS = {'Byte': np.uint8, 'Char': np.int8, 'Short': np.int16, 'Int': np.int32, 'Long': np.int64,
            'Float': np.float32, 'Double': np.float64}
CUDA_NAMES = {'Byte': 'CudaByte', 'Char': 'CudaChar', 'Short': 'CudaShort', 'Int': 'CudaInt', 'Long': 'CudaLong',
              'Float': 'Cuda', 'Double': 'CudaDouble'}
MAX_DIMS = 64  # far more than any network uses; bounds what a crafted header makes the reader allocate


class DamagedFile(GunnError):
    """A tensor of the file cannot be made: no guessing or fallback may take such a file."""


class FormatError(Exception):
    """What is wrong with a file, in words (load turns it into a GunnError naming the file)."""


class TensorView:
    """A tensor of the file, not yet made: its element type, storage (a 1-D array, or None when the tensor
    is empty), sizes, strides (in elements) and 0-based storage offset, as the file states them."""

    def __init__(self, dtype, storage, sizes, strides, offset, file_bytes):
        self.dtype, self.storage, self.file_bytes = dtype, storage, file_bytes
        self.sizes, self.strides, self.offset = tuple(sizes), tuple(strides), offset

    @property
    def shape(self):
        return (0,) if self.storage is None else self.sizes

    def problem(self):
        """Why the view cannot be made (None when it can): a negative size, stride or offset, an element
        outside the storage, or more elements than the file has bytes."""
        if self.storage is None:
            return None
        if any(n < 0 for n in self.sizes) or any(s < 0 for s in self.strides) or self.offset < 0:
            return f'negative size, stride or offset (sizes {self.sizes}, strides {self.strides}, offset {self.offset})'
        count = math.prod(self.sizes)
        if count == 0:
            return None
        last = self.offset + sum((n - 1) * s for n, s in zip(self.sizes, self.strides))
        if last >= len(self.storage):
            return (f'its view (sizes {self.sizes}, strides {self.strides}, offset {self.offset}) reaches element '
                    f'{last} of a storage of {len(self.storage)}')
        if count * self.storage.itemsize > self.file_bytes:
            return f'its {count} elements are more than the file holds ({self.file_bytes} bytes)'
        return None

    def array(self, name, source):
        """The tensor as a read-only numpy array; a GunnError naming it (``name`` in ``source``) if its view
        does not fit its storage."""
        problem = self.problem()
        if problem:
            raise DamagedFile(f'{source}: tensor {name} is damaged: {problem}')
        if self.storage is None:
            return np.empty(0, self.dtype)
        if math.prod(self.sizes) == 0:
            return np.empty(self.sizes, self.dtype)
        itemsize = self.storage.itemsize
        return np.lib.stride_tricks.as_strided(self.storage[self.offset:], self.sizes,
                                               [s * itemsize for s in self.strides], writeable=False)


class _BoundedFile:
    """The file as torchfile reads it, where no read asks for more than the bytes left: a stated length
    (of a string, a function, an array) never makes Python allocate more than the file holds."""

    def __init__(self, f):
        self.f, self.size = f, os.fstat(f.fileno()).st_size

    def left(self):
        return self.size - self.f.tell()

    def read(self, n=-1):
        return self.f.read(self.left() if n < 0 else min(n, self.left()))

    def tell(self):
        return self.f.tell()


def _storage_reader(dtype):
    def read(reader, version):
        count = reader.read_long()
        nbytes = count * np.dtype(dtype).itemsize
        if count < 0 or nbytes > reader.f.left():
            raise FormatError(f'a storage of {count} elements, but the file ends before them')
        return np.frombuffer(reader.f.read(nbytes), dtype)
    return read


def _tensor_reader(dtype):
    def read(reader, version):
        dims = reader.read_int()
        if not 0 <= dims <= MAX_DIMS:
            raise FormatError(f'a tensor of {dims} dimensions')
        sizes, strides = reader.read_long_array(dims), reader.read_long_array(dims)
        offset = reader.read_long() - 1  # 1-based in the file
        storage = reader.read_obj()
        if storage is None or dims == 0:
            storage = None
        elif not (isinstance(storage, np.ndarray) and storage.dtype == dtype):
            raise FormatError(f'a {np.dtype(dtype).name} tensor over a storage of another type')
        return TensorView(dtype, storage, sizes, strides, offset, reader.f.size)
    return read


def _torchfile():
    """torchfile, with the readers above in place of its own (registered once, on first use)."""
    torchfile = optional.require('torchfile', 'reading Torch7 (.t7) files')
    if not getattr(torchfile, 'gunn_checked', False):
        for kind, dtype in ELEMENTS.items():
            for name in (kind, CUDA_NAMES[kind]):
                torchfile.type_handlers[f'torch.{name}Tensor'.encode()] = _tensor_reader(dtype)
                torchfile.type_handlers[f'torch.{name}Storage'.encode()] = _storage_reader(dtype)
        torchfile.gunn_checked = True
    return torchfile


def load(path):
    """The object a Torch7 file holds: Lua tables as dicts (lists with keys 1..n), Torch classes as
    torchfile.TorchObject, tensors as TensorView. A damaged or foreign file is a one-line GunnError."""
    torchfile = _torchfile()
    try:
        with open(path, 'rb') as f:
            # Without the list heuristic, Lua lists holding tensors (GunnLayer.inputTable) load under numpy 2;
            # every Lua table then comes back as a dict, lists with keys 1..n.
            return torchfile.T7Reader(_BoundedFile(f), use_list_heuristic=False).read_obj()
    except MemoryError:
        raise  # nothing here may allocate more than the file holds: not a refusal, a bug
    except Exception as e:  # a damaged file fails inside struct, array or torchfile with many exception types
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise GunnError(f'cannot read Torch7 file {path}: truncated or not a Torch7 file ({reason})') from None


def is_module(obj):
    return type(obj).__name__ == 'TorchObject'
