"""Crafted and damaged files: the .t7 and .pt readers under seeded mutations (tests/fuzz_files.py), and a
crafted .t7 through every entry point that reads one."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch7_writer
from helpers import ROOT, mini_opt

import models


@pytest.mark.parametrize('kind', ['t7', 'pt'])
def test_mutated_files_are_read_exactly_or_refused_in_one_line(tmp_path, kind):
    out = tmp_path / 'fuzz.json'
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'fuzz_files.py'), kind, '300', '1', str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]  # no signal, no MemoryError, no other exception
    report = json.loads(out.read_text())
    assert report['failures'] == []
    assert report['counts']['accepted'] > 30 and report['counts']['refused'] > 100  # both outcomes exercised


def crafted_t7(path, strides):
    """gunn-mini as a Torch7 file whose first convolution's weight has the given strides over its storage."""
    torch.manual_seed(0)
    tree = torch7_writer.lua_tree(models.create(mini_opt()), conv_class='cudnn.SpatialConvolution')
    conv = tree.fields['modules'][1]
    weight = torch7_writer.raw(conv.fields['weight'])
    conv.fields['weight'] = weight._replace(strides=strides)
    torch7_writer.save(tree, path)


# a stride far past the storage (it used to crash the process), one just past it (it used to read the heap);
# the weight is 64 x 3 x 3 x 3 = 1728 elements
@pytest.mark.parametrize('strides', [(2**40, 9, 3, 1), (28, 9, 3, 1)], ids=['far', 'near'])
@pytest.mark.parametrize('command', [
    ['pretrained/convert_t7.py', 'net.t7', 'out.pt'],
    ['pretrained/classify.py', 'net.t7', 'image.png'],
    ['pretrained/extract_features.py', 'net.t7', 'image.png'],
    ['pretrained/export_onnx.py', 'net.t7', 'out.onnx'],
    ['main.py', '-netType', 'gunn-mini', '-dataset', 'digits', '-retrain', 'net.t7', '-nEpochs', '1'],
], ids=['convert_t7', 'classify', 'extract_features', 'export_onnx', 'main -retrain'])
def test_a_crafted_t7_is_refused_by_every_entry_point(tmp_path, strides, command):
    crafted_t7(tmp_path / 'net.t7', strides)
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'image.png')
    result = subprocess.run([sys.executable, os.path.join(ROOT, command[0]), *command[1:]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    if 'export_onnx' in command[0] and 'needs onnx' in result.stderr:
        pytest.skip('onnx is not installed')
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    reach = f'reaches element {63 * strides[0] + 2 * sum(strides[1:])} of a storage of 1728'
    assert len(lines) == 1 and 'net.t7: tensor 1.weight is damaged' in lines[0] and reach in lines[0], result.stderr
    assert not (tmp_path / 'out.pt').exists()
