import itertools
import math

import pytest
import torch

import datasets.transforms as t
from datasets import cifar
from golden.cases import load_case


def positions(c=3, h=7, w=9):
    """An image whose pixels say where they are: channel 0 = y + 1, channel 1 = x + 1, channel 2 = c."""
    y = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w) + 1
    x = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w) + 1
    return torch.stack([y, x, torch.full((h, w), 5.0)][:c])


def scripted(monkeypatch, uniforms=(), randoms=()):
    """Replaces the random draws of the transforms by the given values, in order."""
    u, r = iter(uniforms), iter(randoms)
    monkeypatch.setattr(t, '_uniform', lambda a=0.0, b=1.0: a + (b - a) * next(u))
    monkeypatch.setattr(t, '_random', lambda a, b: next(r))


# ---- deterministic pieces, against the golden data of the Lua run ----

@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_color_normalize_matches_lua_bit_for_bit(name):
    meta, tensors = load_case('extras')
    assert cifar.VARIANTS[name].meanstd == {k: tuple(v) for k, v in meta['cifar_val'][f'{name}_meanstd'].items()}
    raw = torch.from_numpy(tensors['cifar_val/raw_uint8_as_int64'].copy()).to(torch.uint8)
    normalize = t.ColorNormalize(cifar.VARIANTS[name].meanstd)
    image = raw[0].float()
    out = torch.stack([normalize(raw[i].float()) for i in range(len(raw))])
    assert torch.equal(out, torch.from_numpy(tensors[f'{name}_val/normalized'].copy()))
    assert torch.equal(image, raw[0].float())  # the input is left alone


def test_scale_sizes_and_center_crop_boxes_match_lua_geometry():
    meta, _ = load_case('extras')
    for case in meta['geometry']:
        h, w = case['input_hw']
        scaled = t.Scale(256)(torch.zeros(3, h, w))
        assert list(scaled.shape[1:]) == case['scale_result_hw']
        for call in case['scale_calls']:
            assert list(scaled.shape[1:]) == [call['allocated_h'], call['allocated_w']]
            assert math.isclose(h / w * 256 if w < h else w / h * 256,
                                call['height_arg'] if w < h else call['width_arg'])
        ch, cw = case['center_crop_input_hw']
        (box,) = case['center_crop_calls']
        out = t.CenterCrop(224)(positions(2, ch, cw))
        assert out.shape == (2, 224, 224)
        assert (out[0, 0, 0].item() - 1, out[1, 0, 0].item() - 1) == (box['y1'], box['x1'])
        assert (out[0, -1, -1].item(), out[1, -1, -1].item()) == (box['y2'], box['x2'])


def test_center_crop_rounds_odd_margins_up():
    out = t.CenterCrop(3)(positions(2, 6, 8))  # margins 3 and 5: offsets ceil(1.5) = 2, ceil(2.5) = 3
    assert out[0, 0, 0] == 3 and out[1, 0, 0] == 4


# ---- image-package building blocks ----

def test_crop_copies_and_checks_bounds():
    img = positions()
    out = t.crop(img, 2, 1, 5, 4)
    assert torch.equal(out, img[:, 1:4, 2:5])
    out.zero_()
    assert img.min() > 0
    with pytest.raises(ValueError):
        t.crop(img, 7, 0, 10, 3)


def test_hflip_mirrors_width():
    img = positions()
    assert torch.equal(t.hflip(img)[1, :, 0], img[1, :, -1])
    assert torch.equal(t.hflip(t.hflip(img)), img)


