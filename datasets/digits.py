"""scikit-learn's bundled handwritten digits as a small CIFAR-shaped dataset (not in the Lua).

It needs no download, so training and the tests run offline. The 1797 8x8 images (values 0..16) are
scaled to 0..255, upsampled x4 bilinearly to 32x32, replicated to 3 channels and stored as uint8 like
CIFAR. The val split is every 5th image of each class (the 1st, 6th, ... in the bundled order: 364 images),
the train split the other 1433.
"""
import torch
import torch.nn.functional as F

from datasets import transforms as t
from datasets.cifar import CifarDataset
from support import optional

# Per-channel mean/std of the train split (0..255 scale), computed once from the cache content.
MEANSTD = {'mean': (77.9, 77.9, 77.9), 'std': (82.6, 82.6, 82.6)}


def gen(opt):
    # slow to import; only needed to build the cache
    load_digits = optional.require('sklearn.datasets', 'the digits data set', 'scikit-learn').load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().mul(255 / 16).unsqueeze(1)
    x = F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False)
    x = x.round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(digits.target).long()
    val = torch.zeros(len(y), dtype=torch.bool)
    for k in range(10):
        val[(y == k).nonzero().flatten()[::5]] = True
    return {'basedir': None, 'classList': [str(k) for k in range(10)],
            'train': {'data': x[~val], 'labels': y[~val]},
            'val': {'data': x[val], 'labels': y[val]}}


class DigitsDataset(CifarDataset):
    def augmentation(self):
        # No flips or jigsaw shifts: digits are neither mirror- nor shift-symmetric.
        return [t.RandomCrop(32, 4)]


def Dataset(info, opt, split):
    return DigitsDataset(info, split, MEANSTD)
