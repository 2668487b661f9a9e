"""Whole-step CUDA graph (-cudaGraph true): one training step captured once, replayed for every full batch.

A GUNN training step is thousands of small kernels (gunn-15: 75 segments of about 20 kernels each, forward and
backward); at batch 64 on a large GPU, launching them one by one from Python costs more than running them. A
replayed graph launches them all at once. The step itself is Trainer.step, the function that also runs
without graphs (and in the CPU tests); this layer only adds what capture needs:

* static input and target buffers, into which each full batch is copied before a replay;
* a few eager warm-up steps on a side stream first (cudnn's algorithm search, the momentum buffers and the
  other lazy initialisations must not happen during capture);
* a batch of another shape (the last, partial one of an epoch) runs eagerly, outside the graph;
* torch.optim.SGD reads the learning rate as a host number, which capture freezes into the graph: the
  trainer calls ``release()`` when the rate changes and the next full batch captures the step again (twice
  in a CIFAR run). A learning rate kept in a device tensor would avoid that, but SGD's foreach update then
  reads it back to the host every step, and its fused update rounds differently from the foreach update
  that the eager path and the parity tests use; recapturing keeps the graph and the eager step identical.
"""
import contextlib

import torch


class CudaGraph:
    """torch.cuda.CUDAGraph behind the two calls GraphedStep makes (the CPU tests substitute a stand-in)."""

    def __init__(self, stream):
        self.graph, self.stream, self.outputs = torch.cuda.CUDAGraph(), stream, None

    def capture(self, fn):
        """Record fn's kernels without running them; its outputs become the graph's static outputs."""
        # thread_local: the DataLoader's pin-memory thread may call CUDA while this thread captures
        with torch.cuda.graph(self.graph, stream=self.stream, capture_error_mode='thread_local'):
            self.outputs = fn()

    def replay(self):
        self.graph.replay()
        return self.outputs


class GraphedStep:
    """Calls step(input, target, weight) as a replayed CUDA graph where it can, eagerly otherwise.

    The values it returns for a replayed step are the graph's static outputs: use them (or queue work on
    them) before the next call, which overwrites them."""

    def __init__(self, step, optimizer, device, warmup=3, graph=CudaGraph):
        self.step, self.optimizer, self.makeGraph = step, optimizer, graph
        self.warmupLeft = warmup
        self.stream = torch.cuda.Stream(device) if device.type == 'cuda' else None
        self.signature = None  # (input shape, input dtype, input strides, target shape) of the captured batches
        self.graph = None
        self.staticInput = self.staticTarget = None

    def __call__(self, input, target, weight=1.0):
        signature = (input.shape, input.dtype, input.stride(), target.shape)
        self.signature = self.signature or signature
        if signature != self.signature or weight != 1.0:
            return self.step(input, target, weight)  # e.g. the last, partial batch: outside the graph
        if self.warmupLeft > 0:
            self.warmupLeft -= 1
            with self._side_stream():
                return self.step(input, target)
        if self.graph is None:
            self._capture(input, target)
        self.staticInput.copy_(input)
        self.staticTarget.copy_(target)
        return self.graph.replay()

    def release(self):
        """Forget the captured step (the learning rate changed); the next full batch captures it again."""
        self.graph = None

    def _capture(self, input, target):
        if self.staticInput is None:
            self.staticInput, self.staticTarget = torch.empty_like(input), torch.empty_like(target)
        # gradients allocated inside the capture live in the graph's memory pool, at fixed addresses
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = self.makeGraph(self.stream)
        self.graph.capture(lambda: self.step(self.staticInput, self.staticTarget))

    @contextlib.contextmanager
    def _side_stream(self):
        if self.stream is None:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            yield
        torch.cuda.current_stream().wait_stream(self.stream)
