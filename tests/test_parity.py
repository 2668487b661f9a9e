"""The port against the golden data of the original Lua code (tolerances are stated in parity.py)."""
import os
import shutil

import pytest

import parity as parity_command
from golden import cases as golden
from golden import networks as parity

LARGE_MISSING = 'the gunn-15 golden files live in ../shared/parity (always present in CI), not in the clone'


def assert_all_within(report):
    failed = [row for row in report.rows if not row[-1]]
    assert report.rows and not failed, '\n' + report.table()


@pytest.mark.parametrize('case', ['gunnlayer_cifar', 'gunnlayer_imagenet'])
def test_gunnlayer_all_memory_modes(case):
    report = golden.Report()
    parity.check_gunnlayer(report, case)
    assert len(report.rows) == 15
    assert_all_within(report)


@pytest.mark.parametrize('memory', ['share', 'plain', 'recompute'])
def test_gunn15_forward_backward_and_three_sgd_steps(memory):
    if golden.find_case('gunn15_cifar10') is None:
        pytest.skip(LARGE_MISSING)
    report = golden.Report()
    parity.check_gunn15(report, memory=memory)
    assert len(report.rows) == 14
    assert_all_within(report)


def test_gunn18_deterministic_fill_logits():
    report = golden.Report()
    parity.check_gunn18(report)
    assert len(report.rows) == 7
    assert_all_within(report)


def test_torch7_checkpoint_import():
    if golden.find_case('gunn15_cifar10') is None:
        pytest.skip(LARGE_MISSING)
    report = golden.Report()
    parity.check_torch7_import(report)
    assert len(report.rows) == 3
    assert_all_within(report)


def test_schedule_score_and_sgd():
    report = golden.Report()
    parity.check_extras(report)
    assert_all_within(report)


def test_parity_command_prints_table_and_exit_status(tmp_path, capsys):
    fixtures = os.path.join(golden.ROOT, 'tests', 'fixtures', 'lua')
    for suffix in ('.json', '.bin'):
        shutil.copy(os.path.join(fixtures, 'gunnlayer_imagenet' + suffix), tmp_path)
    assert parity_command.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert 'gunnlayer_imagenet [share]' in out and 'verdict' in out and '15/15 comparisons' in out
    assert parity_command.main([str(tmp_path / 'empty')]) == 1


def test_parity_command_fails_on_a_wrong_result(tmp_path, monkeypatch, capsys):
    fixtures = os.path.join(golden.ROOT, 'tests', 'fixtures', 'lua')
    for suffix in ('.json', '.bin'):
        shutil.copy(os.path.join(fixtures, 'gunnlayer_imagenet' + suffix), tmp_path)
    real_forward = parity.models.GunnLayer.forward
    monkeypatch.setattr(parity.models.GunnLayer, 'forward', lambda self, x: real_forward(self, x) * (1 + 1e-6))
    assert parity_command.main([str(tmp_path)]) == 1
    assert 'FAIL' in capsys.readouterr().out