def test_scale_is_catmull_rom_with_corner_aligned_samples():
    # 4 -> 3 samples at positions 0, 1.5, 3: the middle one is (-0 + 9*1 + 9*0 - 0) / 16.
    row = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])
    assert t.scale(row, 3, 1).flatten().tolist() == [0.0, 0.5625, 0.0]
    # Linear ramps are reproduced exactly (also at the borders, which extrapolate linearly).
    ramp = torch.arange(10.0).view(1, 1, 10).expand(2, 6, 10)
    assert torch.equal(t.scale(ramp, 19, 11), torch.arange(0, 9.5, 0.5).expand(2, 11, 19))
    # Fractional sizes are truncated; separable: rows then columns.
    img = torch.rand(3, 5, 8)
    out = t.scale(img, 12.9, 7.2)
    assert out.shape == (3, 7, 12) and out.is_contiguous()
    by_rows = t.scale(img, 12, 5)
    assert torch.allclose(out, t.scale(by_rows, 12, 7))
    assert torch.equal(out[:, 0, 0], img[:, 0, 0]) and torch.equal(out[:, -1, -1], img[:, -1, -1])
    assert torch.equal(t.scale(img, 8, 5), img)


def test_rotate_turns_counter_clockwise_and_zeroes_outside():
    img = torch.rand(3, 7, 7)
    assert torch.allclose(t.rotate(img, math.pi / 2), torch.rot90(img, 1, dims=(1, 2)), atol=1e-5)
    assert torch.equal(t.rotate(img, 0.0), img)
    out = t.rotate(torch.ones(1, 9, 9), math.pi / 4)
    assert out[0, 0, 0] == 0 and out[0, 4, 4] == 1


# ---- transforms ----

def test_compose_applies_in_order():
    assert t.Compose([lambda x: x + 1, lambda x: x * 2])(torch.zeros(1)).item() == 2


def test_scale_smaller_edge_and_noop():
    img = torch.rand(3, 20, 30)
    assert t.Scale(20)(img) is img
    assert t.Scale(10)(img).shape == (3, 10, 15)
    assert t.Scale(10)(torch.rand(3, 30, 20)).shape == (3, 15, 10)
    assert t.Scale(7)(torch.rand(3, 10, 10)).shape == (3, 7, 7)
    with pytest.raises(ValueError):
        t.Scale(10, 'bilinear')


def test_scale_center_crop_is_scale_then_center_crop():
    torch.manual_seed(0)
    for h, w in ((37, 50), (50, 37), (40, 40), (20, 33), (30, 29), (20, 20)):  # (20, 20): no resize
        img = torch.rand(3, h, w)
        expected = t.Compose([t.Scale(20), t.CenterCrop(17)])(img)
        got = t.ScaleCenterCrop(20, 17)(img)
        assert torch.equal(got, expected) and got.data_ptr() != img.data_ptr()


def test_random_crop_pads_with_exact_zeros_and_covers_all_offsets():
    img = positions(2, 32, 32)
    p, seen = 4, set()
    torch.manual_seed(0)
    for _ in range(400):
        out = t.RandomCrop(32, p)(img)
        inside = out[1].nonzero()
        y, x = inside[0].tolist()
        x1 = int(out[1, y, x].item()) - 1 - x + p
        y1 = int(out[0, y, x].item()) - 1 - y + p
        padded = torch.zeros(2, 40, 40)
        padded[:, p:p + 32, p:p + 32] = img
        assert torch.equal(out, padded[:, y1:y1 + 32, x1:x1 + 32])
        seen.add((x1, y1))
    assert {x for x, _ in seen} == set(range(9)) and {y for _, y in seen} == set(range(9))
    assert t.RandomCrop(32)(img) is img


def test_ten_crop_order():
    img = positions(3, 7, 9)
    out = t.TenCrop(4)(img)
    assert out.shape == (10, 3, 4, 4)
    for k, view in enumerate((img, img.flip(-1))):
        expected = [view[:, 2:6, 3:7], view[:, :4, :4], view[:, :4, 5:], view[:, 3:, :4], view[:, 3:, 5:]]
        for i, crop in enumerate(expected):
            assert torch.equal(out[5 * k + i], crop), (k, i)


