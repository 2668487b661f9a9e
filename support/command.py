"""What every command (main.py, parity.py, the pretrained/ tools) does with errors and signals, so that they
all end alike: a usage or option error is one 'PROG: error: ...' line and exit status 2; any other error the
user can fix is one 'error: ...' line and 1; Ctrl-C prints 'interrupted' and exits with 130, SIGTERM (what
cluster schedulers send first) 'terminated' and 143, each followed by what the command still holds."""
import argparse
import os
import signal
import sys

from support.errors import GunnError, OptionError

USAGE, ERROR, INTERRUPTED, TERMINATED = 2, 1, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM as an exception: the command stops where Ctrl-C would stop it."""


def _terminate(signum, frame):
    raise Terminated


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage dump), exit status 2."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message):
        sys.stderr.write(f'{self.prog}: error: {message}\n')
        sys.exit(USAGE)


def run(main, argv, prog):
    """main(argv), with the exit statuses above. An interrupt's message (KeyboardInterrupt('...')) follows
    'interrupted; '."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return main(argv)
    except OptionError as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        sys.exit(USAGE)
    except GunnError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(ERROR)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(('terminated' if terminated else 'interrupted') + (f'; {e}' if str(e) else ''), file=sys.stderr)
        sys.exit(TERMINATED if terminated else INTERRUPTED)


def ignore_interrupts():
    """In helper processes (data loader workers), forked from the command's process with its handlers. Ctrl-C
    reaches the whole process group: the command's process handles it and stops the workers, which would each
    print a traceback of their own. SIGTERM (a scheduler's, to the group; or the command's own exit stopping
    its workers) ends a worker at once, quietly and with status 0: killed by the signal, the worker would make
    the data loader of the command's process raise an error of its own while the command stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
