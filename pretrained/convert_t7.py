"""Torch7 model of the original code -> our checkpoint format:

    python pretrained/convert_t7.py IN.t7 OUT.pt [-netType NAME] [-dataset NAME]

-netType/-dataset default to what the file's structure and classifier size identify. OUT.pt holds
{'netType', 'dataset', 'model' (state_dict), 'epoch': 0, 'source': IN.t7} and loads like model_best.pt.
"""
import os
import sys

if not __package__:  # run as a script: the project's packages live one folder up
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pretrained import cli, load  # noqa: E402
from support import (
    command,  # noqa: E402
    fileio,  # noqa: E402
)
from support.errors import GunnError  # noqa: E402


def main(argv):
    parser = cli.Parser(prog='convert_t7.py', description='Torch7 model (.t7) -> our checkpoint (.pt)')
    cli.add_model_options(parser, metavar='IN.t7')
    parser.add_argument('output', metavar='OUT.pt')
    args = parser.parse_args(argv)
    fileio.require_file(args.model, 'model file')
    if not args.model.endswith('.t7'):
        raise GunnError(f'{args.model} is not a Torch7 file (.t7)')
    cli.check_output(args.output)
    model, netType, dataset, _ = load.load_for_inference(args.model, args.netType, args.dataset)
    fileio.save_atomic({'netType': netType, 'dataset': dataset, 'model': model.state_dict(), 'epoch': 0,
                             'source': args.model}, args.output)
    print(f'{args.model}: {netType} for {dataset}, {sum(p.numel() for p in model.parameters())} parameters; '
          f'saved {args.output}')


if __name__ == '__main__':
    command.run(main, sys.argv[1:], 'convert_t7.py')
