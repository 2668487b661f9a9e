"""Data augmentation and normalisation of the original datasets/transforms.lua, on float CHW tensors.

Every transform is a small picklable class (the Lua ones are closures) so that DataLoader workers can
receive them. Every random draw goes through one source object (``TorchDraws``, torch's global generator,
by default; see ``draws_from``), one method per Torch7 call, in the order the Lua makes them.

The image-package functions the Lua relies on are ported here from torch/image (init.lua and
generic/image.c) rather than taken from torchvision, whose bicubic resize (a=-0.75, half-pixel centres)
and rotation (zero padding inside the border pixel) do not match them:

* ``crop(img, x1, y1, x2, y2)``: a copy of ``img[:, y1:y2, x1:x2]`` (0-based, end exclusive); a box
  outside the image is an error, as in ``image.crop``.
* ``hflip(img)``: mirrors the width axis into a new tensor, as ``image.hflip``.
* ``scale(img, width, height)``: ``image.scale(img, width, height, 'bicubic')`` (datasets/bicubic.py).
* ``rotate(img, theta)``: ``image.rotate(img, theta, 'bilinear')``; a positive angle turns the picture
  counter-clockwise on screen (x right, y down).

Blend-based transforms (Saturation, Brightness, Contrast) and Jigsaw modify their input in place and
return it, as the Lua does; ColorNormalize, Lighting and every crop/flip/scale return a new tensor.
"""
import contextlib
import math

import torch

from datasets.bicubic import destination_size, scale


class TorchDraws:
    """The random draws of the transforms, from torch's global CPU generator (the default source).

    Each method is one Torch7 call of transforms.lua. Another object with the same methods can stand in
    for this one (``draws_from``): the parity check replays the Lua's recorded draws, and ``-rng torch7``
    draws them from an emulation of Torch7's generator."""

    def uniform(self, a=0.0, b=1.0):
        """torch.uniform(a, b): a double in [a, b)."""
        return a + (b - a) * torch.rand((), dtype=torch.float64).item()

    def random(self, a, b):
        """torch.random(a, b): an integer in [a, b], both ends included."""
        return int(torch.randint(a, b + 1, ()).item())

    def randperm(self, n):
        """torch.randperm(n), 0-based, as a list."""
        return torch.randperm(n).tolist()

    def normal(self, n, mean, std):
        """DoubleTensor(n):normal(mean, std): float64 [n]."""
        return torch.randn(n, dtype=torch.float64) * std + mean


_draws = TorchDraws()


@contextlib.contextmanager
def draws_from(source):
    """Within the block, every transform draws from ``source`` (an object with TorchDraws' methods)."""
    global _draws
    previous, _draws = _draws, source
    try:
        yield source
    finally:
        _draws = previous


def _uniform(a=0.0, b=1.0):
    return _draws.uniform(a, b)


def _random(a, b):
    return _draws.random(a, b)


def _round(x):
    """torch.round of a number (C round: halves away from zero); only used on non-negative sizes."""
    return math.floor(x + 0.5)


def crop(img, x1, y1, x2, y2):
    height, width = img.shape[-2:]
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height or x1 > x2 or y1 > y2:
        raise ValueError(f'crop box ({x1}, {y1}, {x2}, {y2}) outside a {width}x{height} image')
    return img[..., y1:y2, x1:x2].clone()


def hflip(img):
    return img.flip(-1)


def rotate(img, theta):
    """image.rotate(img, theta, 'bilinear'): output pixel (i, j) samples the input at R(theta) applied to
    its offset from the centre ((W-1)/2, (H-1)/2). Samples up to half a pixel outside take the border pixel,
    samples further out are 0."""
    height, width = img.shape[-2:]
    theta = float(torch.tensor(theta, dtype=torch.float32))  # the C argument is a float
    xc, yc = (width - 1) / 2.0, (height - 1) / 2.0
    j, i = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                          torch.arange(width, dtype=torch.float64), indexing='ij')
    ri = (math.cos(theta) * (i - xc) - math.sin(theta) * (j - yc)).float()
    rj = (math.cos(theta) * (j - yc) + math.sin(theta) * (i - xc)).float()
    x, y = ri + xc, rj + yc
    i0, j0 = x.floor().long(), y.floor().long()
    wi, wj = (x - i0).double(), (y - j0).double()
    i1, j1 = i0 + 1, j0 + 1
    outside = torch.zeros_like(i0, dtype=torch.bool)
    # The boundary rules of image.c, in its order.
    i1 = torch.where((i1 == width) & (wi < 0.5), i0, i1)
    outside |= i1 >= width
    j1 = torch.where((j1 == height) & (wj < 0.5), j0, j1)
    outside |= j1 >= height
    snap = (i0 == -1) & (wi > 0.5)
    outside |= (i0 < 0) & ~snap
    i0 = torch.where(snap, i1, i0)
    snap = (j0 == -1) & (wj > 0.5)
    outside |= (j0 < 0) & ~snap
    j0 = torch.where(snap, j1, j0)

    def at(jj, ii):
        return img[..., jj.clamp(0, height - 1), ii.clamp(0, width - 1)].double()

    value = ((1 - wi) * (1 - wj) * at(j0, i0) + wi * (1 - wj) * at(j0, i1)
             + (1 - wi) * wj * at(j1, i0) + wi * wj * at(j1, i1))
    return value.masked_fill(outside, 0).to(img.dtype)