def test_random_scale_range_and_aspect():
    torch.manual_seed(0)
    sizes = set()
    for _ in range(50):
        out = t.RandomScale(8, 12)(torch.rand(3, 20, 30))
        h, w = out.shape[1:]
        assert w == math.floor(30 / 20 * h + 0.5)
        sizes.add(h)
    assert sizes == set(range(8, 13))


def test_random_sized_crop_box_and_fallback(monkeypatch):
    img = torch.rand(3, 40, 30)
    # area 0.5 * 1200 = 600, aspect 3/4 + 0.5 * (4/3 - 3/4) = 25/24: w = round(25.0) = 25, h = round(24.0) = 24.
    scripted(monkeypatch, uniforms=[(0.5 - 0.08) / 0.92, 0.5, 0.9], randoms=[3, 2])
    out = t.RandomSizedCrop(16)(img)
    assert torch.equal(out, t.scale(img[:, 3:27, 2:27], 16, 16))
    # A box that never fits (w, h >= 30 on a 10-pixel-high image): 10 attempts, then Scale + CenterCrop.
    flat = torch.rand(3, 10, 100)
    scripted(monkeypatch, uniforms=[0.99] * 30)
    out = t.RandomSizedCrop(8)(flat)
    assert torch.equal(out, t.CenterCrop(8)(t.Scale(8)(flat)))
    monkeypatch.undo()
    torch.manual_seed(0)
    for _ in range(20):
        assert t.RandomSizedCrop(16)(img).shape == (3, 16, 16)


def test_horizontal_flip_probability():
    img = positions()
    assert torch.equal(t.HorizontalFlip(1)(img), img.flip(-1))
    assert t.HorizontalFlip(0)(img) is img
    torch.manual_seed(0)
    flips = sum(t.HorizontalFlip(0.5)(img) is not img for _ in range(1000))
    assert 430 < flips < 570


def test_rotation_draws_angle_in_half_range():
    img = torch.rand(3, 9, 9)
    assert t.Rotation(0)(img) is img
    torch.manual_seed(3)
    u = torch.rand((), dtype=torch.float64).item()
    torch.manual_seed(3)
    assert torch.equal(t.Rotation(30)(img), t.rotate(img, (u - 0.5) * 30 * math.pi / 180))


def test_lighting_adds_pca_noise_with_the_right_covariance():
    from datasets.imagenet import PCA
    eigval, eigvec = torch.tensor(PCA['eigval'], dtype=torch.float64), torch.tensor(PCA['eigvec'], dtype=torch.float64)
    lighting = t.Lighting(0.1, PCA['eigval'], PCA['eigvec'])
    img = torch.zeros(3, 2, 2)
    torch.manual_seed(0)
    shifts = torch.stack([lighting(img)[:, 0, 0] for _ in range(4000)]).double()
    assert img.abs().sum() == 0  # cloned, not modified
    expected = eigvec @ torch.diag((0.1 * eigval) ** 2) @ eigvec.T
    assert shifts.mean(0).abs().max() < 0.003
    assert torch.allclose(shifts.T.cov(), expected, atol=1.5e-5, rtol=0.1)
    assert t.Lighting(0, PCA['eigval'], PCA['eigvec'])(img) is img


def gray(img):
    return 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]


def test_brightness_contrast_saturation_blend_in_place():
    torch.manual_seed(0)
    base = torch.rand(3, 8, 8)
    ratios = []
    for _ in range(300):
        img = base.clone()
        assert t.Brightness(0.4)(img) is img
        ratio = (img / base).flatten()
        assert torch.allclose(ratio, ratio[0].expand_as(ratio))
        ratios.append(ratio[0].item())
    assert 0.6 <= min(ratios) < 0.65 and 1.35 < max(ratios) < 1.4 and abs(sum(ratios) / 300 - 1) < 0.04

    img = base.clone()
    assert t.Contrast(0.4)(img) is img
    assert math.isclose(gray(img).mean().item(), gray(base).mean().item(), rel_tol=1e-5)
    alpha = (img - gray(base).mean()) / (base - gray(base).mean())
    assert torch.allclose(alpha, alpha.flatten()[0].expand_as(alpha), atol=1e-4)

    img = base.clone()
    assert t.Saturation(0.4)(img) is img
    assert torch.allclose(gray(img), gray(base), atol=1e-6)  # saturation keeps the luma of every pixel
    alpha = (img - gray(base)) / (base - gray(base))
    assert 0.6 <= alpha.median() < 1.4


