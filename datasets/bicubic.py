"""image.scale(img, width, height, 'bicubic') of torch/image (generic/image.c), in two implementations.

The C resizes the rows of every channel first, then the columns, each with scaleCubic_rowcol: destination
sample d < m-1 of a line of n samples sits at position d * float32((n-1)/(m-1)), computed in float32; with
i its integer part and x the fraction, the taps p0..p3 are the samples i-1..i+2 (the one beyond either end
extrapolated linearly: 2*p1 - p2, 2*p2 - p1) and the value is Catmull-Rom

    a1 = p2 - p0,  a2 = 2*p0 - 5*p1 + 4*p2 - p3,  a3 = 3*(p1 - p2) + p3 - p0       (float32)
    p1 + 0.5 * x * (a1 + x * (a2 + x * a3))                                          (last step in double)

rounded once to float32; the last sample copies the last source sample. There is no antialiasing.

``scale_reference`` is that recipe written out directly, one expression per pass. ``scale`` computes the
same numbers bit for bit, faster: the positions are computed once per (n, m) pair, each pass gathers
whole rows of taps with the resized axis outermost (so every operation runs over contiguous memory), and
the scratch tensors are kept from call to call (tests/test_bicubic.py holds the two together).
"""
import functools
import math
import threading

import torch


def _fractional_positions(n, m):
    """(integer part int64 [m-1], fraction float32 [m-1]) of the m-1 interpolated positions, as the C."""
    step = torch.tensor((n - 1) / max(m - 1, 1), dtype=torch.float32)
    pos = torch.arange(m - 1, dtype=torch.float32) * step
    whole = pos.long()
    return whole, pos - whole


def destination_size(width, height):
    """The size image.scale allocates: fractional lengths truncated toward zero, at least 1."""
    return max(int(width), 1), max(int(height), 1)


def _cubic_resize_last(x, length):
    """One pass of the reference: resizes the last axis of x to length samples."""
    n = x.shape[-1]
    if length == n:
        return x.clone()
    if n == 1:
        # The C leaves the last sample of a one-sample source unwritten (uninitialised memory); it is the
        # same sample here, like all the others.
        return x.expand(*x.shape[:-1], length).clone()
    i1, frac = _fractional_positions(n, length)
    frac = frac.to(x.dtype)
    p1 = x[..., i1]
    p2 = x[..., (i1 + 1).clamp(max=n - 1)]
    p0 = torch.where(i1 > 0, x[..., (i1 - 1).clamp(min=0)], 2 * p1 - p2)
    p3 = torch.where(i1 + 2 < n, x[..., (i1 + 2).clamp(max=n - 1)], 2 * p2 - p1)
    a1 = p2 - p0
    a2 = 2 * p0 - 5 * p1 + 4 * p2 - p3
    a3 = 3 * (p1 - p2) + p3 - p0
    inner = a1 + frac * (a2 + frac * a3)
    # The C finishes in double (0.5 is a double literal) and rounds once to the tensor type.
    value = (p1.double() + 0.5 * frac.double() * inner.double()).to(x.dtype)
    return torch.cat([value, x[..., -1:]], dim=-1)


def _checked_box(box, width, height):
    x1, y1, x2, y2 = box or (0, 0, width, height)
    if not (0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height):
        raise ValueError(f'box {box} outside a {width}x{height} image')
    return x1, y1, x2, y2


def scale_reference(img, width, height, box=None):
    """image.scale(img, width, height, 'bicubic'), the readable port: fractional sizes are truncated
    toward zero (the C destination is allocated with them), rows are resized first, then columns.
    box=(x1, y1, x2, y2): only that part of the result, [..., y1:y2, x1:x2]."""
    width, height = destination_size(width, height)
    x1, y1, x2, y2 = _checked_box(box, width, height)
    rows = _cubic_resize_last(img, width)
    out = _cubic_resize_last(rows.transpose(-1, -2), height).transpose(-1, -2)
    return out[..., y1:y2, x1:x2].contiguous()


@functools.lru_cache(maxsize=1024)
def _taps(n, m, first, count):
    """What a pass from n to m samples (n >= 2, m != n) needs to compute the samples first ..
    first+count-1 of the result, computed once per size pair and window: the source rows of the taps p0,
    p1, p2, p3 of each interpolated sample among them, back to back (clamped into the source), their
    fractions (float32 [k, 1]) and half fractions (float64), and how many leading samples extrapolate p0
    and from which sample on p3 is extrapolated."""
    i1, frac = _fractional_positions(n, m)
    i1, frac = i1[first:first + count], frac[first:first + count]
    rows = torch.cat([i1 - 1, i1, i1 + 1, i1 + 2]).clamp(0, n - 1)
    head, tail = int((i1 == 0).sum()), int((i1 + 2 < n).sum())
    return rows, frac.view(-1, 1), (0.5 * frac.double()).view(-1, 1), head, tail


