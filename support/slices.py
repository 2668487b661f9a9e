"""How a batch is cut over GPUs (the original's DataParallelTable), shared by the data loader, the
BatchNorm of -bnSplit and the fused kernels."""
import math


def slice_sizes(n, parts):
    """Rows of each of ``parts`` slices of a batch of n rows, as DataParallelTable cut its input over GPUs
    (its sliceRange): slice i (0-based) starts at row ceil(i * (n / parts)), in floating point as the Lua
    computes it, and the last one takes the rest. E.g. 10 rows over 4: 3, 2, 3, 2 (torch.tensor_split: 3,
    3, 2, 2). With fewer rows than parts some slices are empty (DataParallelTable then dropped the rows
    after the first empty slice; here every row stays in its slice)."""
    per = n / parts
    starts = [math.ceil(i * per) for i in range(parts)] + [n]
    return [end - start for start, end in zip(starts, starts[1:])]