def test_color_jitter_random_order():
    calls = []

    def recorder(name):
        return lambda img: calls.append(name) or img

    order = t.RandomOrder([recorder('a'), recorder('b'), recorder('c')])
    torch.manual_seed(0)
    counts = {}
    for _ in range(600):
        calls.clear()
        order(None)
        counts[''.join(calls)] = counts.get(''.join(calls), 0) + 1
    assert set(counts) == {''.join(p) for p in itertools.permutations('abc')}
    assert min(counts.values()) > 60
    img = torch.rand(3, 4, 4)
    assert t.ColorJitter()(img) is img
    assert [type(x) for x in t.ColorJitter(0.4, 0, 0.4).order.transforms] == [t.Brightness, t.Saturation]
    out = t.ColorJitter(0.4, 0.4, 0.4)(img.clone())
    assert out.shape == img.shape and not torch.equal(out, img)


def test_jigsaw_cyclic_shifts(monkeypatch):
    img = positions(2, 4, 5)
    scripted(monkeypatch, uniforms=[0.2])  # < 1/3: unchanged
    assert torch.equal(t.Jigsaw()(img.clone()), img)
    scripted(monkeypatch, uniforms=[0.5, 0.4], randoms=[2])  # horizontal, d = 2: first 2 columns to the end
    out = img.clone()
    assert t.Jigsaw()(out) is out
    assert torch.equal(out, torch.cat([img[:, :, 2:], img[:, :, :2]], dim=2))
    scripted(monkeypatch, uniforms=[0.5, 0.4], randoms=[5])  # d == W: unchanged
    assert torch.equal(t.Jigsaw()(img.clone()), img)
    scripted(monkeypatch, uniforms=[0.5, 0.6], randoms=[3])  # vertical, d = 3
    assert torch.equal(t.Jigsaw()(img.clone()), torch.cat([img[:, 3:], img[:, :3]], dim=1))


def test_jigsaw_statistics():
    h, w, n = 4, 5, 6000
    img = positions(2, h, w)
    torch.manual_seed(0)
    counts = {}
    for _ in range(n):
        out = t.Jigsaw()(img.clone())
        dy, dx = int(out[0, 0, 0].item()) - 1, int(out[1, 0, 0].item()) - 1
        assert torch.equal(out, img.roll((-dy, -dx), dims=(1, 2)))  # always an exact cyclic shift ...
        assert dy == 0 or dx == 0  # ... along one axis
        counts[(dy, dx)] = counts.get((dy, dx), 0) + 1
    expected = {(0, 0): 1 / 3 + 1 / 3 / w + 1 / 3 / h}
    expected.update({(0, d): 1 / 3 / w for d in range(1, w)})
    expected.update({(d, 0): 1 / 3 / h for d in range(1, h)})
    assert set(counts) == set(expected)
    for key, p in expected.items():
        assert abs(counts[key] - n * p) < 4.5 * math.sqrt(n * p * (1 - p)), key


def test_seeding_torch_reproduces_a_pipeline():
    pipeline = t.Compose([t.ColorNormalize(cifar.VARIANTS['cifar10'].meanstd), t.HorizontalFlip(0.5),
                          t.RandomCrop(32, 4), t.Jigsaw()])
    img = torch.rand(3, 32, 32) * 255
    torch.manual_seed(7)
    first = [pipeline(img) for _ in range(5)]
    torch.manual_seed(7)
    assert all(torch.equal(a, pipeline(img)) for a in first)
