"""Per-iteration figures (loss and errors) that stay on the device and reach the host one iteration late.

Reading a CUDA tensor on the host (.item(), .tolist()) waits until the GPU has run everything queued before
it; done every iteration, it leaves the GPU idle while the host loads and queues the next batch. Here the
figures of iteration n are copied to the host without waiting, and read once iteration n+1 is queued: the
wait then ends when iteration n is done, while the GPU already works on n+1.
"""
import torch


class OneLate:
    def __init__(self, device):
        self.cuda = device.type == 'cuda'
        self.pending = None  # (info, host copy, event) of the last push

    def push(self, info, *tensors):
        """Start copying the 1-d tensors (concatenated) to the host; returns (info, values) of the previous
        push, or None. ``info`` is anything the caller wants back with the values (iteration number, times)."""
        values = torch.cat(tensors)  # a new tensor: later in-place updates of the inputs do not reach it
        event = None
        if self.cuda:
            values = values.to('cpu', non_blocking=True)  # into pinned memory, asynchronously
            event = torch.cuda.Event()
            event.record()
        previous = self.flush()
        self.pending = (info, values, event)
        return previous

    def flush(self):
        """(info, values as a list of floats) of the last push, waiting for its copy; None if nothing is pending."""
        if self.pending is None:
            return None
        info, values, event = self.pending
        self.pending = None
        if event is not None:
            event.synchronize()
        return info, values.tolist()
