"""bench.py's plumbing on the CPU (the timings themselves are the benchmark's job, not a test's)."""
import json

import pytest
import torch

from benchmarks import bench


def test_bench_writes_rows_with_the_baseline_first(tmp_path, one_thread):
    out = tmp_path / 'bench.json'
    bench.main(['-netType', 'gunn-mini', '-batchSizes', '2', '-paths', 'share,nowhere', '-exec', 'eager,graph',
                '-precision', 'single,bf16', '-layout', 'nhwc', '-steps', '1', '-rounds', '1', '-warmup', '1',
                '-device', 'cpu', '-json', str(out)])
    result = json.loads(out.read_text())
    assert result['netType'] == 'gunn-mini' and result['size'] == 32 and result['device'].startswith('CPU')
    rows = [(r['path'], r['exec'], r['precision'], r['layout']) for r in result['results']]
    assert rows[0] == ('plain', 'eager', 'single', 'nchw') and result['results'][0]['ratio'] == 1.0
    assert len(rows) == 1 + 2 * 2 * 2
    measured = [r for r in result['results'] if 'skipped' not in r]
    assert [(r['path'], r['exec'], r['precision']) for r in measured[1:]] == [
        ('share', 'eager', 'single'), ('share', 'eager', 'bf16')]
    assert all(r['images_per_s'] > 0 and r['ratio'] > 0 and r['peak_mb'] is None for r in measured)
    reasons = {r['skipped'].split(' (known:')[0] for r in result['results'] if 'skipped' in r}
    assert reasons == {'CUDA graphs need a GPU', "no path 'nowhere' in this build"}


def test_profile_lists_each_rows_top_operators(tmp_path, one_thread, capsys):
    out = tmp_path / 'bench.json'
    bench.main(['-netType', 'gunn-mini', '-batchSizes', '2', '-paths', 'share', '-baseline', 'none', '-steps', '2',
                '-rounds', '1', '-warmup', '1', '-device', 'cpu', '-profile', '4', '-json', str(out)])
    (row,) = json.loads(out.read_text())['results']
    top = row['top_kernels']
    assert len(top) == 4 and all(isinstance(name, str) and ms > 0 and calls > 0 for name, ms, calls in top)
    assert [ms for _, ms, _ in top] == sorted((ms for _, ms, _ in top), reverse=True)
    assert any('convolution' in name for name, _, _ in top)  # the step's largest CPU operators
    assert f'calls/step  {top[0][0]}' in capsys.readouterr().out


def test_grid_sweep_runs_each_grid_then_each_launch_setting(monkeypatch):
    from benchmarks import fused_grid_sweep
    from models.fused import layer as fused_gunn_layer
    seen = []
    configured = fused_gunn_layer.PROGRAMS_PER_SM
    table = fused_gunn_layer.CONFIGS[torch.float32, 'narrow']
    before = {kernel: dict(config) for kernel, config in table.items()}

    def bench_main(argv):
        settings = (table['head_forward']['num_warps'], table['head_forward']['BLOCK_P'])
        seen.append((fused_gunn_layer.PROGRAMS_PER_SM, settings, argv))
    monkeypatch.setattr(bench, 'main', bench_main)
    fused_grid_sweep.main(['-programs', '2,16', '-netType', 'gunn-15', '-exec', 'graph'])
    argv = ['-paths', 'triton', '-baseline', 'none', '-netType', 'gunn-15', '-exec', 'graph']
    warps, block = before['head_forward']['num_warps'], before['head_forward']['BLOCK_P']
    assert seen == [(2, (warps, block), argv), (16, (warps, block), argv),
                    (configured, (8, block), argv), (configured, (warps, block // 2), argv)]
    assert fused_gunn_layer.PROGRAMS_PER_SM == configured and table == before  # all restored
    with pytest.raises(SystemExit):
        fused_grid_sweep.main(['-configs', 'bigger'])
