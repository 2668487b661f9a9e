"""BatchNorm that can emulate the original's per-GPU statistics on fewer devices (-bnSplit)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training batch may be normalised in ``splits`` separate chunks.

    The published runs used 4 GPUs under DataParallelTable, each normalising its quarter of the batch.
    ``splits = K`` reproduces that on one device: the batch is cut as the data loader cuts a batch across
    K processes (torch.tensor_split), each chunk uses its own statistics, and only the first chunk updates
    the running statistics — what DistributedDataParallel's broadcast of rank 0's buffers leaves behind.
    """
    splits = 1

    def chunks(self, x):
        if not self.training or self.splits == 1:
            return [x]
        return [c for c in x.tensor_split(self.splits) if c.size(0)]

    def forward(self, x):
        parts = self.chunks(x)
        if len(parts) == 1:
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        return torch.cat([F.batch_norm(c, *((self.running_mean, self.running_var) if i == 0 else (None, None)),
                                       self.weight, self.bias, True, self.momentum, self.eps)
                          for i, c in enumerate(parts)])


def set_bn_split(model, splits):
    for m in model.modules():
        if isinstance(m, BatchNorm2d):
            m.splits = splits
