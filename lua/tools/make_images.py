"""The image files of the decode cases (numpy and Pillow): 48x64 pictures, smooth gradients plus noise,
in every format the ImageNet loader may meet, plus a JPEG with an EXIF orientation tag.

    python make_images.py OUTDIR [--seed 2019] [--from-set DIR]

--from-set DIR: files that the transforms case of the golden set in DIR holds are copied from it byte for
byte instead (its decode inputs), so that a regenerated set decodes the very same files. Prints the names.
"""
import argparse
import io
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image

H, W = 48, 64


def picture(rs):
    """uint8 HxWx3: a gradient per channel plus uniform noise."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    base = np.stack([200 * x / (W - 1), 200 * y / (H - 1), 100 + 80 * np.sin((x + y) / 9.0)], axis=-1)
    return np.clip(base + rs.uniform(0, 55, (H, W, 3)), 0, 255).astype(np.uint8)


def png16(array16, color):
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB): filter 0 on every row."""
    h, w = array16.shape[:2]
    raw = b''.join(b'\x00' + array16[r].astype('>u2').tobytes() for r in range(h))

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)
    ihdr = struct.pack('>IIBBBBB', w, h, 16, 2 if color else 0, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw, 9)) + chunk(b'IEND', b'')


def encode(img, fmt, **kw):
    f = io.BytesIO()
    img.save(f, fmt, **kw)
    return f.getvalue()


def exif_orientation(value):
    """A minimal EXIF block (little-endian TIFF) holding only the Orientation tag."""
    ifd = struct.pack('<HHHIHH', 1, 0x0112, 3, 1, value, 0) + struct.pack('<I', 0)
    return b'Exif\x00\x00' + b'II*\x00' + struct.pack('<I', 8) + ifd


def files(seed):
    rs = np.random.RandomState(seed)
    rgb = Image.fromarray(picture(rs))
    gray = rgb.convert('L')
    alpha = Image.fromarray(np.clip(np.mgrid[0:H, 0:W][1] * 4, 0, 255).astype(np.uint8))
    palette = rgb.quantize(16)
    # a real black channel (Pillow's RGB->CMYK conversion leaves K at 0, where the Lua's bug would not show)
    ink = 255 - picture(rs).astype(np.int32)
    k = ink.min(axis=2, keepdims=True) // 2
    cmyk = Image.fromarray(np.concatenate([ink - k, k], axis=2).astype(np.uint8), 'CMYK')
    trns = rgb.quantize(16)
    v16 = picture(rs).astype(np.uint32) * 257
    out = {
        'jpeg_baseline_q90.jpg': encode(rgb, 'JPEG', quality=90),
        'jpeg_progressive.jpg': encode(rgb, 'JPEG', quality=85, progressive=True),
        'jpeg_444.jpg': encode(rgb, 'JPEG', quality=95, subsampling=0),
        'jpeg_gray.jpg': encode(gray, 'JPEG', quality=90),
        'jpeg_cmyk.jpg': encode(cmyk, 'JPEG', quality=90),
        'png_rgb.png': encode(rgb, 'PNG'),
        'png_rgba.png': encode(Image.merge('RGBA', (*rgb.split(), alpha)), 'PNG'),
        'png_gray8.png': encode(gray, 'PNG'),
        'png_palette.png': encode(rgb.quantize(200), 'PNG'),
        'png_palette_trns.png': encode(trns, 'PNG', transparency=3),
        'png_palette_4bit.png': encode(palette, 'PNG', bits=4),
        'png_bilevel.png': encode(gray.point(lambda v: 255 if v > 127 else 0).convert('1'), 'PNG'),
        'png_rgb16.png': png16(np.minimum(v16 + rs.randint(0, 257, v16.shape), 65535), True),
        'png_gray16.png': png16(np.asarray(gray, np.uint32) * 257, False),
        'png_gray_alpha.png': encode(Image.merge('LA', (gray, alpha)), 'PNG'),
        # stored 64 wide and 48 high; Orientation 6 asks viewers to rotate it 90 degrees clockwise
        'jpeg_exif_orientation6.jpg': encode(rgb, 'JPEG', quality=90, exif=exif_orientation(6)),
    }
    out['jpeg_named_png.png'] = out['jpeg_baseline_q90.jpg']
    return out


def from_set(folder):
    """{file name: bytes} of the decode inputs of the transforms case in a golden set folder."""
    path = os.path.join(folder, 'transforms.json')
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        header = json.load(f)
    with open(os.path.join(folder, header['bin_file']), 'rb') as f:
        blob = f.read()
    found = {}
    for case, info in header['meta']['cases'].items():
        if info['kind'] == 'decode':
            spec = header['tensors'][case + '/file']
            found[info['file_name']] = blob[spec['offset']:spec['offset'] + spec['nbytes']]
    return found


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('out')
    p.add_argument('--seed', type=int, default=2019)
    p.add_argument('--from-set', help='copy the decode inputs that this golden set holds')
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    made = files(a.seed)
    if a.from_set:
        made.update(from_set(a.from_set))
    for name, data in sorted(made.items()):
        with open(os.path.join(a.out, name), 'wb') as f:
            f.write(data)
    print(' '.join(sorted(made)))


if __name__ == '__main__':
    main()
