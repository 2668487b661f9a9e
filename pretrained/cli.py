"""Command-line plumbing of the tools: the model options, and the output check."""
import os

from support import command
from support.errors import GunnError

Parser = command.Parser


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

