"""bench.py's plumbing on the CPU (the timings themselves are the benchmark's job, not a test's)."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

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
    assert seen == [(2, (warps, block), argv), (16, (warps, block), argv), (configured, (8, block), argv),
                    (configured, (warps, block // 2), argv), (configured, (warps, block // 2), argv)]
    assert fused_gunn_layer.PROGRAMS_PER_SM == configured and table == before  # all restored
    with pytest.raises(SystemExit):
        fused_grid_sweep.main(['-configs', 'bigger'])


def test_gpu_profile_dry_run_writes_every_section_and_the_summary_last(tmp_path):
    """benchmarks/gpu_profile.py at toy sizes on the CPU (the fused path under the Triton interpreter, the A/B
    subprocesses on aten): every section's rows, each A/B subprocess with its own atomics setting, the summary
    printed last. The plumbing of the GPU run, not its numbers."""
    from benchmarks import gpu_profile
    out = tmp_path / 'profile.json'
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-m', 'benchmarks.gpu_profile', '-json', str(out), '-dry-run'], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sections = json.loads(out.read_text())['sections']
    assert list(sections) == list(gpu_profile.SECTIONS)
    assert [(r['path'], r['batch']) for r in sections['layers']] == [('share', 2), ('triton2', 2)]
    assert all(r['ms'] > 0 and r['kernels'] > 0 and r['top'] for r in sections['layers'] + sections['step'])
    assert [r['path'] for r in sections['step']] == ['share']
    assert [(r['pdl'], 'us_per_kernel' in r) for r in sections['boundary']] == [(False, True)] * 2 + [(True, False)] * 2
    assert all(r['gb_per_s'] > 0 for r in sections['bandwidth'])
    assert [(r['variant'], r['atomics']) for r in sections['ab']] == [
        (variant, atomics) for atomics in gpu_profile.AB_ATOMICS for variant in gpu_profile.AB_VARIANTS]
    assert sections['pipelining'] == 'no compiled kernels under the interpreter'
    summary = result.stdout[result.stdout.index('GPU profile on'):]
    assert 'kernel boundary in a graph' in summary
    assert summary.rstrip().splitlines()[-1].startswith('  stages3-half  relaxed  batch   2:')


def test_union_of_kernel_intervals():
    from benchmarks.gpu_profile import union_ms
    assert union_ms([(0, 1000), (500, 1500), (3000, 3500), (3100, 3200)]) == 2.0
    assert union_ms([]) == 0.0


def test_kernel_properties_read_fences_loops_and_float64():
    """kernel_properties on hand-written SASS, PTX and TTGIR: a backward branch makes a loop, only the
    float64 instructions inside it count; ordered atomics and GPU fences count, relaxed ones do not."""
    from benchmarks import kernel_properties as kp
    sass = '\n'.join(f'        /*{address:04x}*/   {text} ;' for address, text in [
        (0x10, 'DADD R2, R2, R4'), (0x20, 'FFMA R1, R2, R3, R4'), (0x30, 'DFMA R4, R2, R2, R4'),
        (0x40, 'MUFU.RSQ64H R5, R3'), (0x50, '@P0 BRA 0x20'), (0x60, 'MEMBAR.ALL.GPU'),
        (0x70, 'REDG.E.ADD.F64.RN.STRONG.GPU desc[UR4][R2.64], R4'), (0x80, 'CCTL.IVALL'), (0x90, 'EXIT')])
    assert kp.fp64_in_loops(sass) == 2
    ptx = '\tatom.global.gpu.acq_rel.add.f64 %fd1, [%rd1], %fd2;\n\tred.relaxed.gpu.global.add.f32 [%rd2], %f1;\n'
    assert kp.fenced_atomics(ptx, sass) == 1 + 2
    ttgir = '\n'.join([
        '    %a = scf.for %i = %c0 to %n step %c1 iter_args(%x = %y) -> (i32) : i32 {',
        '      %b = ttg.async_wait %q {num = 2 : i32}',
        '      %c = ttg.memdesc_index %buf[%k] : !ttg.memdesc<3x64x32xf32, #shared> -> !ttg.memdesc<64x32xf32>',
        '      %d = tt.load %p, %m : tensor<64x32x!tt.ptr<f32>, #blocked>',
        '    }',
        '    %e = scf.for %i = %c0 to %n step %c1 : i32 {',
        '      %f = tt.load %p, %m : tensor<64x16x!tt.ptr<f32>, #blocked>',
        '    }'])
    assert kp.tile_loops(ttgir) == [dict(buffers=3, in_flight=2, synchronous=1),
                                    dict(buffers=0, in_flight=0, synchronous=1)]
