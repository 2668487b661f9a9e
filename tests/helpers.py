"""What several test files share: options, small models and batches, saved runs, image folders, and the
comparisons of a fast GunnLayer path with the plain reference."""
import contextlib
import copy
import io
import os

import numpy as np
import torch
from PIL import Image

import checkpoints
import models
import opts
from dataloader import FixedBatches
from datasets.cifar import VARIANTS, CifarDataset
from models import GunnLayer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# main.py's quickest real run: the small network on the embedded digits
FAST = ['-netType', 'gunn-mini', '-dataset', 'digits', '-batchSize', '32', '-nThreads', '1']


def mini_opt(**overrides):
    """The options of a small run on the embedded digits (the CPU default of the tests)."""
    return opts.defaults(**{'netType': 'gunn-mini', 'dataset': 'digits', 'progress': 'lines', **overrides})


def loader_opt(**changes):
    """Options of a loader test: one process on the CPU, batches of 5, seed 5."""
    return opts.defaults(**{'gen': 'unused', 'manualSeed': 5, 'nThreads': 0, 'batchSize': 5, 'device': 'cpu', **changes})


def run_opt(save, **kw):
    """Options of a distributed test: float64 on the CPU, global batches of 8, checkpoints in save."""
    return mini_opt(**{'device': 'cpu', 'batchSize': 8, 'nEpochs': 10, 'precision': 'double', 'save': str(save), **kw})


