"""Command-line plumbing of the tools: every user error is one 'error: ...' line and exit status 1."""
import argparse
import os
import sys

from support.errors import GunnError


class Parser(argparse.ArgumentParser):
    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message):
        # argparse would print the usage and exit with 2; the Lua tools exit with 1
        raise GunnError(f'{message} ({" ".join(self.format_usage().split())})')


def add_model_options(parser, metavar='MODEL'):
    parser.add_argument('model', metavar=metavar,
                        help='our checkpoint (.pt) or a Torch7 model of the original code (.t7)')
    parser.add_argument('-netType', help='network of the model file (default: stored in / guessed from it)')
    parser.add_argument('-dataset', help='dataset of the model file (default: stored in / guessed from it)')


def check_output(path):
    """Refuse before any work is done, rather than fail at the end when writing."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise GunnError(f'folder of the output file not found: {folder}')
    if os.path.isdir(path):
        raise GunnError(f'{path} is a folder, not an output file')


def run(main):
    try:
        main(sys.argv[1:])
    except GunnError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
