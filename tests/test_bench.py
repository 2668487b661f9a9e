"""bench.py's plumbing on the CPU (the timings themselves are the benchmark's job, not a test's)."""
import json

import bench


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
