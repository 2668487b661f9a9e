"""The fast image.scale, with its loops in C and as torch operations, against the readable reference port
(the Lua's own numbers are in test_parity_data); and the build of its C library."""
import functools
import os
import random
import subprocess
import sys

import pytest
import torch

from datasets import bicubic, bicubic_native
from datasets.bicubic import scale_reference


@pytest.fixture(params=['C', 'torch'])
def scale(request):
    """bicubic.scale with its loops in bicubic.c, or as torch operations (where no C compiler is at hand)."""
    if request.param == 'C':
        library, why = bicubic.native()
        if library is None:
            pytest.skip(f'datasets/bicubic.c is not built here: {why}')
    return functools.partial(bicubic.scale, use_c=request.param == 'C')


def unit_image(*shape):
    """Values as image.load gives them: k * float32(1/255)."""
    return torch.randint(0, 256, shape).float() * torch.tensor(1 / 255, dtype=torch.float32)


def size_pairs(count, seed=0):
    """(h, w, width, height): edge sizes (one-pixel sources and results, equal sizes) and random ones,
    fractional sizes included (image.scale truncates them)."""
    rng = random.Random(seed)
    pairs = [(1, 1, 1, 1), (1, 4, 8, 2), (4, 1, 2, 8), (2, 2, 5, 7), (5, 7, 1, 1), (5, 7, 1, 3), (5, 7, 3, 1),
             (3, 3, 3, 3), (2, 9, 2, 30), (14, 10, 45, 62.99999999999999), (40, 30, 28.67, 20)]
    while len(pairs) < count:
        pairs.append((rng.randint(1, 50), rng.randint(1, 50), rng.randint(1, 70) + rng.random(), rng.randint(1, 70)))
    return pairs


def test_fast_scale_equals_the_reference_bit_for_bit(scale):
    torch.manual_seed(0)
    for h, w, width, height in size_pairs(120):
        for img in (unit_image(3, h, w), torch.randn(1, h, w) * 3, unit_image(h, w, 3).permute(2, 0, 1),
                    torch.randn(2, 2, h, w)):
            expected = scale_reference(img, width, height)
            got = scale(img, width, height)
            assert got.shape == expected.shape and torch.equal(got, expected), (tuple(img.shape), width, height)


def test_imagenet_sizes_equal_the_reference(scale):
    torch.manual_seed(1)
    img = unit_image(375, 500, 3).permute(2, 0, 1)  # the decoder's pixel-interleaved layout
    for width, height in ((341.3333, 256), (224, 224), (600, 450)):
        assert torch.equal(scale(img, width, height), scale_reference(img, width, height))
    crop = unit_image(3, 169, 160)
    assert torch.equal(scale(crop, 224, 224), scale_reference(crop, 224, 224))


def test_crops_are_read_where_they_are(scale):
    """Views into a larger image (RandomSizedCrop's crop of the decoder's pixel-interleaved image, or of a
    planar one) give the reference's result for a copy of the crop."""
    torch.manual_seed(3)
    for img in (unit_image(61, 47, 3).permute(2, 0, 1), unit_image(3, 61, 47), torch.randn(2, 61, 47)):
        for (x1, y1, x2, y2), (width, height) in (((5, 3, 40, 50), (24, 31)), ((0, 0, 47, 61), (50, 9)),
                                                  ((10, 20, 11, 60), (7, 7)), ((2, 2, 33, 13), (100, 80))):
            crop = img[:, y1:y2, x1:x2]
            expected = scale_reference(crop.contiguous(), width, height)
            assert torch.equal(scale(crop, width, height), expected), ((x1, y1, x2, y2), width, height)


def test_a_box_computes_that_part_of_the_result(scale):
    torch.manual_seed(2)
    rng = random.Random(2)
    for h, w, width, height in size_pairs(60, seed=3):
        img = unit_image(3, h, w)
        full = scale_reference(img, width, height)
        full_h, full_w = full.shape[-2:]
        for _ in range(3):
            x1, y1 = rng.randint(0, full_w), rng.randint(0, full_h)
            box = (x1, y1, rng.randint(x1, full_w), rng.randint(y1, full_h))
            expected = full[..., box[1]:box[3], box[0]:box[2]]
            assert torch.equal(scale(img, width, height, box), expected)
            assert torch.equal(scale_reference(img, width, height, box), expected)
    with pytest.raises(ValueError, match='outside'):
        scale(unit_image(3, 5, 5), 8, 8, box=(0, 0, 9, 8))