class _Scratch(threading.local):
    """Scratch tensors of ``scale``, reused from call to call (per thread): allocating a few fresh
    megabytes per image costs more in page faults than the arithmetic does. Requests above LIMIT
    elements are served fresh and not kept, so that one huge image does not pin its memory."""

    LIMIT = 1 << 22  # 16 MB of float32: every buffer of a 640x480 image stays below it

    def __init__(self):
        self.buffers = {}

    def take(self, name, shape, dtype=torch.float32):
        count = math.prod(shape)
        if count > self.LIMIT:
            return torch.empty(shape, dtype=dtype)
        buffer = self.buffers.get((name, dtype))
        if buffer is None or buffer.numel() < count:
            buffer = self.buffers[(name, dtype)] = torch.empty(count, dtype=dtype)
        return buffer[:count].view(shape)


_scratch = _Scratch()


def _resize_middle(src, out, m, first=0):
    """Samples first .. first+count-1 of the middle axis of src [B, n, L] (float32, contiguous) resized
    to m samples, into out [B, count, L]: the recipe of ``_cubic_resize_last`` with whole rows as samples."""
    batch, n, width = src.shape
    if n == m:
        return out.copy_(src[:, first:first + out.shape[1]])
    if n == 1:
        return out.copy_(src.expand_as(out))
    rows, frac, half, head, tail = _taps(n, m, first, out.shape[1])
    k = frac.shape[0]
    if k < out.shape[1]:  # the window holds the last sample, a copy of the last source sample
        out[:, k].copy_(src[:, n - 1])
    if k == 0:
        return out
    taps = torch.index_select(src, 1, rows, out=_scratch.take('taps', (batch, 4 * k, width)))
    p0, p1, p2, p3 = taps.split(k, dim=1)
    # the neighbour beyond either end, extrapolated linearly
    torch.mul(p1[:, :head], 2, out=p0[:, :head]).sub_(p2[:, :head])
    torch.mul(p2[:, tail:], 2, out=p3[:, tail:]).sub_(p1[:, tail:])
    # a2 and a3 in the C's order of operations; the factors 2 and 4 are exact, so alpha= cannot round
    a2 = torch.mul(p1, -5, out=_scratch.take('a2', p1.shape)).add_(p0, alpha=2).add_(p2, alpha=4).sub_(p3)
    inner = torch.sub(p1, p2, out=_scratch.take('inner', p1.shape)).mul_(3).add_(p3).sub_(p0)
    inner.mul_(frac).add_(a2).mul_(frac).add_(p2.sub_(p0))
    # p1 + half * inner in double: the product of two floats is exact there, so a fused multiply-add
    # gives the same double as the C's multiply then add
    value = _scratch.take('value', p1.shape, torch.float64).copy_(inner)
    torch.addcmul(_scratch.take('p1', p1.shape, torch.float64).copy_(p1), value, half, out=value)
    out[:, :k].copy_(value)
    return out


def scale(img, width, height, box=None):
    """``scale_reference`` computed faster, with the same result (the fast path is for float32, the type
    of the Lua's images; other types take the reference). With a box, only the pixels in it are computed."""
    if img.dtype != torch.float32:
        return scale_reference(img, width, height, box)
    width, height = destination_size(width, height)
    x1, y1, x2, y2 = _checked_box(box, width, height)
    *lead, h, w = img.shape
    planes = math.prod(lead)
    # Rows first, with the width axis outermost, [W, planes*H], so that each tap is a whole row. The
    # transposed copies are 2-D, which ATen does cache-blocked; a [3, H, W] view of pixel-interleaved
    # [H, W, 3] memory (what the decoder gives) is read as [H, W*3], giving [W, 3*H] in one transpose.
    src = _scratch.take('src', (1, w, planes * h))
    if img.dim() == 3 and img.permute(1, 2, 0).is_contiguous():
        src.view(w * planes, h).copy_(img.permute(1, 2, 0).reshape(h, w * planes).t())
    else:
        src[0].copy_(img.reshape(planes * h, w).t())
    rows = _resize_middle(src, _scratch.take('rows', (1, x2 - x1, planes * h)), width, x1)
    # then columns: back to [planes, H, x2-x1], the height axis in the middle
    src = _scratch.take('src', (planes, h, x2 - x1))
    src.view(planes * h, x2 - x1).copy_(rows[0].t())
    out = torch.empty(planes, y2 - y1, x2 - x1)
    return _resize_middle(src, out, height, y1).view(*lead, y2 - y1, x2 - x1)
