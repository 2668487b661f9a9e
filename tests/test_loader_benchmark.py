"""benchmarks/loader.py end to end at toy sizes: the three implementations side by side, each with its figures."""
import re

from benchmarks import loader


def test_the_loader_benchmark_prints_every_pipeline_for_every_implementation(capsys):
    assert loader.main(['-images', '4', '-rounds', '1']) == 0
    out = capsys.readouterr().out
    assert re.search(r'^now: the resize in datasets/bicubic\.c, (built|NOT built: .+); without C: ', out, re.M)
    header, *rows = out[out.index('pipeline'):].strip().splitlines()
    assert header.split() == ['pipeline', 'previous', 'without', 'C', 'now', 'ratio', 'without', 'C']
    figures = r'\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+\.\d\d)x\s+(\d+\.\d\d)x$'
    assert [re.match(r'(\w+ \w+)' + figures, row).group(1) for row in rows] == [
        'cifar10 train', 'cifar10 val', 'imagenet train', 'imagenet val']
    for row in rows:
        previous, torch_only, now, ratio, ratio_torch_only = re.search(figures, row).groups()
        assert int(previous) > 0
        assert abs(float(ratio) - int(now) / int(previous)) <= 0.02 * float(ratio) + 0.01  # (from unrounded figures)
        assert abs(float(ratio_torch_only) - int(torch_only) / int(previous)) <= 0.02 * float(ratio_torch_only) + 0.01
