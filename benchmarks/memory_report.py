"""What autograd keeps for the backward pass of one GunnLayer, per memory option: python -m benchmarks.memory_report

Counts the bytes of every tensor storage that autograd saves (torch.autograd.graph.saved_tensors_hooks,
each storage once), for gunn-15's first GunnLayer (240 channels, 20 segments, 32x32) unless told otherwise.
"""
import argparse

import torch

from models import GunnLayer
from models.gunn_layer import MEMORY_MODES


def saved_bytes(module, x):
    """Bytes of the distinct storages autograd saves for module(x)'s backward."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[(s.data_ptr(), s.device)] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(storages.values())


def measure(channels=240, segments=20, size=32, batch=4, dataset='cifar10'):
    """{mode: (bytes, channel-planes per image)} for one GunnLayer in training mode."""
    results = {}
    for mode in MEMORY_MODES:
        torch.manual_seed(0)
        layer = GunnLayer(channels, segments, dataset, mode)
        x = torch.randn(batch, channels, size, size, requires_grad=True)
        nbytes = saved_bytes(layer, x)
        results[mode] = (nbytes, nbytes / (batch * size * size * x.element_size()))
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--channels', type=int, default=240)
    p.add_argument('--segments', type=int, default=20)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--batch', type=int, default=4)
    args = p.parse_args()
    results = measure(args.channels, args.segments, args.size, args.batch)
    plain = results['plain'][0]
    print(f'GunnLayer({args.channels}, {args.segments}), {args.batch}x{args.channels}x{args.size}x{args.size} float32')
    print(f'{"mode":<10} {"option":<22} {"saved MB":>9} {"planes/image":>13} {"vs plain":>9}')
    options = {'plain': '-shareGradInput false', 'share': '-shareGradInput true', 'recompute': '-optnet true'}
    for mode, (nbytes, planes) in results.items():
        print(f'{mode:<10} {options[mode]:<22} {nbytes / 2**20:9.1f} {planes:13.0f} {nbytes / plain:9.3f}')


if __name__ == '__main__':
    main()
