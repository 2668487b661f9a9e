"""Image files to RGB float CHW tensors, as the Lua's image.load(path, 3, 'float').

image.load picks its decoder from the file's first bytes, so a JPEG named .png loads as a JPEG. JPEG and
PNG files are decoded here by torchvision.io, which keeps all 16 bits of 16-bit PNG samples; anything else
(PPM, BMP, ...) goes through Pillow at 8 bits per sample. Samples become floats the way the Lua converts
them: multiplied by float32(1/255) (float32(1/65535) for 16-bit samples), which differs from a division
by 255 in the last bit for about half of the byte values. Grey images are replicated to three channels,
and alpha channels are dropped without compositing, as todepth(3) does.

Where image.load has a bug, the picture is decoded properly instead: a CMYK JPEG becomes RGB (the Lua
returns the raw inverted C, M, Y channels), a palette PNG with a transparent colour gives its palette
colours (the Lua reads it with the wrong stride), and a grey+alpha PNG loads (the Lua raises).
"""
import io
import re

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image

from support.errors import GunnError

# first bytes of the files decoded by torchvision.io (JPEG, PNG); the others go through Pillow
TORCHVISION_FORMATS = (b'\xff\xd8\xff', b'\x89PNG')
_UNIT = {torch.uint8: torch.tensor(1 / 255, dtype=torch.float32),
         torch.uint16: torch.tensor(1 / 65535, dtype=torch.float32)}


def _one_line(error):
    # torchvision prefixes its messages with the C++ function and source location
    return re.sub(r'^\w+, \S+:\d+, ', '', ' '.join(str(error).split()))


def _decode_with_pillow(data):
    with Image.open(io.BytesIO(data)) as img:
        return torch.from_numpy(np.array(img.convert('RGB'))).permute(2, 0, 1)


def load_image(path):
    """float32 [3, H, W] with the values image.load gives, k * float32(1/255) (or k * float32(1/65535)).
    The memory stays pixel-interleaved as the decoders write it (a [3, H, W] view of [H, W, 3]): every
    transform takes any layout, and the resize reads this one directly."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise GunnError(f'cannot read image {path}: {e.strerror}') from None
    try:
        if data.startswith(TORCHVISION_FORMATS):
            samples = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        else:
            samples = _decode_with_pillow(data)
    except UnidentifiedImageError:
        raise GunnError(f'cannot read image {path}: not an image file of a known format') from None
    except (RuntimeError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise GunnError(f'cannot read image {path}: {_one_line(e)}') from None
    # one multiplication per sample, in float32, as the Lua's img:mul(1/MAXVAL) on a FloatTensor (converted
    # first and multiplied in place: one fresh tensor instead of two)
    return samples.to(torch.float32).mul_(_UNIT[samples.dtype])
