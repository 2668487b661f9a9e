"""Features of images: the output of the layer before the classifier (port of extract-features.lua).

    python pretrained/extract_features.py MODEL IMAGE...              one image per forward
    python pretrained/extract_features.py MODEL BATCH_SIZE DIRECTORY  the directory's images, sorted

Writes {'features': float32 [N, D], 'image_list': [N paths]} to features.pt (-o PATH to choose), and with
-npy also PATH's stem + .npy (the features) and + .txt (the paths, one per line).
"""
import os
import sys

if not __package__:  # run as a script: the project's packages live one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from datasets.imagenet import EXTENSIONS  # noqa: E402
from pretrained import cli, load  # noqa: E402
from support import (
    command,  # noqa: E402
    fileio,  # noqa: E402
)
from support.errors import GunnError  # noqa: E402


def parse(argv):
    parser = cli.Parser(prog='extract_features.py', description='Features of images (port of extract-features.lua)')
    cli.add_model_options(parser)
    parser.add_argument('inputs', nargs='+', metavar='IMAGE | BATCH_SIZE DIRECTORY')
    parser.add_argument('-o', dest='output', default='features.pt', help='output file (default: features.pt)')
    parser.add_argument('-npy', action='store_true', help='also write the features as .npy and the paths as .txt')
    return parser.parse_args(argv)


def _integer(text):
    try:
        return int(text)
    except ValueError:
        return None


def image_files(directory):
    """The image files directly in directory, sorted by name; other files and folders are skipped."""
    if os.path.isfile(directory):
        raise GunnError(f'{directory} is a file, not a folder of images')
    if not os.path.isdir(directory):
        raise GunnError(f'directory not found: {directory}')
    names = sorted(name for name in os.listdir(directory)
                   if name.lower().endswith(EXTENSIONS) and os.path.isfile(os.path.join(directory, name)))
    if not names:
        raise GunnError(f'no images ({", ".join(EXTENSIONS)}) in {directory}')
    return [os.path.join(directory, name) for name in names]


def extract(model, paths, transform, batch_size, device):
    """float32 [len(paths), D]: the network without its final nn.Linear, batch_size images at a time."""
    trunk = model[:-1]
    features = []
    for start in range(0, len(paths), batch_size):
        batch = load.load_images(paths[start:start + batch_size], transform).to(device)
        with torch.inference_mode():
            features.append(trunk(batch).float().cpu())
    return torch.cat(features)


def save(features, paths, output, npy):
    fileio.save_atomic({'features': features, 'image_list': paths}, output)
    written = [output]
    if npy:
        stem = os.path.splitext(output)[0]
        np.save(stem + '.npy', features.numpy())
        with open(stem + '.txt', 'w', encoding='utf-8') as f:
            f.writelines(path + '\n' for path in paths)
        written += [stem + '.npy', stem + '.txt']
    print(f'saved features to {", ".join(written)}')


def main(argv):
    args = parse(argv)
    cli.check_output(args.output)
    batch_size = _integer(args.inputs[0])
    if batch_size is None:  # a number first means batch mode, as in the Lua
        load.check_files([args.model, *args.inputs])
        paths, batch_size = args.inputs, 1
    elif len(args.inputs) != 2 or batch_size < 1:
        raise GunnError('batch mode takes MODEL BATCH_SIZE DIRECTORY with a BATCH_SIZE of at least 1')
    else:
        load.check_files([args.model])
        paths = image_files(args.inputs[1])
    model, _, dataset, _ = load.load_for_inference(args.model, args.netType, args.dataset)
    device = load.device()
    features = extract(model.to(device), paths, load.preprocess(dataset), batch_size, device)
    save(features, paths, args.output, args.npy)


if __name__ == '__main__':
    command.run(main, sys.argv[1:], 'extract_features.py')
