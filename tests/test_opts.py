"""Options: the Lua names and defaults, true/false booleans, derived defaults, one-line errors (exit 2)."""
import os
import re
import subprocess
import sys

import pytest

import opts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(*argv, save):
    return opts.parse(['-save', str(save), *argv])


def test_defaults_are_the_lua_defaults(tmp_path):
    opt = parse(save=tmp_path)
    assert (opt.dataset, opt.manualSeed, opt.nGPU, opt.backend, opt.cudnn, opt.gen, opt.precision) == \
        ('cifar10', 0, 1, 'cudnn', 'fastest', 'gen', 'single')
    assert (opt.nThreads, opt.epochNumber, opt.batchSize, opt.testOnly, opt.tenCrop) == (2, 1, 32, False, False)
    assert (opt.resume, opt.LR, opt.momentum, opt.weightDecay) == ('none', 0.1, 0.9, 1e-4)
    assert (opt.retrain, opt.optimState, opt.shareGradInput, opt.optnet, opt.resetClassifier, opt.nClasses) == \
        ('none', 'none', True, False, False, 0)
    assert (opt.optMemory, opt.depth, opt.growthRate, opt.bottleneck, opt.reduction) == (0, 20, 12, True, 0.5)
    assert opt.netType == 'gunn-15'  # the Lua default 'resnet' does not exist in GUNN (README)


@pytest.mark.parametrize('dataset,epochs,shortcut', [('cifar10', 164, 'A'), ('cifar100', 164, 'A'), ('digits', 10, 'A')])
def test_derived_defaults(tmp_path, dataset, epochs, shortcut):
    opt = parse('-dataset', dataset, save=tmp_path)
    assert (opt.nEpochs, opt.shortcutType) == (epochs, shortcut)
    assert parse('-dataset', dataset, '-nEpochs', '3', save=tmp_path).nEpochs == 3


def test_imagenet_defaults(tmp_path):
    (tmp_path / 'data' / 'train').mkdir(parents=True)
    (tmp_path / 'data' / 'val').mkdir()
    opt = parse('-dataset', 'imagenet', '-netType', 'gunn-18', '-data', str(tmp_path / 'data'), save=tmp_path / 'cp')
    assert (opt.nEpochs, opt.shortcutType) == (90, 'B')


def test_readme_command_parses(tmp_path):
    opt = parse(*'-netType gunn-15 -dataset cifar10 -batchSize 64 -nGPU 4 -nThreads 8 -shareGradInput true '
                 '-nEpochs 300'.split(), save=tmp_path)
    assert (opt.netType, opt.batchSize, opt.nGPU, opt.nThreads, opt.shareGradInput, opt.nEpochs) == \
        ('gunn-15', 64, 4, 8, True, 300)


def test_booleans_take_true_and_false(tmp_path):
    opt = parse('-shareGradInput', 'false', '-optnet', 'true', '-testOnly', 'true', save=tmp_path)
    assert (opt.shareGradInput, opt.optnet, opt.testOnly) == (False, True, True)


def test_parsing_writes_nothing(tmp_path):
    parse(save=tmp_path / 'a' / 'b')  # the training run creates -save (checkpoints.claim); -testOnly does not
    assert not (tmp_path / 'a').exists()


def test_data_is_ignored_with_a_warning_for_digits(tmp_path, capsys):
    parse('-dataset', 'digits', '-data', 'somewhere', save=tmp_path)
    assert capsys.readouterr().err == 'warning: -data somewhere is ignored: the digits data set is embedded\n'
    parse('-dataset', 'cifar10', '-data', str(tmp_path), save=tmp_path)
    assert capsys.readouterr().err == ''


def test_opt_memory_1_goes_with_share_grad_input(tmp_path):
    """opts.lua refuses -shareGradInput with -optnet only; -optMemory 1 passes with the default -shareGradInput."""
    opt = parse('-optMemory', '1', save=tmp_path)
    assert (opt.optMemory, opt.shareGradInput, opt.optnet) == (1, True, False)


