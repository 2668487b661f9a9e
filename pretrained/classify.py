"""Top classes of images (port of pretrained/classify.lua):

    python pretrained/classify.py MODEL IMAGE... [-top N] [-netType NAME] [-dataset NAME]

MODEL is one of our checkpoints (latest.pt, model_best.pt) or a Torch7 model of the original code (.t7).
Per image: 'Classes for<TAB>path', then N lines 'probability<TAB>label' (most likely first), then a
blank line, as the Lua prints them.
"""
import os
import sys

if not __package__:  # run as a script: the project's packages live one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pretrained import cli, load  # noqa: E402
from support import command  # noqa: E402
from support.errors import GunnError  # noqa: E402


def parse(argv):
    parser = cli.Parser(prog='classify.py', description='Top classes of images (port of classify.lua)')
    cli.add_model_options(parser)
    parser.add_argument('images', nargs='+', metavar='IMAGE')
    parser.add_argument('-top', type=int, default=5, help='classes shown per image (at most the class count)')
    return parser.parse_args(argv)


def main(argv):
    args = parse(argv)
    if args.top < 1:
        raise GunnError(f'-top must be at least 1, not {args.top}')
    load.check_files([args.model, *args.images])
    model, _, dataset, labels = load.load_for_inference(args.model, args.netType, args.dataset)
    images = load.load_images(args.images, load.preprocess(dataset))  # all of them first: bad files fail early
    device = load.device()
    model.to(device)
    top = min(args.top, len(labels))
    for path, image in zip(args.images, images):
        with torch.inference_mode():
            probabilities = model(image[None].to(device)).float().softmax(dim=1)[0]
        values, indexes = probabilities.topk(top)
        print('Classes for', path, sep='\t')
        for p, i in zip(values.tolist(), indexes.tolist()):
            print(f'{p:.14g}\t{labels[i]}')  # %.14g: how Lua prints a number
        print()


if __name__ == '__main__':
    command.run(main, sys.argv[1:], 'classify.py')
