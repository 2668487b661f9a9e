"""A trained network in eval mode as ONNX, with a dynamic batch dimension:

    python pretrained/export_onnx.py MODEL OUT.onnx [-netType NAME] [-dataset NAME]

Input 'images' [batch, 3, S, S] (S = 224 for ImageNet, 32 otherwise, preprocessed as classify.py does),
output 'logits' [batch, classes]. Needs the onnx and onnxscript packages. Where onnxruntime is installed,
the file is run on a random batch and its logits compared with PyTorch's; a difference above the
tolerance is an error.
"""
import os
import sys

if not __package__:  # run as a script: the project's packages live one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import models  # noqa: E402
from pretrained import cli, load  # noqa: E402
from support import command, optional  # noqa: E402
from support.errors import GunnError  # noqa: E402

# Relative to the largest logit (at least 1): two float32 runtimes sum in different orders, ~1e-6 apart.
TOLERANCE = 1e-4


def export(model, size, output):
    """Write model (CPU, eval mode) to output; the example batch of 2 only fixes the other dimensions."""
    for layer in models.gunn_layers(model):
        layer.memory = 'plain'  # ordinary ops instead of the custom autograd Function: the simplest to trace
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(model, (example,), output, input_names=['images'], output_names=['logits'],
                      dynamic_shapes=({0: torch.export.Dim('batch')},), dynamo=True, verbose=False)


def max_difference(model, size, output, batch=3):
    """(max |onnxruntime - PyTorch| of the logits, largest |logit|) on a random batch whose size differs
    from the exported example's, which also checks that the batch dimension is dynamic."""
    import onnxruntime

    session = onnxruntime.InferenceSession(output, providers=['CPUExecutionProvider'])
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = model(x)
    theirs = torch.from_numpy(session.run(None, {'images': x.numpy()})[0])
    return (theirs - ours).abs().max().item(), ours.abs().max().item()


def main(argv):
    parser = cli.Parser(prog='export_onnx.py', description='Trained network -> ONNX (dynamic batch)')
    cli.add_model_options(parser)
    parser.add_argument('output', metavar='OUT.onnx')
    args = parser.parse_args(argv)
    for package in ('onnx', 'onnxscript'):
        optional.require(package, 'exporting to ONNX')
    load.check_files([args.model])
    cli.check_output(args.output)
    model, netType, dataset, _ = load.load_for_inference(args.model, args.netType, args.dataset)
    size = load.input_size(dataset)
    export(model, size, args.output)
    print(f'exported {netType} ({dataset}) to {args.output}: images [batch, 3, {size}, {size}] -> logits')
    if not optional.available('onnxruntime'):
        print('onnxruntime is not installed: the exported file was not run')
        return
    difference, scale = max_difference(model, size, args.output)
    tolerance = TOLERANCE * max(scale, 1.0)
    print(f'onnxruntime vs PyTorch: max abs difference of the logits {difference:.3g} '
          f'(largest logit {scale:.3g}, tolerance {tolerance:.3g})')
    if not difference <= tolerance:  # also catches NaN
        raise GunnError(f'the ONNX model disagrees with PyTorch: max abs difference {difference:.3g} > {tolerance:.3g}')


if __name__ == '__main__':
    command.run(main, sys.argv[1:], 'export_onnx.py')