def _grayscale(img):
    """Luma of an RGB image, [H, W] (the Lua replicates it over three channels; broadcasting does that here),
    accumulated as the Lua's zero():add(0.299, r):add(0.587, g):add(0.114, b): Torch7 computes each add as a
    fused multiply-add on CPUs that have them, and so does torch's add with alpha."""
    r, g, b = img.unbind(0)
    return torch.mul(r, 0.299).add_(g, alpha=0.587).add_(b, alpha=0.114)


def _blend(img, other, alpha):
    """img = alpha * img + (1 - alpha) * other, in place (other broadcasts)."""
    return img.mul_(alpha).add_(other, alpha=1 - alpha)


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for transform in self.transforms:
            img = transform(img)
        return img


class ColorNormalize:
    """(img - mean) / std per channel, in the image's dtype (float32 reproduces the Lua bit for bit)."""

    def __init__(self, meanstd):
        self.mean = torch.tensor(meanstd['mean'], dtype=torch.float64).view(-1, 1, 1)
        self.std = torch.tensor(meanstd['std'], dtype=torch.float64).view(-1, 1, 1)

    def __call__(self, img):
        return torch.sub(img, self.mean.to(img.dtype)).div_(self.std.to(img.dtype))


class Scale:
    """Smaller edge to ``size``, the other in proportion (its fractional length is truncated)."""

    def __init__(self, size, interpolation='bicubic'):
        if interpolation != 'bicubic':
            # image.scale also has 'bilinear' and 'simple'; no GUNN pipeline uses them.
            raise ValueError(f'Scale: only bicubic interpolation is ported, not {interpolation!r}')
        self.size = size

    def target(self, img):
        """The (width, height) handed to image.scale, or None when the image keeps its size."""
        h, w = img.shape[-2:]
        if (w <= h and w == self.size) or (h <= w and h == self.size):
            return None
        return (self.size, h / w * self.size) if w < h else (w / h * self.size, self.size)

    def __call__(self, img):
        target = self.target(img)
        return img if target is None else scale(img, *target)


class CenterCrop:
    """Offsets ceil((W-size)/2), ceil((H-size)/2): one pixel further right/down than torchvision's
    rounding when the margin is odd."""

    def __init__(self, size):
        self.size = size

    def box(self, width, height):
        x1, y1 = math.ceil((width - self.size) / 2), math.ceil((height - self.size) / 2)
        return x1, y1, x1 + self.size, y1 + self.size

    def __call__(self, img):
        h, w = img.shape[-2:]
        return crop(img, *self.box(w, h))


class ScaleCenterCrop:
    """Scale(size) then CenterCrop(crop), computing only the pixels the crop keeps: the same values in
    about half the time."""

    def __init__(self, size, crop):
        self.scale, self.center = Scale(size), CenterCrop(crop)

    def __call__(self, img):
        target = self.scale.target(img)
        if target is None:
            return self.center(img)
        return scale(img, *target, box=self.center.box(*destination_size(*target)))


class RandomCrop:
    """Zero padding (of the image as it arrives, i.e. already normalised), then a uniformly placed crop."""

    def __init__(self, size, padding=0):
        self.size, self.padding = size, padding

    def __call__(self, img):
        if self.padding > 0:
            p = self.padding
            # The Lua pads to 3 channels whatever the input; this keeps the input's channel count.
            padded = img.new_zeros(img.shape[0], img.shape[1] + 2 * p, img.shape[2] + 2 * p)
            padded[:, p:p + img.shape[1], p:p + img.shape[2]] = img
            img = padded
        h, w = img.shape[-2:]
        if w == self.size and h == self.size:
            return img
        x1 = _random(0, w - self.size)
        y1 = _random(0, h - self.size)
        return crop(img, x1, y1, x1 + self.size, y1 + self.size)


class TenCrop:
    """[10, C, size, size]: centre, top-left, top-right, bottom-left, bottom-right of the image, then
    the same five of its mirror image."""

    def __init__(self, size):
        self.size = size
        self.center = CenterCrop(size)

    def __call__(self, img):
        h, w = img.shape[-2:]
        s = self.size
        crops = []
        for view in (img, hflip(img)):
            crops += [self.center(view), crop(view, 0, 0, s, s), crop(view, w - s, 0, w, s),
                      crop(view, 0, h - s, s, h), crop(view, w - s, h - s, w, h)]
        return torch.stack(crops)


