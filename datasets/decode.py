"""Image files to RGB float CHW tensors, as the Lua's image.load(path, 3, 'float').

image.load picks its decoder from the file's first bytes, so a JPEG named .png loads as a JPEG. JPEG and
PNG files are decoded by TorchCodec (the successor of torchvision.io's decoders, with the same libjpeg-turbo
and libpng results, and as fast), which keeps all 16 bits of 16-bit PNG samples; anything else (PPM, BMP,
...) goes through Pillow at 8 bits per sample. Samples become floats the way the Lua converts them:
multiplied by float32(1/255) (float32(1/65535) for 16-bit samples), which differs from a division by 255 in
the last bit for about half of the byte values. Grey images are replicated to three channels, and alpha
channels are dropped without compositing, as todepth(3) does. TorchCodec turns a picture as its EXIF
orientation tag says; image.load does not, so the turn is undone.

Where image.load has a bug, the picture is decoded properly instead: a CMYK JPEG becomes RGB (the Lua
returns the raw inverted C, M, Y channels), a palette PNG with a transparent colour gives its palette
colours (the Lua reads it with the wrong stride), and a grey+alpha PNG loads (the Lua raises).

A file is read only if it is a regular file (after following links: a FIFO or a device would block or never
end) of at most MAX_FILE_BYTES, and decoded only if its header states at most MAX_PIXELS pixels.
"""
import io
import os
import re
import stat
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from support import optional
from support.errors import GunnError

# first bytes of the files decoded by TorchCodec (JPEG, PNG); the others go through Pillow
TORCHCODEC_FORMATS = (b'\xff\xd8\xff', b'\x89PNG')
MAX_FILE_BYTES = 256 * 2**20  # 20 times the largest ImageNet JPEG
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's own limit against decompression bombs (89 megapixels)
_UNIT = {torch.uint8: torch.tensor(1 / 255, dtype=torch.float32),
         torch.uint16: torch.tensor(1 / 65535, dtype=torch.float32)}
_EXIF_ORIENTATION = 0x0112
# what undoes each EXIF orientation (2..8) on a CHW tensor, i.e. the inverse of what a decoder applies
_UNTURN = {2: lambda x: x.flip(2), 3: lambda x: x.flip(1, 2), 4: lambda x: x.flip(1),
           5: lambda x: x.transpose(1, 2), 6: lambda x: x.transpose(1, 2).flip(1),
           7: lambda x: x.flip(1, 2).transpose(1, 2), 8: lambda x: x.transpose(1, 2).flip(2)}


def _one_line(error):
    # decoders prefix their messages with the C++ function and source location
    return re.sub(r'^\w+, \S+:\d+, ', '', ' '.join(str(error).split()))


def read_bytes(path, what='image'):
    """The bytes of a regular file of at most MAX_FILE_BYTES (a one-line GunnError naming the file else)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once, without a writer
    except OSError as e:
        raise GunnError(f'cannot read {what} {path}: {e.strerror}') from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise GunnError(f'cannot read {what} {path}: not a regular file ({file_kind(status.st_mode)})')
        if status.st_size > MAX_FILE_BYTES:
            raise GunnError(f'cannot read {what} {path}: larger than {MAX_FILE_BYTES // 2**20} MB')
        data = os.read(fd, status.st_size)  # one read of a regular file gets all of it
        if len(data) != status.st_size or os.read(fd, 1):
            raise GunnError(f'cannot read {what} {path}: it changed while it was read')
        return data
    except OSError as e:
        raise GunnError(f'cannot read {what} {path}: {e.strerror}') from None
    finally:
        os.close(fd)


def file_kind(mode):
    kinds = ((stat.S_ISDIR, 'a folder'), (stat.S_ISFIFO, 'a FIFO'), (stat.S_ISCHR, 'a character device'),
             (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket'))
    return next((name for test, name in kinds if test(mode)), 'not a regular file')


def _decode_with_torchcodec(data, orientation):
    decoders = optional.require('torchcodec.decoders', 'decoding JPEG and PNG images', 'torchcodec')
    samples = decoders.decode_image(data, mode='RGB', output_dtype='auto')
    return _UNTURN[orientation](samples) if orientation in _UNTURN else samples


def load_image(path):
    """float32 [3, H, W] with the values image.load gives, k * float32(1/255) (or k * float32(1/65535)).
    The memory stays pixel-interleaved as the decoders write it (a [3, H, W] view of [H, W, 3]): every
    transform takes any layout, and the resize reads this one directly."""
    data = read_bytes(path)
    try:
        with warnings.catch_warnings():  # Pillow's decompression-bomb warning: the size is checked below
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # the header only
        with img:
            if img.width * img.height > MAX_PIXELS:
                raise GunnError(f'cannot read image {path}: {img.width}x{img.height} pixels, more than {MAX_PIXELS}')
            if data.startswith(TORCHCODEC_FORMATS):
                samples = _decode_with_torchcodec(data, img.getexif().get(_EXIF_ORIENTATION, 1))
            else:
                samples = torch.from_numpy(np.array(img.convert('RGB'))).permute(2, 0, 1)
    except UnidentifiedImageError:
        raise GunnError(f'cannot read image {path}: not an image file of a known format') from None
    except (RuntimeError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise GunnError(f'cannot read image {path}: {_one_line(e)}') from None
    # one multiplication per sample, in float32, as the Lua's img:mul(1/MAXVAL) on a FloatTensor (converted
    # first and multiplied in place: one fresh tensor instead of two)
    return samples.to(torch.float32).mul_(_UNIT[samples.dtype])
