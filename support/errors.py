"""The exceptions that reach the user as a single line (main.py and the tools print them, no traceback)."""


class GunnError(Exception):
    """A problem the user can fix: bad input, a missing file, a mismatching checkpoint."""


class RunStopped(GunnError):
    """A training run ended before its last epoch; the driver adds what its -save folder still holds."""


class OptionError(GunnError):
    """Options that cannot work together on this machine (found after parsing): a usage error, exit status 2."""
