import argparse
import io
import os
import pickle
import random
import shutil
import subprocess
import tarfile
import types

import numpy as np
import pytest
import torch
from helpers import image_tree
from helpers import save_image as save

import datasets
import datasets.transforms as t
import opts
from datasets import N_CLASSES, cache, cifar, digits, imagenet
from golden.cases import load_case
from support.errors import GunnError


def options(tmp_path, dataset, data='', **extra):
    return opts.defaults(dataset=dataset, data=str(data), gen=str(tmp_path / 'gen'), **extra)


# ---- CIFAR files in the python-pickle format of the real archives ----

def py2_pickle(obj):
    """Like the real files: protocol 2, numpy arrays referenced through numpy.core (numpy 1.x)."""
    return pickle.dumps(obj, protocol=2).replace(b'numpy._core.multiarray', b'numpy.core.multiarray')


def cifar_files(name, n_train=7, n_val=4, val_data=None):
    """{file name: bytes} of a small copy of the CIFAR-10 or CIFAR-100 python version, and the expected
    (train data, train labels, val data, val labels, label names)."""
    variant = cifar.VARIANTS[name]
    n_classes = 10 if name == 'cifar10' else 100
    names = [f'class{k}' for k in range(n_classes)]
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    val = rng.integers(0, 256, (n_val, 3072), dtype=np.uint8) if val_data is None else val_data
    train_labels = [int(k) for k in rng.integers(0, n_classes, n_train)]
    val_labels = [int(k) for k in rng.integers(0, n_classes, len(val))]
    files = {}
    if name == 'cifar10':
        files['batches.meta'] = py2_pickle({'label_names': names, 'num_cases_per_batch': 2, 'num_vis': 3072})
        chunks = np.array_split(np.arange(n_train), 5)
        for k, rows in enumerate(chunks, 1):
            files[f'data_batch_{k}'] = py2_pickle({'batch_label': f'training batch {k} of 5', 'data': train[rows],
                                                   'labels': [train_labels[i] for i in rows]})
        files['test_batch'] = py2_pickle({'batch_label': 'testing batch 1 of 1', 'data': val, 'labels': val_labels})
    else:
        files['meta'] = py2_pickle({'fine_label_names': names, 'coarse_label_names': names[:20]})
        files['train'] = py2_pickle({'data': train, 'fine_labels': train_labels,
                                     'coarse_labels': [k // 5 for k in train_labels]})
        files['test'] = py2_pickle({'data': val, 'fine_labels': val_labels,
                                    'coarse_labels': [k // 5 for k in val_labels]})
    assert set(files) == {variant.meta_file, *variant.train_files, *variant.val_files}
    return files, (train.reshape(-1, 3, 32, 32), train_labels, val.reshape(-1, 3, 32, 32), val_labels, names)


def write_folder(folder, files):
    os.makedirs(folder)
    for name, content in files.items():
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(content)
    return folder


def write_archive(path, folder_name, files):
    with tarfile.open(path, 'w:gz') as tar:
        for name, content in files.items():
            member = tarfile.TarInfo(f'{folder_name}/{name}')
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    return path


def check_cifar(dataset_train, dataset_val, expected):
    train, train_labels, val, val_labels, names = expected
    assert torch.equal(dataset_train.data, torch.from_numpy(train))
    assert dataset_train.labels.dtype == torch.int64 and dataset_train.labels.tolist() == train_labels
    assert torch.equal(dataset_val.data, torch.from_numpy(val)) and dataset_val.labels.tolist() == val_labels
    assert dataset_train.classList == names
    sample = dataset_val.get(1)
    assert sample['input'].dtype == torch.float32 and torch.equal(sample['input'], torch.from_numpy(val[1]).float())
    assert sample['target'] == val_labels[1] and dataset_val.size() == len(val_labels)


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
@pytest.mark.parametrize('layout', ['archive', 'folder', 'dir_with_archive', 'dir_with_folder'])
def test_cifar_reads_a_local_copy(tmp_path, name, layout):
    variant = cifar.VARIANTS[name]
    files, expected = cifar_files(name)
    root = tmp_path / 'data'
    root.mkdir()
    if layout in ('archive', 'dir_with_archive'):
        write_archive(root / variant.archive, variant.folder, files)
    else:
        write_folder(root / variant.folder, files)
    data = {'archive': root / variant.archive, 'folder': root / variant.folder}.get(layout, root)
    opt = options(tmp_path, name, data)
    check_cifar(datasets.create(opt, 'train'), datasets.create(opt, 'val'), expected)
    info = torch.load(os.path.join(opt.gen, f'{name}.pt'), weights_only=True)
    assert info['basedir'] == str(data) and info['train']['data'].dtype == torch.uint8
    assert len(info['classList']) == N_CLASSES[name]


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_cifar_val_pipeline_matches_lua(tmp_path, name):
    meta, tensors = load_case('extras')
    raw = tensors['cifar_val/raw_uint8_as_int64'].astype(np.uint8).reshape(2, 3072)
    files, _ = cifar_files(name, val_data=raw)
    opt = options(tmp_path, name, write_folder(tmp_path / 'copy', files))
    val = datasets.create(opt, 'val')
    out = torch.stack([val.preprocess()(val.get(i)['input']) for i in range(2)])
    assert torch.equal(out, torch.from_numpy(tensors[f'{name}_val/normalized'].copy()))
    steps = datasets.create(opt, 'train').preprocess().transforms
    assert [type(s) for s in steps] == [t.ColorNormalize, t.HorizontalFlip, t.RandomCrop, t.Jigsaw]
    assert (steps[1].prob, steps[2].size, steps[2].padding) == (0.5, 32, 4)


def test_cache_is_written_reused_and_rebuilt_for_new_data(tmp_path, monkeypatch):
    files, expected = cifar_files('cifar10')
    first = str(write_folder(tmp_path / 'a' / 'cifar-10-batches-py', files))
    opt = options(tmp_path, 'cifar10', first)
    opt.gen = str(tmp_path / 'deep' / 'gen')  # created when missing
    calls = []
    real_gen = cifar.gen
    monkeypatch.setattr(cifar, 'gen', lambda o: calls.append(o.data) or real_gen(o))
    datasets.create(opt, 'train')
    cache = os.path.join(opt.gen, 'cifar10.pt')
    assert os.path.isfile(cache) and os.listdir(opt.gen) == ['cifar10.pt']  # no temp file left behind
    datasets.create(opt, 'val')
    assert calls == [first]
    # Another copy with other images: the recorded basedir differs, so the cache is rebuilt.
    files2, expected2 = cifar_files('cifar10', n_train=5)
    opt.data = str(write_folder(tmp_path / 'b' / 'cifar-10-batches-py', files2))
    check_cifar(datasets.create(opt, 'train'), datasets.create(opt, 'val'), expected2)
    assert calls == [first, opt.data]


def test_cifar_downloads_through_torchvision_without_a_local_copy(tmp_path, monkeypatch):
    import torchvision.datasets
    files, expected = cifar_files('cifar10')
    roots = []

    def fake_download(root, download):
        roots.append((root, download))
        write_folder(os.path.join(root, 'cifar-10-batches-py'), files)

    monkeypatch.setattr(torchvision.datasets, 'CIFAR10', fake_download)
    opt = options(tmp_path, 'cifar10')
    check_cifar(datasets.create(opt, 'train'), datasets.create(opt, 'val'), expected)
    assert roots == [(opt.gen, True)]

    # a -data folder without a copy is an error, not a reason to download
    with pytest.raises(GunnError, match='no CIFAR-10 copy at -data .*nothing-here'):
        datasets.create(options(tmp_path / 'other', 'cifar10', tmp_path / 'nothing-here'), 'train')

    def failing(root, download):
        raise RuntimeError('no internet')

    monkeypatch.setattr(torchvision.datasets, 'CIFAR100', failing)
    with pytest.raises(GunnError, match='CIFAR-100.*no internet'):
        datasets.create(options(tmp_path, 'cifar100'), 'train')


def test_cifar_bad_copies_give_one_line_errors(tmp_path):
    variant = cifar.VARIANTS['cifar10']
    files, _ = cifar_files('cifar10')
    broken = tmp_path / 'broken.tar.gz'
    broken.write_bytes(b'not a tar file')
    with pytest.raises(GunnError, match=r'broken.tar.gz is not a CIFAR-10 archive \(-data takes cifar-10-python.tar.gz, '
                                        r'its folder cifar-10-batches-py, or a folder holding either\)$'):
        datasets.create(options(tmp_path, 'cifar10', broken), 'train')
    whole = write_archive(tmp_path / 'whole.tar.gz', variant.folder, files).read_bytes()
    (tmp_path / 'cut.tar.gz').write_bytes(whole[:len(whole) // 2])
    with pytest.raises(GunnError, match=r'^cannot read the CIFAR-10 archive .*cut.tar.gz: damaged or truncated \('):
        datasets.create(options(tmp_path, 'cifar10', tmp_path / 'cut.tar.gz'), 'train')

    partial = dict(files)
    del partial['data_batch_3']
    archive = write_archive(tmp_path / 'partial.tar.gz', variant.folder, partial)
    with pytest.raises(GunnError, match='has no file cifar-10-batches-py/data_batch_3'):
        datasets.create(options(tmp_path, 'cifar10', archive), 'train')

    evil = dict(files, data_batch_2=b"cos\nsystem\n(S'touch pwned'\ntR.")
    folder = write_folder(tmp_path / 'evil', evil)
    with pytest.raises(GunnError, match=r'evil/data_batch_2.*os\.system') as error:
        datasets.create(options(tmp_path, 'cifar10', folder), 'train')
    assert '\n' not in str(error.value) and not os.path.exists('pwned')

    wrong = dict(files, test_batch=py2_pickle({'data': np.zeros((2, 100), np.uint8), 'labels': [0, 1]}))
    with pytest.raises(GunnError, match='test_batch is not a CIFAR-10 batch'):
        datasets.create(options(tmp_path, 'cifar10', write_folder(tmp_path / 'wrong', wrong)), 'train')


def test_unreadable_cache_and_unknown_dataset(tmp_path):
    opt = options(tmp_path, 'digits')
    os.makedirs(opt.gen)
    with open(os.path.join(opt.gen, 'digits.pt'), 'wb') as f:
        f.write(b'garbage')
    with pytest.raises(GunnError, match='digits.pt.*delete it'):
        datasets.create(opt, 'train')
    with pytest.raises(GunnError, match='unknown dataset'):
        datasets.create(argparse.Namespace(**{**vars(opt), 'dataset': 'mnist'}), 'train')


# ---- ImageNet-style folder tree ----


def test_imagenet_index_and_loading(tmp_path):
    pixels = image_tree(tmp_path / 'data')
    opt = options(tmp_path, 'imagenet', tmp_path / 'data')
    train, val = datasets.create(opt, 'train'), datasets.create(opt, 'val')
    assert train.classList == ['cat', 'dog'] and cache.load(imagenet, opt)['classList'] == ['cat', 'dog']
    assert [train.path(i)[len(train.dir) + 1:] for i in range(train.size())] == [
        'cat/c1.jpg', 'cat/c2.png', 'cat/png_named.jpg', 'dog/d1.JPEG']
    assert train.imageClass.tolist() == [0, 0, 0, 1] and val.imageClass.tolist() == [0, 1]
    sample = val.get(1)
    assert sample['target'] == 1 and sample['input'].dtype == torch.float32
    # image.load's rounding: k * float32(1/255), not k / 255
    assert torch.equal(sample['input'], torch.from_numpy(pixels).permute(2, 0, 1).float() * torch.tensor(1 / 255))
    gray = val.get(0)['input']
    assert gray.shape == (3, 5, 6) and torch.equal(gray[0], gray[2])
    assert torch.equal(train.get(2)['input'], train.get(1)['input'])  # the PNG named .jpg loads
    assert train.get(3)['input'].shape == (3, 40, 50)
    torch.manual_seed(0)
    assert train.preprocess()(train.get(3)['input']).shape == (3, 224, 224)
    assert val.preprocess()(val.get(1)['input']).shape == (3, 224, 224)
    opt.tenCrop = True
    assert datasets.create(opt, 'val').preprocess()(val.get(1)['input']).shape == (10, 3, 224, 224)
    # Moving the tree (another -data) rebuilds the index from the new place.
    shutil.move(tmp_path / 'data', tmp_path / 'moved')
    opt.data = str(tmp_path / 'moved')
    assert datasets.create(opt, 'train').path(0) == str(tmp_path / 'moved' / 'train' / 'cat' / 'c1.jpg')


def test_imagenet_val_pipeline_matches_lua(tmp_path):
    meta, tensors = load_case('extras')
    image_tree(tmp_path / 'data')
    val = datasets.create(options(tmp_path, 'imagenet', tmp_path / 'data'), 'val')
    c, y, x = np.ogrid[:3, :256, :257]  # meta['imagenet_val']['input_formula']
    assert meta['imagenet_val']['input_shape'] == [3, 256, 257]
    formula = torch.from_numpy((((c * 97 + y * 31 + x * 7) % 256) / 255).astype(np.float32))
    out = val.preprocess()(formula)
    assert torch.equal(out, torch.from_numpy(tensors['imagenet_val/output'].copy()))


def test_imagenet_errors(tmp_path):
    image_tree(tmp_path / 'data')
    (tmp_path / 'data' / 'train' / 'cat' / 'broken.jpg').write_bytes(b'\xff\xd8 truncated')
    train = datasets.create(options(tmp_path, 'imagenet', tmp_path / 'data'), 'train')
    broken = [i for i in range(train.size()) if train.path(i).endswith('broken.jpg')]
    with pytest.raises(GunnError, match='cannot read image .*broken.jpg') as error:
        train.get(broken[0])
    assert '\n' not in str(error.value)

    save(tmp_path / 'other' / 'train' / 'cat' / 'a.png', np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(GunnError, match='val directory not found: .*other/val'):
        datasets.create(options(tmp_path, 'imagenet', tmp_path / 'other'), 'train')
    os.makedirs(tmp_path / 'other' / 'val' / 'cat')
    (tmp_path / 'other' / 'val' / 'cat' / 'readme.txt').write_text('')
    with pytest.raises(GunnError, match='no images .* found in .*other/val'):
        datasets.create(options(tmp_path, 'imagenet', tmp_path / 'other'), 'train')
    save(tmp_path / 'other' / 'val' / 'bird' / 'b.png', np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(GunnError, match="bird/b.png: its folder 'bird' is not a class folder"):
        datasets.create(options(tmp_path, 'imagenet', tmp_path / 'other'), 'train')


def test_a_stale_imagenet_index_is_rebuilt(tmp_path, capsys):
    pixels = image_tree(tmp_path / 'data')
    opt = options(tmp_path, 'imagenet', tmp_path / 'data')
    assert datasets.create(opt, 'train').size() == 4
    index_file = cache.path(opt)
    # an image removed after the index was built: the folder changed, so the index is rebuilt
    os.remove(tmp_path / 'data' / 'train' / 'cat' / 'c2.png')
    capsys.readouterr()
    train = datasets.create(opt, 'train')
    assert train.size() == 3 and not any(train.path(i).endswith('c2.png') for i in range(train.size()))
    assert capsys.readouterr().out.startswith(f' | rebuilding {index_file}: {tmp_path / "data" / "train" / "cat"} '
                                              'changed since it was built\n')
    assert datasets.create(opt, 'val').size() == 2 and capsys.readouterr().out == ''  # up to date now
    # a change the folder times do not show (restored by hand): the missing file is named, with the remedy
    gone = tmp_path / 'data' / 'train' / 'dog' / 'd1.JPEG'
    times = os.stat(gone.parent)
    os.remove(gone)
    os.utime(gone.parent, ns=(times.st_atime_ns, times.st_mtime_ns))
    train = datasets.create(opt, 'train')
    index = [i for i in range(train.size()) if train.path(i) == str(gone)]
    with pytest.raises(GunnError, match=f'^{gone} is in the image index {index_file} but no longer exists: the data '
                                        f'changed since the index was built; the next run rebuilds it '
                                        rf'\(delete {index_file} to force this\)$'):
        train.get(index[0])
    # an index of an older version (no folder times) is rebuilt too
    info = torch.load(index_file, weights_only=True)
    del info['folderTimes']
    torch.save(info, index_file)
    save(gone, pixels)
    assert datasets.create(opt, 'train').size() == 3  # c1.jpg, png_named.jpg, d1.JPEG
    assert 'it was written by an older version' in capsys.readouterr().out


def find_listing(split_dir):
    """The images under split_dir in the order the Lua's imagenet-gen.lua reads them: its `find -L` command."""
    patterns = []
    for extension in ('jpg', 'png', 'jpeg', 'JPG', 'PNG', 'JPEG', 'ppm', 'PPM', 'bmp', 'BMP'):
        patterns += ['-o', '-iname', f'*.{extension}']
    out = subprocess.run(['find', '-L', str(split_dir), *patterns[1:]], capture_output=True, text=True, check=True)
    return [os.path.relpath(line, split_dir) for line in out.stdout.splitlines()]


def test_torch7_rng_lists_imagenet_images_in_find_order(tmp_path, capsys):
    data = tmp_path / 'data'
    names = [f'a{k:02d}.jpg' for k in range(40)] + ['notes.txt']
    random.Random(1).shuffle(names)
    for folder, count in (('train/cat', 41), ('train/dog', 5), ('val/cat', 3), ('val/dog', 3),
                          ('linked/bird', 4)):
        (data / folder).mkdir(parents=True)
        for name in names[:count]:
            (data / folder / name).write_bytes(b'')
        if folder == 'train/cat':  # a subfolder among the files: find descends into it where it meets it
            (data / folder / 'dog').mkdir()
            (data / folder / 'dog' / 'inner.png').write_bytes(b'')
    (data / 'train' / 'bird').symlink_to(data / 'linked' / 'bird')  # find -L follows it
    listed = os.listdir(data / 'train' / 'cat')
    if listed == sorted(listed):
        pytest.skip('this file system lists a folder sorted: find order and sorted order are the same')

    opt = options(tmp_path, 'imagenet', data, rng='torch7')
    for split in ('train', 'val'):
        dataset = datasets.create(opt, split)
        ours = [os.path.relpath(dataset.path(i), data / split) for i in range(dataset.size())]
        assert ours == find_listing(data / split)
        assert [dataset.classList[int(k)] for k in dataset.imageClass] == [p.split('/')[-2] for p in ours]
    assert ours != sorted(ours)

    opt.rng = 'pytorch'  # sorted order: the index is rebuilt
    capsys.readouterr()
    train = datasets.create(opt, 'train')
    assert 'it lists the images in find -L order, -rng pytorch reads them in sorted order' in capsys.readouterr().out
    ours = [os.path.relpath(train.path(i), data / 'train') for i in range(train.size())]
    assert ours == sorted(find_listing(data / 'train'))  # (no file name sorts after a folder name here)


# ---- digits ----

def test_digits(tmp_path):
    from sklearn.datasets import load_digits
    all_labels = torch.from_numpy(load_digits().target)
    opt = options(tmp_path, 'digits')
    train, val = datasets.create(opt, 'train'), datasets.create(opt, 'val')
    assert (train.size(), val.size()) == (1433, 364) and train.data.shape == (1433, 3, 32, 32)
    assert train.data.dtype == torch.uint8 and train.data.max() == 255
    assert torch.equal(train.data[:, 0], train.data[:, 2])
    assert train.classList == [str(k) for k in range(10)]
    assert torch.equal(torch.bincount(train.labels) + torch.bincount(val.labels), torch.bincount(all_labels))
    assert torch.equal(torch.bincount(val.labels), (torch.bincount(all_labels) + 4) // 5)  # every 5th of each class
    pixels = train.data.double()
    assert abs(pixels.mean() - digits.MEANSTD['mean'][0]) < 0.05 and abs(pixels.std() - digits.MEANSTD['std'][0]) < 0.05
    assert [type(s) for s in train.preprocess().transforms] == [t.ColorNormalize, t.RandomCrop]
    assert isinstance(val.preprocess(), t.ColorNormalize)
    sample = val.get(0)
    assert sample['input'].shape == (3, 32, 32) and sample['target'] == 0
    assert torch.load(cache.path(opt), weights_only=True)['basedir'] is None


def test_invalid_split():
    with pytest.raises(ValueError):
        datasets.create(types.SimpleNamespace(dataset='digits'), 'test')


def test_an_imagenet_folder_with_a_fifo_and_a_device_link_is_indexed_without_them(tmp_path, capsys):
    """A FIFO would block the loader for ever, a link to /dev/zero read until memory runs out: the index
    skips both with a warning naming them, and a read of either is one line, at once."""
    image_tree(tmp_path / 'data')
    cat = tmp_path / 'data' / 'train' / 'cat'
    os.mkfifo(cat / 'fifo.JPEG')
    os.symlink('/dev/zero', cat / 'zero.JPEG')
    train = datasets.create(options(tmp_path, 'imagenet', tmp_path / 'data'), 'train')
    assert train.size() == 4 and not any('fifo' in train.path(i) or 'zero' in train.path(i) for i in range(4))
    err = capsys.readouterr().err
    assert f'warning: skipping {cat / "fifo.JPEG"}: not a regular file (a FIFO)\n' in err
    assert f'warning: skipping {cat / "zero.JPEG"}: not a regular file (a character device)\n' in err
    for name, kind in (('fifo.JPEG', 'a FIFO'), ('zero.JPEG', 'a character device')):
        with pytest.raises(GunnError, match=rf'^cannot read image {cat / name}: not a regular file \({kind}\)$'):
            imagenet.load_image(str(cat / name))
