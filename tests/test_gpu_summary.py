"""tools/gpu_summary.py on a made-up OUTDIR of tools/gpu_check.sh: tables and issue #10's verdicts."""
import json

from tools import gpu_summary


def bench_row(path, execution, batch, images_per_s, ratio, peak, precision='single'):
    return dict(path=path, exec=execution, precision=precision, layout='nchw', mode='train', batch=batch,
                ms_per_step=1000 * batch / images_per_s, images_per_s=images_per_s, ratio=ratio, peak_mb=peak)


def test_summary_reads_every_stage_and_judges_the_targets(tmp_path, capsys):
    (tmp_path / 'stages.tsv').write_text('env\tok\t3\t0\npytest-cuda\tstopped at 240s\t240\t124\n')
    header = dict(netType='gunn-15', dataset='cifar10', size=32, device='GPU X', torch='2.11',
                  baseline='plain,eager,single,nchw, at the same batch size and mode')
    rows = [bench_row('plain', 'eager', 64, 600.0, 1.0, 3000.0), bench_row('share', 'graph', 64, 5400.0, 9.0, 2900.0),
            bench_row('plain', 'eager', 256, 1800.0, 1.0, 12000.0), bench_row('share', 'graph', 256, 9000.0, 5.0, 9000.0),
            dict(bench_row('triton', 'graph', 64, 1, 1, 1), skipped='failed: boom')]
    (tmp_path / 'bench-gunn15-fp32.json').write_text(json.dumps(dict(header, results=rows)))
    for kernels, images_per_s in (('triton', 2000.0), ('triton2', 5000.0)):
        folder = tmp_path / f'main-epoch-{kernels}'
        folder.mkdir()
        (folder / 'log.csv').write_text('epoch,lr,train_loss,train_top1,train_top5,test_top1,test_top5,seconds,'
                                        f'images_per_s\n1,0.1,2.3,90,50,90,50,14.0,{images_per_s}\n')
        (folder / 'run.json').write_text(f'{{"options": "-cudaGraph true -kernels {kernels}", "images": 50000, '
                                         '"exit_code": 0, "process_seconds": 31}')
    (tmp_path / 'main-epoch-none').mkdir()  # a stage stopped before its epoch ended: no log.csv
    (tmp_path / 'profile.log').write_text('layers 240@32x32 batch 64 share: 9.1 ms\n== layers: 20 s\n\n'
                                          'GPU profile on GPU X (torch 2.11)\n\nkernel boundary in a graph:\n'
                                          '  PDL off    1 programs: 1.90 us per kernel\n')
    (tmp_path / 'pytest-cuda.log').write_text('tests/test_cuda.py::test_a PASSED [ 50%]\n'
                                              'tests/test_cuda.py::test_b FAILED [100%]\n')
    gpu_summary.main(str(tmp_path))
    text = capsys.readouterr().out
    assert 'pytest-cuda          stopped at 240s' in text and 'FAILED tests/test_cuda.py::test_b' in text
    assert 'skipped: failed: boom' in text
    assert '[main-epoch-triton] (options -cudaGraph true -kernels triton): 2000 img/s = 25.0 s of training' in text
    assert '10.0 s of training for 50,000 images' in text and 'took 31 s from start to exit (code 0)' in text
    assert 'GPU profile on GPU X (torch 2.11)\n\nkernel boundary in a graph:\n  PDL off    1 programs: 1.90 us' in text
    verdicts = {t['goal']: (t['verdict'], t['measured']) for t in json.loads((tmp_path / 'summary.json').read_text())['targets']}
    assert verdicts['gunn-15 batch 64 float32 >= 8x plain'] == (
        'met', '9.00x, 5400 img/s (share graph single nchw, peak 2900 MB vs plain 3000 MB)')
    assert verdicts['gunn-15 batch 256 float32 >= 10,000 img/s'][0] == 'NOT met'
    assert verdicts['gunn-18 batch 64 >= 3x plain'] == ('-', 'not measured')
    assert verdicts['CIFAR-10 epoch in main.py < 12 s'] == (
        'met', '10.0 s, 5000 img/s (options -cudaGraph true -kernels triton2)')
    assert verdicts['cuda tests pass'] == ('NOT met', '1 passed, 1 failed, 0 skipped')
