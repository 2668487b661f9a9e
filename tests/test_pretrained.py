"""The inference tools (pretrained/classify.py, extract_features.py, export_onnx.py) on a small gunn-mini."""
import importlib.util
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch7_writer
from helpers import mini_opt
from PIL import Image

import models
from datasets.imagenet import load_image
from pretrained import classify, cli, export_onnx, extract_features, load
from support import fileio
from support.errors import GunnError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURE_TOL = 1e-5  # relative to the largest feature: batching changes the float32 summation order


pytestmark = pytest.mark.usefixtures('one_thread')


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    """gunn-mini on digits with non-trivial running statistics, saved as our checkpoint, and some files."""
    folder = tmp_path_factory.mktemp('pretrained')
    torch.manual_seed(0)
    model = models.create(mini_opt())
    with torch.no_grad():  # a few training-mode passes move the BatchNorm statistics away from 0/1
        for _ in range(5):
            model(torch.randn(8, 3, 32, 32))
    model.eval()
    checkpoint = str(folder / 'model_best.pt')
    fileio.save_atomic({'netType': 'gunn-mini', 'dataset': 'digits', 'model': model.state_dict(), 'epoch': 3},
                            checkpoint)
    rng = np.random.default_rng(0)
    images = folder / 'images'
    images.mkdir()
    # RGB, grayscale and RGBA files of assorted sizes (the array shape gives PIL the mode)
    for i, (shape, ext) in enumerate([((36, 40, 3), 'png'), ((30, 30), 'jpg'), ((32, 32, 3), 'jpg'),
                                      ((50, 20, 4), 'png'), ((32, 33, 3), 'png')]):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(images / f'img{i}.{ext}')
    (images / 'notes.txt').write_text('not an image')
    (images / 'folder.png').mkdir()  # skipped too: a folder, whatever its name
    (folder / 'empty').mkdir()
    torch7_writer.save(torch7_writer.unknown_network(), str(folder / 'unknown.t7'))
    paths = sorted(str(p) for p in images.glob('img*'))
    return SimpleNamespace(folder=folder, checkpoint=checkpoint, model=model, images=paths, dir=str(images))


def direct(model, paths, upto=None):
    """The network run by hand on each image: logits, or the features in front of the classifier."""
    transform = load.preprocess('digits')
    with torch.no_grad():
        return torch.cat([model[:upto](transform(load_image(p))[None]) for p in paths])


def parse_classify(text):
    blocks = text.split('\n\n')
    assert blocks[-1] == ''
    result = {}
    for block in blocks[:-1]:
        head, *rows = block.split('\n')
        assert head.startswith('Classes for\t')
        result[head.split('\t', 1)[1]] = [(float(p), label) for p, label in (row.split('\t') for row in rows)]
    return result


def test_classify_prints_the_top_classes(work, capsys):
    classify.main([work.checkpoint, *work.images[:2]])
    result = parse_classify(capsys.readouterr().out)
    assert list(result) == work.images[:2]
    probabilities = direct(work.model, work.images[:2]).softmax(dim=1)
    for row, (path, top) in zip(probabilities, result.items()):
        values = [p for p, _ in top]
        assert len(top) == 5 and values == sorted(values, reverse=True) and sum(values) <= 1
        expected, indexes = row.topk(5)
        assert [label for _, label in top] == [str(i) for i in indexes.tolist()]  # digits: labels '0'..'9'
        assert np.allclose(values, expected.tolist(), rtol=1e-6, atol=0)


def test_classify_top_is_capped_at_the_class_count(work, capsys):
    classify.main([work.checkpoint, work.images[0], '-top', '50'])
    [top] = parse_classify(capsys.readouterr().out).values()
    assert sorted(label for _, label in top) == [str(i) for i in range(10)]
    assert abs(sum(p for p, _ in top) - 1) < 1e-5


def test_extract_features_of_single_images(work, tmp_path, capsys):
    out = str(tmp_path / 'f.pt')
    extract_features.main([work.checkpoint, *work.images[:3], '-o', out, '-npy'])
    assert 'saved features to' in capsys.readouterr().out
    saved = fileio.load(out, 'features file')
    assert saved['image_list'] == work.images[:3]
    assert saved['features'].dtype == torch.float32 and saved['features'].shape == (3, 64)
    assert rel_err(saved['features'], direct(work.model, work.images[:3], -1)) < FEATURE_TOL
    assert np.array_equal(np.load(tmp_path / 'f.npy'), saved['features'].numpy())
    assert (tmp_path / 'f.txt').read_text().splitlines() == work.images[:3]


def test_extract_features_batch_mode_with_a_partial_last_batch(work, tmp_path, capsys):
    out = str(tmp_path / 'batch.pt')
    extract_features.main([work.checkpoint, '2', work.dir, '-o', out])  # 5 images: batches of 2, 2, 1
    saved = fileio.load(out, 'features file')
    assert saved['image_list'] == work.images  # sorted; notes.txt and the folder skipped
    assert saved['features'].shape == (5, 64)
    assert rel_err(saved['features'], direct(work.model, work.images, -1)) < FEATURE_TOL


