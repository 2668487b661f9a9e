"""The port against the golden data of the original Lua code (golden/compact: every case kind), and the parity
command (tolerances are stated in golden/)."""
import json
import os
import shutil

import pytest

import parity as parity_command
from golden import cases as golden
from golden import networks as parity
from golden import sets
from support.errors import GunnError

pytestmark = pytest.mark.usefixtures('one_thread')  # small networks (see conftest.py)

ROWS = {'gunnlayer_cifar': 15, 'gunnlayer_imagenet': 15, 'gunn_mini_cifar10': 14, 'gunn_mini_cifar10_init.t7': 3,
        'gunn18_imagenet': 7, 'extras': 4, 'lua_rng': 5, 'lua_init': 5, 'lua_run_mini_cifar10': 14, 'transforms': 86}


def assert_all_within(report):
    failed = [row for row in report.rows if not row[-1]]
    assert report.rows and not failed, '\n' + report.table()


def test_compact_set_runs_every_kind_and_passes(compact_report):
    report, outcomes = compact_report
    assert {o.case.kind for o in outcomes.values()} == set(sets.KINDS) == set(parity_command.CHECKS)
    assert {name: len(o.rows) for name, o in outcomes.items()} == ROWS
    assert all(o.status == 'passed' for o in outcomes.values())
    assert_all_within(report)
    assert report.summary() == ('164/164 comparisons within tolerance, 4 known differences (bugs of the Lua, '
                                'listed above)')


@pytest.mark.parametrize('memory', ['plain', 'recompute'])  # share: the compact report
def test_gunn_train_other_memory_modes(memory):
    report = golden.Report()
    parity.check_gunn_train(report, memory=memory)
    assert len(report.rows) == 14 and all(f'[{memory}]' in row[0] for row in report.rows)
    assert_all_within(report)


def test_gunnlayer_reads_its_configuration():
    meta, _ = golden.load_case('gunnlayer_cifar')
    assert parity.gunnlayer_config(meta) == (16, 4, 'cifar10')


def golden_set(folder, names, drop=()):
    """A golden set in folder with the compact set's cases NAMES and a cases.json listing them, without the
    files in drop."""
    with open(os.path.join(golden.COMPACT, sets.MANIFEST)) as f:
        manifest = json.load(f)
    manifest['cases'] = {name: manifest['cases'][name] for name in names}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, sets.MANIFEST), 'w') as f:
        json.dump(manifest, f)
    for entry in manifest['cases'].values():
        for name in entry['files']:
            if name not in drop:
                shutil.copy(os.path.join(golden.COMPACT, name), folder)
    return str(folder)


def test_parity_command_prints_table_and_exit_status(tmp_path, capsys):
    assert parity_command.main([golden_set(tmp_path, ['gunnlayer_imagenet'])]) == 0
    out = capsys.readouterr().out
    assert 'gunnlayer_imagenet [share]' in out and 'verdict' in out and '15/15 comparisons' in out
    assert f'1 cases expected in {tmp_path}: 1 ran, 1 passed, 0 missing' in out
    with pytest.raises(GunnError, match='no golden set at .*empty: not a folder'):
        parity_command.main([str(tmp_path / 'empty')])


def test_a_removed_case_fails_and_is_named(tmp_path, capsys):
    folder = golden_set(tmp_path, ['gunnlayer_imagenet', 'extras'], drop=['extras.bin'])
    assert parity_command.main([folder]) == 1
    out = capsys.readouterr().out
    assert 'FAILED: missing extras.bin' in out and f'[1] extras: missing extras.bin in {folder}' in out
    assert out.rstrip().endswith('2 cases expected in ' + folder + ': 1 ran, 1 passed, 1 missing (extras)')
    assert parity_command.main([folder, '--present-only']) == 0
    out = capsys.readouterr().out
    assert out.startswith('-- extras: not found, skipped (missing extras.bin)')
    assert out.rstrip().endswith('1 ran, 1 passed, 1 missing (extras) and skipped (--present-only)')