def test_other_dtypes_take_the_reference(scale):
    img = torch.randn(3, 9, 11, dtype=torch.float64)
    assert scale(img, 5, 7).dtype == torch.float64
    assert torch.equal(scale(img, 5, 7), scale_reference(img, 5, 7))


def test_results_never_share_the_reused_scratch_memory(scale, monkeypatch):
    a, b = unit_image(3, 20, 30), unit_image(3, 25, 18)
    first = scale(a, 12, 9)
    kept = first.clone()
    scale(b, 12, 9)
    assert torch.equal(first, kept)
    # requests above the limit are served fresh: still the same numbers
    monkeypatch.setattr(bicubic._Scratch, 'LIMIT', 10)
    assert torch.equal(scale(a, 12, 9), kept)


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """No library loaded or checked yet in this process, and an empty cache folder under tmp_path."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    cached = (bicubic_native.library, bicubic.native, bicubic.prepare)  # (as they are before a test patches them)
    for function in cached:
        function.cache_clear()
    yield tmp_path / 'gunn'
    for function in cached:
        function.cache_clear()


def requires_a_c_compiler():
    try:
        bicubic_native._compiler()
    except bicubic_native.BuildError as e:
        pytest.skip(str(e))


def test_the_library_is_built_once_into_the_cache_folder(fresh_build, monkeypatch):
    requires_a_c_compiler()
    library, why = bicubic.native()
    assert library is not None and why is None
    built = os.listdir(fresh_build)
    assert len(built) == 1 and built[0].startswith('bicubic-') and built[0].endswith('.so')  # no partial file left
    bicubic_native.library.cache_clear()

    def no_second_build(*args):
        raise AssertionError('built again')
    monkeypatch.setattr(bicubic_native, '_build', no_second_build)
    assert bicubic_native.library()[0] is not None


def test_loader_workers_building_at_the_same_time_all_load_it(fresh_build):
    requires_a_c_compiler()
    code = 'from datasets import bicubic; print(bicubic.native()[1])'
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    workers = [subprocess.Popen([sys.executable, '-c', code], cwd=root, stdout=subprocess.PIPE, text=True)
               for _ in range(3)]
    assert [worker.communicate(timeout=120)[0].strip() for worker in workers] == ['None'] * 3
    assert len(os.listdir(fresh_build)) == 1


def test_without_a_compiler_the_resize_runs_in_torch_and_says_so_once(fresh_build, monkeypatch, capsys):
    monkeypatch.setenv('CC', '/nonexistent/cc')
    assert bicubic.native() == (None, 'no C compiler found (/nonexistent/cc)')
    bicubic.prepare()
    bicubic.prepare()
    assert capsys.readouterr().err == ('warning: the bicubic resize runs as torch operations, about 1.6x slower per '
                                       'ImageNet loader worker than with its C loops: no C compiler found '
                                       '(/nonexistent/cc)\n')
    img = unit_image(3, 30, 40)
    assert torch.equal(bicubic.scale(img, 17, 23), scale_reference(img, 17, 23))


def test_a_failed_build_says_why_in_one_line(fresh_build, monkeypatch):
    requires_a_c_compiler()
    compiler = ' '.join(bicubic_native._compiler())
    monkeypatch.setenv('CC', f'{compiler} -include /nonexistent/header.h')
    library, why = bicubic_native.library()
    assert library is None and '\n' not in why
    assert why.startswith(f'{compiler} -include /nonexistent/header.h failed on {bicubic_native.SOURCE}: ')
    assert '/nonexistent/header.h' in why.split(': ', 1)[1]
    assert os.listdir(fresh_build) == []  # the partial file is gone


def test_an_unwritable_cache_folder_says_so(fresh_build, monkeypatch):
    requires_a_c_compiler()
    blocker = fresh_build.parent / 'a file'
    blocker.write_text('')
    monkeypatch.setenv('XDG_CACHE_HOME', str(blocker))
    library, why = bicubic_native.library()
    assert library is None and why.startswith(f'cannot write to {blocker / "gunn"}: ')


def test_a_library_that_does_not_give_the_reference_numbers_is_not_used(fresh_build, monkeypatch):
    class DoesNothing:
        def gunn_cubic_pass(self, *args):
            pass

        def gunn_transpose(self, *args):
            pass
    monkeypatch.setattr(bicubic_native, 'library', lambda: (DoesNothing(), None))
    library, why = bicubic.native()
    assert library is None and why.endswith('bicubic.c as built by the C compiler here does not give the reference numbers')
