"""image.scale(img, width, height, 'bicubic') of torch/image (generic/image.c), in two implementations.

The C resizes the rows of every channel first, then the columns, each with scaleCubic_rowcol: destination
sample d < m-1 of a line of n samples sits at position d * float32((n-1)/(m-1)), computed in float32; with
i its integer part and x the fraction, the taps p0..p3 are the samples i-1..i+2 (the one beyond either end
extrapolated linearly: 2*p1 - p2, 2*p2 - p1) and the value is Catmull-Rom

    a1 = p2 - p0,  a2 = 2*p0 - 5*p1 + 4*p2 - p3,  a3 = 3*(p1 - p2) + p3 - p0       (float32)
    p1 + 0.5 * x * (a1 + x * (a2 + x * a3))                                          (last step in double)

rounded once to float32; the last sample copies the last source sample. There is no antialiasing.

``scale_reference`` is that recipe written out directly, one expression per pass. ``scale`` computes the
same numbers bit for bit, faster (tests/test_bicubic.py holds the two together): the taps' positions and
fractions are computed once per size pair and window; each pass runs over whole rows of taps with the
resized axis outermost, so that the arithmetic is one loop over contiguous memory; the source is read
where it lies (a crop of the decoder's pixel-interleaved image needs no copy), and only the source pixels
that the result, or its box, depends on; the scratch memory is small and kept from call to call. The
loops are C (datasets/bicubic.c, built on first use by datasets/bicubic_native.py), or, where no C
compiler is at hand, the same arithmetic as torch operations, one per rounding of the C.
"""
import functools
import math
import sys
import threading
from typing import NamedTuple

import torch

from datasets import bicubic_native


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


class _Taps(NamedTuple):
    """What one pass from n to m samples needs to compute the samples first .. first+count-1 of its
    result, computed once per (n, m, first, count): the source samples lo .. hi-1 that it reads, how many
    of the wanted samples are interpolated (k: the window may end with the last sample, a copy of source
    sample n-1), the rows (relative to lo) of their taps p0, p1, p2, p3 back to back, clamped into the
    source, their fractions (float32 [k, 1]) and half fractions (float64 [k, 1]), how many leading
    samples extrapolate p0 and from which sample on p3 is extrapolated."""
    lo: int
    hi: int
    k: int
    rows: torch.Tensor
    frac: torch.Tensor
    half: torch.Tensor
    head: int
    tail: int


@functools.lru_cache(maxsize=1024)
def _taps(n, m, first, count):
    if n == 1:  # every sample repeats the source sample
        return _Taps(0, min(count, 1), 0, None, None, None, 0, 0)
    if n == m or count == 0:  # the source samples themselves
        return _Taps(first, first + count, 0, None, None, None, 0, 0)
    i1, frac = _fractional_positions(n, m)
    i1, frac = i1[first:first + count], frac[first:first + count]
    k = i1.shape[0]
    rows = torch.cat([i1 - 1, i1, i1 + 1, i1 + 2]).clamp(0, n - 1)
    lo = int(rows.min()) if k else n - 1
    hi = n if k < count else int(rows.max()) + 1
    return _Taps(lo, hi, k, rows - lo, frac.view(-1, 1), (0.5 * frac.double()).view(-1, 1),
                 int((i1 == 0).sum()), int((i1 + 2 < n).sum()))


