"""BatchNorm that can stand for several GPUs of the original's DataParallelTable on one device (-bnSplit)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from support.slices import slice_sizes


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d that can normalise its input in ``splits`` slices, as ``splits`` GPUs did.

    The published runs used 4 GPUs under DataParallelTable: each GPU normalised its slice of the batch,
    kept its own running statistics (only the parameters were synchronised) and evaluated its slice of
    each test batch with them. With K splits (``set_splits``), the input is cut as DataParallelTable cut it
    (slices.slice_sizes); slice i is normalised alone and, in training, updates statistics set i; in
    evaluation it is normalised with set i. Set 0 is running_mean/running_var, the one the state_dict and
    so the checkpoints hold, as the original saved GPU 1's model; sets 1..K-1 are buffers outside the
    state_dict (``split_running_mean``/``_var``, one row per set), copied from set 0 when the split is set,
    as DataParallelTable copied GPU 1's module onto the others.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.set_splits(1)

    @property
    def splits(self):
        return 1 if self.split_running_mean is None else 1 + self.split_running_mean.size(0)

    def set_splits(self, splits):
        others = splits - 1
        for name, first in (('split_running_mean', self.running_mean), ('split_running_var', self.running_var)):
            self.register_buffer(name, first.repeat(others, 1) if others else None, persistent=False)

    def running_stats(self, i):
        """(running mean, running variance) of statistics set i."""
        if i == 0:
            return self.running_mean, self.running_var
        return self.split_running_mean[i - 1], self.split_running_var[i - 1]

    def slices(self, x):
        """(statistics set, slice of x) for each non-empty slice."""
        if self.splits == 1:
            return [(0, x)]
        parts = [(i, part) for i, part in enumerate(x.split(slice_sizes(x.size(0), self.splits))) if part.size(0)]
        return parts or [(0, x)]

    def forward(self, x):
        if self.splits == 1:
            return super().forward(x)
        if self.training:
            self.num_batches_tracked.add_(1)
        return torch.cat([F.batch_norm(part, *self.running_stats(i), self.weight, self.bias, self.training,
                                       self.momentum, self.eps) for i, part in self.slices(x)])


def set_bn_split(model, splits):
    for m in model.modules():
        if isinstance(m, BatchNorm2d):
            m.set_splits(splits)
