"""ImageNet, or any folder tree laid out like it (port of datasets/imagenet-gen.lua and imagenet.lua).

``<data>/train/<class>/...`` and ``<data>/val/<class>/...``. The classes are the sorted folder names of
train/; an image's class is the name of the folder it sits in. The cache holds, per split, the image
paths relative to the split folder (uint8 [N, L], zero padded, like the Lua CharTensor: one tensor
instead of a million Python strings, which DataLoader workers would otherwise copy page by page) and
their 0-based classes; and the modification time of every folder it lists, so that an index whose folders
have changed since (images added, removed or renamed) is found out of date and rebuilt. The images are in
sorted order, or under -rng torch7 in the order the Lua reads them (`find -L`, see _find_order_files), so
that image i is the Lua's image i; the cache records which, and switching -rng rebuilds it.
"""
import os
import stat
import sys

import numpy as np
import torch

from datasets import bicubic, cache
from datasets import transforms as t
from datasets.decode import file_kind, load_image
from support.errors import GunnError

# The Lua `find -iname` patterns, compared case-insensitively.
EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp')

# Computed by fb.resnet.torch from a random subset of the ImageNet training images (0..1 scale).
MEANSTD = {'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)}
PCA = {
    'eigval': (0.2175, 0.0188, 0.0045),
    'eigvec': ((-0.5675, 0.7192, 0.4009),
               (-0.5808, -0.0045, -0.8140),
               (-0.5836, -0.6948, 0.4203)),
}


def _find_classes(train_dir):
    # Folders only: the Lua would also turn a stray file in train/ into a class without images.
    return sorted(name for name in os.listdir(train_dir)
                  if name not in ('.', '..', '.DS_Store') and os.path.isdir(os.path.join(train_dir, name)))


def _sorted_files(split_dir, folders):
    """(folder, name) of every file under split_dir, following symbolic links: per folder its files sorted,
    then its subfolders, sorted. Records each folder's modification time in folders."""
    for folder, subfolders, files in os.walk(split_dir, followlinks=True):
        folders[folder] = os.stat(folder).st_mtime_ns
        subfolders.sort()
        for name in sorted(files):
            yield folder, name


def _find_order_files(folder, folders):
    """(folder, name) of every file under folder as `find -L` lists them, which is the order of the Lua's
    imagenet-gen.lua: depth first, each folder's entries in directory-entry order (what readdir gives: on
    most file systems not sorted), following symbolic links. Records each folder's modification time."""
    folders[folder] = os.stat(folder).st_mtime_ns
    with os.scandir(folder) as scan:
        entries = list(scan)
    for entry in entries:
        if entry.is_dir():  # through a symbolic link too, as find -L
            yield from _find_order_files(entry.path, folders)
        else:
            yield folder, entry.name


# image order -> the walk that lists the files in it
ORDERS = {'sorted': _sorted_files, 'find -L': _find_order_files}


def image_order(opt):
    return 'find -L' if opt.rng == 'torch7' else 'sorted'


def _regular_file(path):
    """Whether path is a regular file after following links; a warning names anything else (a FIFO would
    block the loader, a link to a device never end)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        print(f'warning: skipping {path}: {e.strerror}', file=sys.stderr)
        return False
    if stat.S_ISREG(mode):
        return True
    print(f'warning: skipping {path}: not a regular file ({file_kind(mode)})', file=sys.stderr)
    return False


def _find_images(split_dir, class_index, train_dir, folders, order):
    """(paths uint8 [N, L], classes int64 [N]) of the images under split_dir, in the given order (ORDERS).
    Records each folder's modification time in folders."""
    paths, classes = [], []
    for folder, name in ORDERS[order](split_dir, folders):
        if not name.lower().endswith(EXTENSIONS):
            continue
        full = os.path.join(folder, name)
        if not _regular_file(full):
            continue
        class_name = os.path.basename(folder)
        if class_name not in class_index:
            raise GunnError(f'{full}: its folder {class_name!r} is not a class folder of {train_dir}')
        paths.append(os.fsencode(os.path.relpath(full, split_dir)))
        classes.append(class_index[class_name])
    if not paths:
        raise GunnError(f'no images ({", ".join(EXTENSIONS)}) found in {split_dir}')
    table = np.zeros((len(paths), max(map(len, paths)) + 1), dtype=np.uint8)
    for row, path in zip(table, paths):
        row[:len(path)] = np.frombuffer(path, dtype=np.uint8)
    return torch.from_numpy(table), torch.tensor(classes, dtype=torch.int64)


def gen(opt):
    train_dir, val_dir = os.path.join(opt.data, 'train'), os.path.join(opt.data, 'val')
    for folder in (train_dir, val_dir):
        if not os.path.isdir(folder):
            raise GunnError(f'{os.path.basename(folder)} directory not found: {folder}')
    print(f'=> Generating the list of images under {opt.data}')
    classes = _find_classes(train_dir)
    class_index = {name: k for k, name in enumerate(classes)}
    folders = {}
    info = {'basedir': opt.data, 'classList': classes, 'imageOrder': image_order(opt)}
    for split, folder in (('val', val_dir), ('train', train_dir)):
        print(f' | finding all {split} images')
        paths, labels = _find_images(folder, class_index, train_dir, folders, info['imageOrder'])
        info[split] = {'imagePath': paths, 'imageClass': labels}
    info['folderTimes'] = {os.path.relpath(folder, opt.data): time for folder, time in folders.items()}
    return info


def changed(info, opt):
    """Why the index no longer matches the folders under opt.data (a folder changed since it was built) or
    opt.rng (another image order), or None."""
    if 'folderTimes' not in info or 'imageOrder' not in info:
        return 'it was written by an older version'
    if info['imageOrder'] != image_order(opt):
        return (f'it lists the images in {info["imageOrder"]} order, -rng {opt.rng} reads them in '
                f'{image_order(opt)} order')
    for folder, time in info['folderTimes'].items():
        try:
            if os.stat(os.path.join(opt.data, folder)).st_mtime_ns != time:
                return f'{os.path.join(opt.data, folder)} changed since it was built'
        except OSError:
            return f'{os.path.join(opt.data, folder)} is gone'
    return None


class ImagenetDataset:
    def __init__(self, info, opt, split):
        self.imagePath = info[split]['imagePath']
        self.imageClass = info[split]['imageClass']
        self.classList = info['classList']
        self.split = split
        self.tenCrop = opt.tenCrop
        self.dir = os.path.join(opt.data, split)
        self.index = cache.path(opt)
        if not os.path.isdir(self.dir):
            raise GunnError(f'directory does not exist: {self.dir}')
        bicubic.prepare()

    def path(self, i):
        """Full path of image i (0-based)."""
        relative = self.imagePath[i].numpy().tobytes().rstrip(b'\0')
        return os.path.join(self.dir, os.fsdecode(relative))

    def get(self, i):
        path = self.path(i)
        try:
            image = load_image(path)
        except GunnError:
            if os.path.lexists(path):
                raise
            raise GunnError(f'{path} is in the image index {self.index} but no longer exists: the data changed '
                            f'since the index was built; the next run rebuilds it (delete {self.index} to force this)') from None
        return {'input': image, 'target': int(self.imageClass[i])}

    def size(self):
        return self.imageClass.shape[0]

    def preprocess(self):
        if self.split == 'train':
            return t.Compose([
                t.RandomSizedCrop(224),
                t.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
                t.Lighting(0.1, PCA['eigval'], PCA['eigvec']),
                t.ColorNormalize(MEANSTD),
                t.HorizontalFlip(0.5),
            ])
        if self.tenCrop:
            return t.Compose([t.Scale(256), t.ColorNormalize(MEANSTD), t.TenCrop(224)])
        # The Lua's Scale(256), ColorNormalize, CenterCrop(224): the normalisation is per pixel, so
        # cropping first gives the same numbers, and the resize computes only the pixels kept.
        return t.Compose([t.ScaleCenterCrop(256, 224), t.ColorNormalize(MEANSTD)])


Dataset = ImagenetDataset