def test_class_names_and_preprocessing():
    imagenet = load.class_names('imagenet')
    assert len(imagenet) == 1000 and imagenet[0] == 'tench, Tinca tinca'
    assert imagenet[999] == 'toilet tissue, toilet paper, bathroom tissue'
    cifar100 = load.class_names('cifar100')
    assert len(cifar100) == 100 and cifar100 == sorted(cifar100) and cifar100[:2] == ['apple', 'aquarium_fish']
    assert load.class_names('cifar10')[:3] == ['airplane', 'automobile', 'bird']
    assert load.preprocess('imagenet')(torch.rand(3, 300, 400)).shape == (3, 224, 224)
    gray = load.preprocess('cifar10')(torch.full((3, 40, 50), 0.5))  # resized, then (127.5 - mean) / std
    expected = (127.5 - torch.tensor([125.3, 123.0, 113.9])) / torch.tensor([63.0, 62.1, 66.7])
    assert gray.shape == (3, 32, 32) and torch.allclose(gray, expected.view(3, 1, 1).expand(3, 32, 32), atol=1e-5)


def test_an_output_file_that_is_a_folder_is_refused_before_any_work(tmp_path):
    with pytest.raises(GunnError, match=f'^{tmp_path} is a folder, not an output file$'):
        cli.check_output(str(tmp_path))


@pytest.fixture(scope='module')
def failures(work):
    """The error cases, each a run of the script in its own process (started together: start-up dominates)."""
    def script(name, *args):
        return [sys.executable, os.path.join(ROOT, 'pretrained', name), *map(str, args)]
    (work.folder / 'folder.t7').mkdir(exist_ok=True)
    cases = {
        'missing image': (script('classify.py', work.checkpoint, work.folder / 'nope.png'),
                          f'error: file not found: {work.folder / "nope.png"}'),
        'not an image': (script('classify.py', work.checkpoint, os.path.join(work.dir, 'notes.txt')),
                         f'error: cannot read image {os.path.join(work.dir, "notes.txt")}: '),
        'unknown t7': (script('classify.py', work.folder / 'unknown.t7', work.images[0]),
                       'error: .*unknown.t7 is none of the -netType models for imagenet .*: found modules '
                       'nn.Sequential, nn.SpatialConvolution, nn.Tanh, nn.Linear$'),
        'class count': (script('classify.py', work.checkpoint, work.images[0], '-dataset', 'cifar100'),
                        'error: .*model_best.pt has a 10-way classifier, but cifar100 has 100 classes$'),
        'empty directory': (script('extract_features.py', work.checkpoint, 4, work.folder / 'empty'),
                            'error: no images .* in .*empty$'),
        'folder as model': (script('classify.py', work.dir, work.images[0]),
                            f'error: {re.escape(work.dir)} is a folder, not a file$'),
        'file as directory': (script('extract_features.py', work.checkpoint, 4, work.images[0]),
                              f'error: {re.escape(work.images[0])} is a file, not a folder of images$'),
        'folder as t7': (script('convert_t7.py', 'folder.t7', 'out.pt'), 'error: folder.t7 is a folder, not a model file$'),
        'random bytes': (script('classify.py', 'random.pt', work.images[0]),
                         'error: random.pt is not a checkpoint file \\(not a file written by torch.save\\)$'),
    }
    (work.folder / 'random.pt').write_bytes(bytes(range(7, 256)) * 3)
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}  # five processes share the CPU
    running = {name: subprocess.Popen(command, cwd=work.folder, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for name, (command, _) in cases.items()}
    return {name: (process.communicate(timeout=120), process.returncode, cases[name][1])
            for name, process in running.items()}


@pytest.mark.parametrize('case', ['missing image', 'not an image', 'unknown t7', 'class count',
                                  'empty directory', 'folder as model', 'file as directory', 'folder as t7',
                                  'random bytes'])
def test_bad_input_is_one_error_line_and_status_1(failures, case):
    (stdout, stderr), status, pattern = failures[case]
    assert status == 1 and stdout == ''
    assert stderr.count('\n') == 1 and re.match(pattern, stderr.rstrip('\n')), stderr


@pytest.mark.parametrize('tool', ['classify.py', 'extract_features.py', 'convert_t7.py', 'export_onnx.py'])
def test_usage_errors_are_one_line_and_status_2(tmp_path, tool):
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'pretrained', tool), '-top'], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ''
    assert result.stderr.count('\n') == 1 and result.stderr.startswith(f'{tool}: error: '), result.stderr


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ('onnx', 'onnxscript', 'onnxruntime')),
                    reason='the ONNX round trip needs onnx, onnxscript and onnxruntime installed')
def test_onnx_export_round_trip(work, tmp_path, capsys):
    import onnxruntime

    out = str(tmp_path / 'mini.onnx')
    export_onnx.main([work.checkpoint, out])
    assert 'onnxruntime vs PyTorch: max abs difference' in capsys.readouterr().out
    session = onnxruntime.InferenceSession(out, providers=['CPUExecutionProvider'])
    for batch in (1, 4):  # the batch dimension is dynamic
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = work.model(x)
        got = torch.from_numpy(session.run(['logits'], {'images': x.numpy()})[0])
        assert rel_err(got, expected) < 1e-5