def quiet(fn, *args):
    """(fn(*args), what it printed)."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = fn(*args)
    return result, out.getvalue()


# --- models and batches -----------------------------------------------------------------------------------

def mini(dtype=torch.float64, bnSplit=1, memory='share'):
    torch.manual_seed(0)
    model = models.create(mini_opt(optnet=memory == 'recompute', shareGradInput=memory == 'share')).to(dtype)
    models.batchnorm.set_bn_split(model, bnSplit)
    return model


def batches(sizes=(8, 8, 5), dtype=torch.float64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return FixedBatches([{'input': torch.randn(b, 3, 32, 32, generator=generator, dtype=dtype),
                          'target': torch.randint(0, 10, (b,), generator=generator), 'batchTotal': b} for b in sizes])


def rank_batches(rank, world_size):
    """Two global batches of 8 digit-sized images; each process gets its torch.tensor_split part."""
    generator = torch.Generator().manual_seed(7)
    parts = []
    for _ in range(2):
        x = torch.randn(8, 3, 32, 32, generator=generator, dtype=torch.float64)
        y = torch.randint(0, 10, (8,), generator=generator)
        parts.append({'input': x.tensor_split(world_size)[rank], 'target': y.tensor_split(world_size)[rank],
                      'batchTotal': 8})
    return FixedBatches(parts)


def assert_same_state(a, b, optimizers=None):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    if optimizers:
        for x, y in zip(*(o.state.values() for o in optimizers)):
            assert torch.equal(x['momentum_buffer'], y['momentum_buffer'])


def saved_run(tmp_path, epoch=3, best=(12.5, 1.0)):
    """A gunn-mini run's checkpoints in tmp_path after one SGD step: (options, model, optimizer)."""
    opt = mini_opt(save=str(tmp_path), cudnn='default')
    model = models.create(opt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    checkpoints.save(epoch, model, optimizer.state_dict(), True, opt, run_state(*best, epoch))
    return opt, model, optimizer


def run_state(top1, top5, best_epoch=1, world_size=1):
    """What main.py keeps in latest.pt besides the model and the optimizer, for a run whose best epoch is
    best_epoch."""
    return {'bestTop1': top1, 'bestTop5': top5, 'bestEpoch': best_epoch, 'history': [], 'worldSize': world_size,
            'scaler': {}, 'rng': None}


# --- data ---------------------------------------------------------------------------------------------------

class TinyLoader(FixedBatches):
    """A few random digit-sized batches behind the DataLoader interface main.run uses; Ctrl-C in epoch `stop`."""
    classList = [str(c) for c in range(10)]

    def __init__(self, batches, stop=None):
        super().__init__(batches)
        self.stop = stop

    def numImages(self):
        return sum(len(b['target']) for b in self.batches)

    def run(self, epoch):
        if epoch == self.stop:
            raise KeyboardInterrupt
        yield from super().run(epoch)


def tiny_batches(seed, n):
    generator = torch.Generator().manual_seed(seed)
    return [{'input': torch.randn(8, 3, 32, 32, generator=generator), 'batchTotal': 8,
             'target': torch.randint(0, 10, (8,), generator=generator)} for _ in range(n)]


def tiny_loaders(monkeypatch, stop=None):
    """main.run's data: three random digit-sized training batches of 8 images and one test batch, Ctrl-C at
    the start of epoch `stop`."""
    import main
    monkeypatch.setattr(main.DataLoader, 'create', lambda opt, rank, world_size, streams=None: (
        TinyLoader(tiny_batches(1, 3), stop), TinyLoader(tiny_batches(2, 1))))


def cifar_like(split, n=23):
    """The real CIFAR dataset class (with its augmentation) on random images; label i = image i."""
    generator = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    info = {'classList': [str(i) for i in range(n)], split: {'data': data, 'labels': torch.arange(n)}}
    return CifarDataset(info, split, VARIANTS['cifar10'].meanstd)


def save_image(path, array, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def image_tree(root):
    """train/ and val/ with JPEG and PNG files; returns the PNG pixels of val/dog/b.png."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    save_image(root / 'train' / 'dog' / 'd1.JPEG', rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    save_image(root / 'train' / 'dog' / 'sub' / 'nested.png', pixels)  # class = parent folder: 'sub' is unknown
    os.remove(root / 'train' / 'dog' / 'sub' / 'nested.png')
    save_image(root / 'train' / 'cat' / 'c1.jpg', rng.integers(0, 256, (30, 20, 3), dtype=np.uint8))
    save_image(root / 'train' / 'cat' / 'c2.png', pixels)
    save_image(root / 'train' / 'cat' / 'png_named.jpg', pixels, fmt='PNG')  # extension does not match the format
    (root / 'train' / 'cat' / 'notes.txt').write_text('not an image')
    (root / 'train' / '.DS_Store').write_text('')
    save_image(root / 'val' / 'dog' / 'b.png', pixels)
    save_image(root / 'val' / 'cat' / 'a.bmp', pixels[:, :, 0])  # grayscale
    return pixels


# --- a GunnLayer path against the plain reference -----------------------------------------------------------

def run(layer, x, grad_out):
    x = x.clone().requires_grad_()
    out = layer(x)
    out.backward(grad_out)
    return out, x.grad, [p.grad.clone() for p in layer.parameters()]


def randomised(layer):
    """Non-trivial BN parameters and running statistics, so every term of the backward matters."""
    with torch.no_grad():
        for m in layer.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return layer


def pair(seed, channels, segments, dataset='cifar10', memory='share', dtype=torch.float64, device='cpu',
         kernels='aten'):
    """(plain reference layer, the same layer on the path of `memory` and `kernels`)."""
    torch.manual_seed(seed)
    reference = randomised(GunnLayer(channels, segments, dataset, 'plain')).to(device, dtype)
    fast = copy.deepcopy(reference)
    fast.memory, fast.kernels = memory, kernels
    return reference, fast


def assert_same_run(reference, fast, x, g):
    out_r, gx_r, gp_r = run(reference, x, g)
    out_f, gx_f, gp_f = run(fast, x, g)
    torch.testing.assert_close(out_f, out_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx_f, gx_r, rtol=1e-11, atol=1e-11)
    for a, b in zip(gp_f, gp_r):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)
    for a, b in zip(fast.buffers(), reference.buffers()):  # running stats and num_batches_tracked
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-16)
    return out_r


# --- the fused Triton path ----------------------------------------------------------------------------------

FUSED_KERNELS = ('triton', 'triton2')  # the versions of the fused path


def fused_pair(seed, channels, segments, dataset='cifar10', memory='share', dtype=torch.float64, device='cpu',
               kernels='triton'):
    """(plain reference layer, the same layer on the fused path of version `kernels`)."""
    return pair(seed, channels, segments, dataset, memory, dtype, device, kernels=kernels)


def ran_fused(layer, x):
    """The layer's output, checking that the fused kernels (not the aten fallback) computed it."""
    from models.fused import layer as fused
    assert fused.unusable_reason(layer, x) is None
    return layer(x)


def relative_error(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


def assert_float32_as_close_as_plain(reference, fast, x, g, floor=1e-6):
    """float32 has no exact answer to compare with; the float64 run of the same layer is the truth. The
    fused float32 run must be as close to it as the plain float32 run is, within a factor 4 (the kernels
    sum in another order and form the variance as E[x^2] - mean^2 from float64 sums; measured on the CPU:
    at most 3.1x on tensors the plain path gets to 1e-7, 1.4x on the others; a real bug is off by far
    more), or within `floor` (1e-6 for tensors the plain path happens to get nearly exact)."""
    from models.fused import layer as fused
    truth = run(reference, x, g)
    plain32, fast32 = copy.deepcopy(reference).float(), copy.deepcopy(fast).float()
    assert fused.unusable_reason(fast32, x.float()) is None
    (out_p, gx_p, gp_p), (out_f, gx_f, gp_f) = (run(layer, x.float(), g.float()) for layer in (plain32, fast32))
    compared = [(out_f, out_p, truth[0]), (gx_f, gx_p, truth[1])] + list(zip(gp_f, gp_p, truth[2]))
    compared += [t for t in zip(fast32.buffers(), plain32.buffers(), reference.buffers()) if t[2].is_floating_point()]
    for ours, plain, exact in compared:
        assert relative_error(ours, exact) <= max(4 * relative_error(plain, exact), floor)