def _as_double(block):
    """The memory of block [B, 2k, L] (float32, contiguous within each of the B) as float64 [B, k, L]."""
    batch, rows, width = block.shape
    flat = block.reshape(-1) if batch == 1 else block.flatten(1)  # (a lone batch's stride may be odd)
    return flat.view(torch.float64).view(batch, rows // 2, width)


class _Workspace(NamedTuple):
    """The scratch of one pass over [B, k, L] interpolated samples: the taps back to back (what
    index_select fills), two float32 temporaries, and the two float64 arrays of the last step, which
    occupy taps and temporaries that are dead by then (p2|p3 and a2|inner)."""
    taps: torch.Tensor
    p0: torch.Tensor
    p1: torch.Tensor
    p2: torch.Tensor
    p3: torch.Tensor
    a2: torch.Tensor
    inner: torch.Tensor
    value: torch.Tensor
    p1d: torch.Tensor
    ends: tuple  # (row, a, b) views: the taps beyond either end of the line, row = 2 * a - b


class _Scratch(threading.local):
    """Scratch tensors of ``scale``, reused from call to call (per thread): allocating a few fresh
    megabytes per image costs more in page faults than the arithmetic does, and a working set that
    stays small and in the same place costs fewer cache misses. Requests above LIMIT elements are served
    fresh and not kept, so that one huge image does not pin its memory. The views handed out are kept
    per shape too (making one costs a microsecond or two, and a resize uses a few dozen)."""

    LIMIT = 1 << 22  # 16 MB of float32: every buffer of a 640x480 image stays below it
    VIEWS = 256

    def __init__(self):
        self.buffers = {}
        self.views = {}

    def _keep(self, key, view):
        if len(self.views) >= self.VIEWS:
            self.views.clear()
        self.views[key] = view
        return view

    def take(self, name, shape):
        """float32 [shape] in the buffer called name."""
        if (name, shape) in self.views:
            return self.views[name, shape]
        count = math.prod(shape)
        if count > self.LIMIT:
            return torch.empty(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < count:
            buffer = self.buffers[name] = torch.empty(count)
            self.views.clear()  # views of the old buffer
        return self._keep((name, shape), buffer[:count].view(shape))

    def workspace(self, batch, k, width, head, tail):
        """The _Workspace of a pass over [batch, k, width] samples whose first head and last k - tail
        samples extrapolate a tap."""
        key = ('workspace', batch, k, width, head, tail)
        if key in self.views:
            return self.views[key]
        shapes = {'taps': (batch, 4 * k, width), 'temps': (batch, 2 * k, width)}
        taps, temps = (self.take(name, shape) for name, shape in shapes.items())
        p0, p1, p2, p3 = taps.view(batch, 4, k, width).unbind(1)
        a2, inner = temps.view(batch, 2, k, width).unbind(1)
        ends = ((p0[:, :head], p1[:, :head], p2[:, :head]),) if head else ()
        ends += ((p3[:, tail:], p2[:, tail:], p1[:, tail:]),) if tail < k else ()
        work = _Workspace(taps, p0, p1, p2, p3, a2, inner, _as_double(taps[:, 2 * k:]), _as_double(temps), ends)
        kept = all(item in self.views for item in shapes.items())  # (kept only when its buffers are)
        return self._keep(key, work) if kept else work


_scratch = _Scratch()
# the constants of the recipe as float32 tensors: a Python number costs a tensor of its own at every call
_TWO, _MINUS_FIVE, _THREE = (torch.tensor(c, dtype=torch.float32) for c in (2.0, -5.0, 3.0))


def _interpolate(src, out, taps, lib):
    """The interpolated rows out[:, :taps.k] of a pass (out [B, count, L], contiguous), in bicubic.c or
    as torch operations: the recipe of ``_cubic_resize_last``, with whole rows of L samples as the samples."""
    batch, rows, width = src.shape
    k = taps.k
    if lib is not None:
        assert src.is_contiguous() and out.is_contiguous() and out.shape[::2] == src.shape[::2]  # (raw pointers)
        lib.gunn_cubic_pass(src.data_ptr(), batch, rows * width, width, taps.rows.data_ptr(), taps.frac.data_ptr(),
                            k, taps.head, taps.tail, out.data_ptr(), out.shape[1] * width)
        return
    work = _scratch.workspace(batch, k, width, taps.head, taps.tail)
    p0, p1, p2, p3, a2, inner = work.p0, work.p1, work.p2, work.p3, work.a2, work.inner
    torch.index_select(src, 1, taps.rows, out=work.taps)
    for row, a, b in work.ends:  # the neighbour beyond either end, extrapolated linearly
        torch.mul(a, _TWO, out=row).sub_(b)
    # a2 and a3 in the C's order of operations; the factors 2 and 4 are exact, so alpha= cannot round
    torch.mul(p1, _MINUS_FIVE, out=a2).add_(p0, alpha=2).add_(p2, alpha=4).sub_(p3)
    torch.sub(p1, p2, out=inner).mul_(_THREE).add_(p3).sub_(p0)
    inner.mul_(taps.frac).add_(a2).mul_(taps.frac).add_(p2.sub_(p0))
    # p1 + half * inner in double: the product of two floats is exact there, so a fused multiply-add
    # gives the same double as the C's multiply then add
    value = work.value.copy_(inner)
    torch.addcmul(work.p1d.copy_(p1), value, taps.half, out=value)
    out[:, :k].copy_(value)


def _resize_middle(src, out, n, taps, lib):
    """One pass of ``scale``: the middle axis of src [B, hi-lo, L] (float32, contiguous; the source
    samples lo .. hi-1 of a line of n) resized as ``taps`` says, into out [B, count, L] (contiguous)."""
    if out.numel() == 0:
        return out
    if taps.k == 0:
        return out.copy_(src.expand_as(out) if n == 1 else src)
    if taps.k < out.shape[1]:  # the window holds the last sample, a copy of the last source sample
        out[:, taps.k].copy_(src[:, -1])
    _interpolate(src, out, taps, lib)
    return out


def _width_outermost(img, out, lib):
    """out [W, P*H] = img [P, H, W] (any strides) transposed. A [3, H, W] view of pixel-interleaved
    [H, W, 3] memory (what the decoder gives, or a crop of it) is read as [H, W*3], giving [W, 3*H] in
    one 2-D transposed copy; planar images plane by plane."""
    planes, h, w = img.shape
    if img.stride(0) == 1 and img.stride(2) == planes:
        _transpose(img.permute(1, 2, 0).reshape(h, w * planes), out.view(w * planes, h), lib)
    else:
        for plane, part in zip(img, out.view(w, planes, h).unbind(1)):
            _transpose(plane, part, lib)


def _transpose(src, dst, lib):
    """dst [n, m] = src [m, n] transposed (src with any strides; dst's rows may be apart)."""
    if lib is None:
        dst.copy_(src.t())
    else:
        assert dst.shape == src.shape[::-1] and dst.stride(1) == 1  # (raw pointers)
        lib.gunn_transpose(src.data_ptr(), *src.shape, *src.stride(), dst.data_ptr(), dst.stride(0))


def _agrees_with_reference(lib):
    """Whether the library gives the reference's numbers on a few small resizes (a compiler that fuses
    multiply-adds despite -ffp-contract=off, or that defaults to fast math, would not)."""
    generator = torch.Generator().manual_seed(0)
    img = torch.rand(31, 23, 3, generator=generator).permute(2, 0, 1)
    return all(torch.equal(_scale(img, *size, None, lib), scale_reference(img, *size))
               for size in ((45, 17), (10, 40), (23, 31)))


@functools.cache
def native():
    """(the library of bicubic.c, None) where it is built and gives the reference's numbers, else
    (None, why not); then ``scale`` runs the same arithmetic as torch operations, about 3x slower."""
    lib, why = bicubic_native.library()
    if lib is not None and not _agrees_with_reference(lib):
        lib, why = None, f'{bicubic_native.SOURCE} as built by the C compiler here does not give the reference numbers'
    return lib, why


@functools.cache
def prepare():
    """Builds bicubic.c now, in the main process (loader workers then inherit it, or find it built), and
    says once when the resize has to run without it."""
    lib, why = native()
    if lib is None:
        print(f'warning: the bicubic resize runs as torch operations, about 1.6x slower per ImageNet loader worker '
              f'than with its C loops: {why}', file=sys.stderr)


def _scale(img, width, height, box, lib):
    width, height = destination_size(width, height)
    x1, y1, x2, y2 = _checked_box(box, width, height)
    *lead, h, w = img.shape
    planes = math.prod(lead)
    across, down = _taps(w, width, x1, x2 - x1), _taps(h, height, y1, y2 - y1)
    img = img.reshape(planes, h, w)[:, down.lo:down.hi, across.lo:across.hi]
    rows, cols = img.shape[1:]
    # Rows first, with the width axis outermost, [cols, planes*rows], so that each tap is a whole row;
    # the result [x2-x1, planes*rows] is transposed to [planes, rows, x2-x1], where the columns are done
    # the same way.
    src = _scratch.take('src', (1, cols, planes * rows))
    _width_outermost(img, src[0], lib)
    resized_rows = _scratch.take('rows', (1, x2 - x1, planes * rows))
    _resize_middle(src, resized_rows, w, across, lib)
    mid = _scratch.take('mid', (planes, rows, x2 - x1))
    _transpose(resized_rows[0], mid.view(planes * rows, x2 - x1), lib)
    out = torch.empty(planes, y2 - y1, x2 - x1)
    return _resize_middle(mid, out, h, down, lib).view(*lead, y2 - y1, x2 - x1)


def scale(img, width, height, box=None, use_c=True):
    """``scale_reference`` computed faster, with the same result (the fast path is for float32, the type
    of the Lua's images; other types take the reference). img may be any view, a crop of a larger image
    for instance. With a box, only the pixels in it are computed, from the source pixels they need.
    The loops run in bicubic.c where it could be built (``native()``), else, or with use_c=False, as
    torch operations."""
    if img.dtype != torch.float32:
        return scale_reference(img, width, height, box)
    return _scale(img, width, height, box, native()[0] if use_c else None)