def run_main(*argv, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'main.py'), *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize('argv,message', [
    (['-dataset', 'mnist'], "argument -dataset: invalid choice: 'mnist'"),
    (['-precision', 'quad'], "argument -precision: invalid choice: 'quad'"),
    (['-netType', 'resnet'], "argument -netType: invalid choice: 'resnet'"),
    (['-netType', 'gunn-18'], '-netType gunn-18 is built for imagenet, not -dataset cifar10'),
    (['-dataset', 'imagenet'], 'missing ImageNet data directory'),
    (['-dataset', 'imagenet', '-data', '.'], 'ImageNet missing `train` directory'),
    (['-resetClassifier', 'true'], '-nClasses required when resetClassifier is set'),
    (['-optnet', 'true'], 'cannot use both -shareGradInput and -optnet'),
    (['-batchSize', '0'], '-batchSize must be at least 1, got 0'),
    (['-nEpochs', '-1'], '-nEpochs must not be negative, got -1'),
    (['-nEpochs', '1.5'], "argument -nEpochs: invalid int value: '1.5'"),
    (['-LR', '-1'], '-LR must be a number >= 0, got -1'),
    (['-weightDecay', '-1e-4'], '-weightDecay must be a number >= 0, got -0.0001'),
    (['-momentum', '1'], '-momentum must be between 0 and 1 (Nesterov momentum needs one above 0), got 1'),
    (['-data', 'nowhere'], '-data nowhere: no such file or folder'),
    (['-testOnly', 'yes'], "argument -testOnly: expected true or false, got 'yes'"),
    (['-batchsize', '3'], 'unrecognized arguments: -batchsize 3'),
    (['-cudnn', 'slow'], "argument -cudnn: invalid choice: 'slow'"),
    (['-tenCrop', 'true'], '-tenCrop is for imagenet: the cifar10 validation images are used whole'),
    (['-bnSplit', '0'], '-bnSplit must be at least 1, got 0'),
])
def test_bad_options_one_line_exit_2(tmp_path, argv, message):
    result = run_main('-save', str(tmp_path / 'cp'), *argv, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ''
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize('argv,message', [
    (['-nThreads', '-1'], '-nThreads must not be negative, got -1'),
    (['-epochNumber', '0'], '-epochNumber must be at least 1, got 0'),
    (['-nClasses', '-2'], '-nClasses must not be negative, got -2'),
    (['-batchSize', '3e1'], "argument -batchSize: invalid int value: '3e1'"),
    (['-LR', 'nan'], '-LR must be a number >= 0, got nan'),
    (['-LR', '-inf'], '-LR must be a number >= 0, got -inf'),
    (['-LR', 'fast'], "argument -LR: invalid float value: 'fast'"),
    (['-weightDecay', 'inf'], '-weightDecay must be a number >= 0, got inf'),
    (['-momentum', '-0.5'], '-momentum must be between 0 and 1 (Nesterov momentum needs one above 0), got -0.5'),
    (['-momentum', '0'], '-momentum must be between 0 and 1 (Nesterov momentum needs one above 0), got 0'),
    (['-manualSeed', str(2**64)], f'-manualSeed must be a 64-bit integer, got {2**64}'),
    (['-save', ''], '-save must name a folder'),
    (['-resume', ''], '-resume must name a folder (or be none)'),
    (['-dataset', 'imagenet', '-data', 'file'], '-data file is a file: ImageNet needs a folder holding train/ and val/'),
    (['-dataset', 'imagenet', '-data', 'only-train'], 'ImageNet missing `val` directory: only-train/val'),
])
def test_bad_values_are_refused_where_parsed(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'file').write_text('')
    (tmp_path / 'only-train' / 'train').mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        parse(*argv, save=tmp_path / 'cp')
    assert e.value.code == 2 and capsys.readouterr().err == f'main.py: error: {message}\n'


def test_help_lists_every_option(tmp_path):
    result = run_main('-help', cwd=tmp_path)
    assert result.returncode == 0
    for name in ('-data', '-dataset', '-manualSeed', '-nGPU', '-backend', '-cudnn', '-gen', '-precision',
                 '-nThreads', '-nEpochs', '-epochNumber', '-batchSize', '-testOnly', '-tenCrop', '-save',
                 '-resume', '-LR', '-momentum', '-weightDecay', '-netType', '-depth', '-shortcutType', '-retrain',
                 '-optimState', '-shareGradInput', '-optnet', '-resetClassifier', '-nClasses', '-optMemory',
                 '-growthRate', '-bottleneck', '-reduction', '-dropRate', '-d1', '-progress', '-device'):
        assert f'\n  {name} ' in result.stdout, name
    # our own options come after the original ones
    assert result.stdout.index('-optMemory') < result.stdout.index('Options of this port') < result.stdout.index('\n  -progress')


def test_every_option_is_in_the_options_document():
    with open(os.path.join(ROOT, 'docs', 'OPTIONS.md')) as f:
        document = f.read()
    options = re.findall(r'^  (-\w+)', opts.get_args_parser().format_help(), re.M)
    assert len(options) > 40
    assert [name for name in options if f'`{name}`' not in document and name != '-help'] == []
