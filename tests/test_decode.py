"""Image files to float tensors as the Lua's image.load(path, 3, 'float') (datasets/decode.py); the golden
files of the Lua are compared in test_parity_data."""
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from helpers import ROOT
from PIL import Image

from datasets.decode import load_image
from support.errors import GunnError

UNIT8, UNIT16 = torch.tensor(1 / 255), torch.tensor(1 / 65535)


def png16(path, samples):
    """A 16-bit PNG (grey [H, W] or RGB [H, W, 3] uint16), which Pillow cannot write for RGB."""
    height, width = samples.shape[:2]
    colour = 2 if samples.ndim == 3 else 0
    rows = b''.join(b'\0' + row.astype('>u2').tobytes() for row in samples)

    def chunk(tag, data):
        return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 16, colour, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))
    return path


def chw(samples):
    return torch.from_numpy(samples.astype(np.int64)).permute(2, 0, 1)


def test_16_bit_pngs_keep_all_their_bits(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    assert torch.equal(load_image(png16(tmp_path / 'rgb.png', rgb)), chw(rgb).float() * UNIT16)
    grey = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
    out = load_image(png16(tmp_path / 'grey.png', grey))
    assert out.shape == (3, 5, 7) and torch.equal(out, chw(np.stack([grey] * 3, -1)).float() * UNIT16)
    assert 0 < out.min() and out.max() < 1  # not the all-white image Pillow's convert('RGB') made of it


def test_bytes_become_floats_with_the_luas_rounding(tmp_path):
    every_byte = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(np.stack([every_byte] * 3, -1)).save(tmp_path / 'all.png')
    out = load_image(tmp_path / 'all.png')[0].flatten()
    assert torch.equal(out, torch.arange(256).float() * UNIT8)  # a float32 multiplication, as img:mul(1/255)
    assert not torch.equal(out, torch.arange(256).float() / 255)  # a division differs in the last bit


@pytest.mark.parametrize('mode, extra', [('CMYK', {}), ('P', {'transparency': 3}), ('LA', {}), ('RGBA', {})])
def test_where_the_lua_fails_the_picture_is_decoded_properly(tmp_path, mode, extra):
    """CMYK JPEG (the Lua returns inverted C, M, Y), palette PNG with a transparent colour (garbled in the
    Lua), grey+alpha PNG (the Lua raises): RGB as Pillow converts it, alpha dropped as for RGBA."""
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / ('a.jpg' if mode == 'CMYK' else 'a.png')
    img.save(path, **extra)
    with Image.open(path) as reread:
        expected = chw(np.asarray(reread.convert('RGB'))).float() * UNIT8
    assert torch.equal(load_image(path), expected)


def test_other_formats_go_through_pillow(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    for name in ('a.ppm', 'a.bmp'):
        Image.fromarray(pixels).save(tmp_path / name)
        assert torch.equal(load_image(tmp_path / name), chw(pixels).float() * UNIT8)


def test_unreadable_files_give_one_line_errors(tmp_path):
    jpeg = tmp_path / 'ok.jpg'
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg)
    cases = {'empty.jpg': b'', 'garbage.jpg': b'\xff\xd8\xff not really', 'cut.jpg': jpeg.read_bytes()[:200],
             'notes.png': b'hello', 'bad.png': b'\x89PNG broken'}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    for name in [*cases, 'missing.png', '.']:
        with pytest.raises(GunnError, match='cannot read image') as error:
            load_image(tmp_path / name)
        assert '\n' not in str(error.value) and 'BytesIO' not in str(error.value) and '.cpp' not in str(error.value)


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_the_exif_orientation_is_not_applied(tmp_path, fmt):
    """image.load ignores the EXIF orientation tag; the decoder turns the picture by it, and is undone."""
    pixels = np.random.default_rng(4).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f'{orientation}.img'
        Image.fromarray(pixels).save(path, fmt, exif=exif.tobytes(), quality=100, subsampling=0)
        with Image.open(path) as img:  # Pillow leaves the orientation to the caller
            unturned = chw(np.asarray(img.convert('RGB'))).float() * UNIT8
        assert torch.equal(load_image(path), unturned), orientation


def bomb(path, side):
    """A PNG whose header states side x side pixels; its data is a few bytes (only the header may be read)."""
    rows = zlib.compress(b'\0' * (side * 3 + 1))

    def chunk(tag, data):
        return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 2, 0, 0, 0))
                     + chunk(b'IDAT', rows) + chunk(b'IEND', b''))
    return path


def test_reads_are_bounded(tmp_path):
    """A FIFO (which would wait for a writer forever), a device (which never ends), a huge file and a
    decompression bomb are each one line naming the file, at once."""
    os.mkfifo(tmp_path / 'fifo.jpg')
    os.symlink('/dev/zero', tmp_path / 'zero.jpg')
    with open(tmp_path / 'huge.jpg', 'wb') as f:  # sparse: no disk space used
        f.truncate(300 * 2**20)
    cases = {'fifo.jpg': 'not a regular file (a FIFO)', 'zero.jpg': 'not a regular file (a character device)',
             'huge.jpg': 'larger than 256 MB', bomb(tmp_path / 'bomb.png', 10000).name:
             '10000x10000 pixels, more than 89478485'}
    for name, reason in cases.items():
        with pytest.raises(GunnError) as error:
            load_image(tmp_path / name)
        assert str(error.value) == f'cannot read image {tmp_path / name}: {reason}'


def test_decoding_warns_of_nothing_deprecated(tmp_path):
    """The next deprecation of a decoding API is seen here, not in a user's run: a fresh process (import-time
    warnings count) decodes a JPEG, a PNG and a 16-bit PNG with deprecation warnings as errors."""
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'a.jpg')
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'a.png')
    png16(tmp_path / 'b.png', np.zeros((4, 4, 3), np.uint16))
    code = ('import sys; from datasets.decode import load_image; '
            '[load_image(p) for p in sys.argv[1:]]')
    result = subprocess.run([sys.executable, '-W', 'error::DeprecationWarning', '-W', 'error::PendingDeprecationWarning',
                             '-W', 'error::FutureWarning', '-c', code, *(str(tmp_path / n) for n in ('a.jpg', 'a.png', 'b.png'))],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