def test_a_set_without_manifest_expects_the_reference_cases(tmp_path, capsys):
    for suffix in ('.json', '.bin'):
        shutil.copy(os.path.join(golden.COMPACT, 'gunnlayer_imagenet' + suffix), tmp_path)
    assert [case.name for case in sets.expected(str(tmp_path))] == [
        'gunnlayer_cifar', 'gunnlayer_imagenet', 'gunn15_cifar10', 'gunn15_cifar10_init.t7', 'gunn18_imagenet',
        'extras', 'lua_rng', 'lua_init', 'lua_run_cifar10', 'transforms']
    assert parity_command.main([str(tmp_path)]) == 1
    assert '10 cases expected in' in capsys.readouterr().out
    assert parity_command.main([str(tmp_path), '--present-only']) == 0
    out = capsys.readouterr().out
    assert '-- gunn15_cifar10_init.t7: not found, skipped (missing gunn15_cifar10.json, gunn15_cifar10.bin, ' \
           'gunn15_cifar10_init.t7)' in out and ': 1 ran, 1 passed, 9 missing' in out


def test_parity_command_fails_on_a_wrong_result(tmp_path, monkeypatch, capsys):
    folder = golden_set(tmp_path, ['gunnlayer_imagenet'])
    real_forward = parity.models.GunnLayer.forward
    monkeypatch.setattr(parity.models.GunnLayer, 'forward', lambda self, x: real_forward(self, x) * (1 + 1e-6))
    assert parity_command.main([folder]) == 1
    out = capsys.readouterr().out
    assert 'FAIL' in out and '1 ran, 0 passed (1 failed: gunnlayer_imagenet)' in out


def test_a_case_that_cannot_be_checked_is_a_failed_row(tmp_path, capsys):
    folder = golden_set(tmp_path, ['extras'])
    with open(os.path.join(folder, sets.MANIFEST)) as f:
        manifest = json.load(f)
    manifest['cases']['extras']['kind'] = 'unknown'
    with open(os.path.join(folder, sets.MANIFEST), 'w') as f:
        json.dump(manifest, f)
    assert parity_command.main([folder]) == 1
    assert "extras: raised GunnError: no check for case kind 'unknown'" in capsys.readouterr().out


def test_lua_generation_failure_is_one_line(tmp_path):
    with pytest.raises(GunnError, match=r'^generating the golden set failed: generate.sh: \S+ is not a GUNN '
                                        r'checkout \(models/GunnLayer.lua, main.lua\)$'):
        parity_command.main(['--lua', str(tmp_path), '--out', str(tmp_path / 'set')])


@pytest.mark.parametrize('argv', [['DIR', '--lua', 'GUNN'], ['--th', 'th'], ['DIR', '--full']])
def test_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        parity_command.main(argv)
    assert stop.value.code == 2 and capsys.readouterr().err.startswith('parity.py: error: ')


def test_two_sets_compare_case_by_case(tmp_path, capsys):
    """python -m golden.compare: equal sets exit 0; a changed tensor is a difference naming case and tensor."""
    from golden import compare
    assert compare.main([golden.COMPACT, golden.COMPACT, '--cases', 'extras,gunnlayer_imagenet']) == 0
    for name in ('extras.json', 'extras.bin'):
        shutil.copy(os.path.join(golden.COMPACT, name), tmp_path)
    blob = bytearray((tmp_path / 'extras.bin').read_bytes())
    blob[-1] ^= 1
    (tmp_path / 'extras.bin').write_bytes(bytes(blob))
    capsys.readouterr()
    assert compare.main([golden.COMPACT, str(tmp_path), '--cases', 'extras']) == 1
    out = capsys.readouterr().out
    assert 'DIFFERS' in out and 'extras: sgd/momentum_buffer_after3: max abs' in out