class RandomScale:
    """Shorter side drawn uniformly from [minSize, maxSize], the other rounded in proportion."""

    def __init__(self, minSize, maxSize):
        self.minSize, self.maxSize = minSize, maxSize

    def __call__(self, img):
        h, w = img.shape[-2:]
        target = _random(self.minSize, self.maxSize)
        if w < h:
            return scale(img, target, _round(h / w * target))
        return scale(img, _round(w / h * target), target)


class RandomSizedCrop:
    """Inception crop: 8%-100% of the area, aspect ratio 3/4..4/3 (w and h swapped with probability 1/2),
    resized to size x size; after 10 boxes that do not fit, Scale + CenterCrop."""

    def __init__(self, size):
        self.size = size
        self.fallback = Compose([Scale(size), CenterCrop(size)])

    def __call__(self, img):
        h_in, w_in = img.shape[-2:]
        for _ in range(10):
            area = _uniform(0.08, 1.0) * (h_in * w_in)
            aspect = _uniform(3 / 4, 4 / 3)
            w = _round(math.sqrt(area * aspect))
            h = _round(math.sqrt(area / aspect))
            if _uniform() < 0.5:
                w, h = h, w
            if h <= h_in and w <= w_in:
                y1 = _random(0, h_in - h)
                x1 = _random(0, w_in - w)
                # the Lua crops a copy; scale reads the crop's pixels where they are
                return scale(img[..., y1:y1 + h, x1:x1 + w], self.size, self.size)
        return self.fallback(img)


class HorizontalFlip:
    def __init__(self, prob):
        self.prob = prob

    def __call__(self, img):
        return hflip(img) if _uniform() < self.prob else img


class Rotation:
    """Rotation by an angle uniform in [-deg/2, deg/2) degrees."""

    def __init__(self, deg):
        self.deg = deg

    def __call__(self, img):
        if self.deg == 0:
            return img
        return rotate(img, (_uniform() - 0.5) * self.deg * math.pi / 180)


class Lighting:
    """AlexNet PCA colour noise: adds eigvec @ (alpha * eigval), alpha ~ N(0, alphastd), per channel."""

    def __init__(self, alphastd, eigval, eigvec):
        self.alphastd = alphastd
        self.eigval = [float(v) for v in eigval]
        self.eigvec = [[float(v) for v in row] for row in eigvec]

    def __call__(self, img):
        if self.alphastd == 0:
            return img
        alpha = _draws.normal(3, 0.0, self.alphastd).tolist()
        # the Lua's eigvec:cmul(alpha):cmul(eigval):sum(2) in double: (e * a) * v, summed left to right
        rgb = [sum(e * a * v for e, a, v in zip(row, alpha, self.eigval)) for row in self.eigvec]
        return img + torch.tensor(rgb, dtype=img.dtype).view(3, 1, 1)


class Saturation:
    def __init__(self, var):
        self.var = var

    def __call__(self, img):
        gray = _grayscale(img)
        return _blend(img, gray, 1.0 + _uniform(-self.var, self.var))


class Brightness:
    def __init__(self, var):
        self.var = var

    def __call__(self, img):
        # the Lua blends with black: img * alpha + (1 - alpha) * 0, and adding zero changes nothing
        return img.mul_(1.0 + _uniform(-self.var, self.var))


class Contrast:
    def __init__(self, var):
        self.var = var

    def __call__(self, img):
        # the mean of the grey plane as the Lua's mean(): a sum in double, divided in double, then a float
        gray = _grayscale(img)
        mean = img.new_full((), gray.sum(dtype=torch.float64).item() / gray.numel())
        return _blend(img, mean, 1.0 + _uniform(-self.var, self.var))


class RandomOrder:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for k in _draws.randperm(len(self.transforms)):
            img = self.transforms[k](img)
        return img


class ColorJitter:
    """Brightness, contrast and saturation jitter (those with a non-zero strength) in random order."""

    def __init__(self, brightness=0, contrast=0, saturation=0):
        jitters = [cls(var) for cls, var in ((Brightness, brightness), (Contrast, contrast),
                                              (Saturation, saturation)) if var != 0]
        self.order = RandomOrder(jitters) if jitters else None

    def __call__(self, img):
        return self.order(img) if self.order else img


class Jigsaw:
    """GUNN's augmentation: with probability 1/3 nothing; otherwise a cyclic shift that moves the first
    d columns (d ~ U{1..W}, probability 1/2) or the first d rows (d ~ U{1..H}) to the end. d == W (H)
    leaves the image as it is. In place, as the Lua."""

    def __call__(self, img):
        h, w = img.shape[-2:]
        if _uniform() < 1 / 3:
            return img
        if _uniform() < 0.5:
            return img.copy_(img.roll(-_random(1, w), dims=-1))
        return img.copy_(img.roll(-_random(1, h), dims=-2))
